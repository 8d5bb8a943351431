"""The one-click unsubscribe endpoint on a real HTTP server (127.0.0.1) and a real SQLite file."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.store import SqliteStore
from newsletter.web import tokens
from newsletter.web.server import MAX_BODY, UnsubscribeServer

KEY = b"web-test-signing-key-0123456789abcdef"
ADA = "ada@example.org"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=XyZ"


def multipart(*fields: tuple[str, str]) -> bytes:
    parts = [
        f'--XyZ\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields
    ]
    return ("".join(parts) + "--XyZ--\r\n").encode()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    state = tmp_path / "state.db"
    SqliteStore(state).close()
    web = UnsubscribeServer(
        "127.0.0.1", 0, state_path=state, key=KEY, title=lambda: "Trending Papers"
    )
    web.start()
    host, port = web.address
    try:
        yield f"http://{host}:{port}/unsubscribe/{tokens.make_token(KEY, ADA)}", state
    finally:
        web.stop()


def post(url: str, body: bytes, content_type: str | None) -> tuple[int, str]:
    headers = {"Content-Type": content_type} if content_type else {}
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def states(state: Path) -> dict[str, tuple[str, str]]:
    with SqliteStore(state, read_only=True) as store:
        return store.states()


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b"List-Unsubscribe=One-Click", FORM, 200),
        (b"List-Unsubscribe=One-Click", None, 200),
        (b"csrf=x&List-Unsubscribe=One-Click", f"{FORM}; charset=utf-8", 200),
        (multipart(("List-Unsubscribe", "One-Click")), MULTIPART, 200),
        (multipart(("a", "b"), ("List-Unsubscribe", "One-Click")), MULTIPART, 200),
        (b"", FORM, 400),
        (b"", None, 400),
        (b"List-Unsubscribe=Yes", FORM, 400),
        (b"List-Unsubscribe=one-click", FORM, 400),
        (b"One-Click", FORM, 400),
        (b"List-Unsubscribe=One-Click", "text/plain", 400),
        (b'{"List-Unsubscribe": "One-Click"}', "application/json", 400),
        (multipart(("List-Unsubscribe", "Yes")), MULTIPART, 400),
        (multipart(("Other", "One-Click")), MULTIPART, 400),
        (multipart(("List-Unsubscribe", "One-Click")), "multipart/form-data; boundary=Other", 400),
        (b"List-Unsubscribe=One-Click&" + b"x" * MAX_BODY, FORM, 400),
    ],
)
def test_one_click_needs_its_form_field(
    server: tuple[str, Path], body: bytes, content_type: str | None, status: int
) -> None:
    """RFC 8058: the POST's form data says List-Unsubscribe=One-Click, or nothing changes."""
    url, state = server
    got, page = post(url, body, content_type)
    assert got == status, page
    if status == 200:
        assert states(state) == {ADA: ("unsubscribed", "one-click unsubscribe")}
    else:
        assert states(state) == {}
        assert "Nothing was changed" in page


def test_the_confirm_page_sends_the_one_click_field(server: tuple[str, Path]) -> None:
    url, state = server
    with urllib.request.urlopen(url, timeout=30) as r:
        page = r.read().decode()
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in page
    assert states(state) == {}  # a GET only asks
