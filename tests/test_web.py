"""The one-click unsubscribe endpoint on a real HTTP server (127.0.0.1) and a real SQLite file."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.web import tokens
from newsletter.web.app import MAX_BODY
from tests.conftest import held
from tests.webapp import minimal_config, running

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
    with SqliteStore(state) as store:
        ada = store.add_subscriber(SubscriberRecord(ADA, ("t",), status="active"), now=NOW)
    with running(minimal_config(state), KEY) as root:
        yield f"{root}/unsubscribe/{tokens.make_token(KEY, 'unsubscribe', ada.id)}", state


NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


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
        return held(store)


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


def test_a_link_in_mail_sent_before_the_upgrade_still_unsubscribes(
    server: tuple[str, Path],
) -> None:
    """Mail already sent carries the old token (the address in base64 and its HMAC)."""
    url, state = server
    old = url.rsplit("/", 1)[0] + "/" + tokens.legacy_token(KEY, "ADA@example.org")
    assert post(old, b"List-Unsubscribe=One-Click", FORM)[0] == 200
    assert states(state) == {ADA: ("unsubscribed", "one-click unsubscribe")}
    # One of the file's subscribers who never had a row: the unsubscribe sticks all the same.
    bob = url.rsplit("/", 1)[0] + "/" + tokens.legacy_token(KEY, "bob@example.org")
    assert post(bob, b"List-Unsubscribe=One-Click", FORM)[0] == 200
    assert states(state)["bob@example.org"] == ("unsubscribed", "one-click unsubscribe")


def test_a_new_link_names_no_address(server: tuple[str, Path]) -> None:
    url, _ = server
    assert "ada" not in url.rsplit("/", 1)[1].lower()
    assert "YWRh" not in url  # "ada" in base64
