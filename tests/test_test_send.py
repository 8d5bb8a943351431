"""`send --test`: a real preview of the day's digest that cannot hurt the subscriber.

A real SMTP server (aiosmtpd), a real SQLite file, and the real unsubscribe endpoint on
127.0.0.1 answering the links of the test copy.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.store import SqliteStore
from newsletter.web import tokens
from tests.conftest import held, ids_in
from tests.smtpserver import Received, SmtpServer
from tests.test_preview import body
from tests.test_send import make_config, send
from tests.webapp import minimal_config, running

KEY = "test-signing-key-of-at-least-32-bytes"
READER = "reader001@example.org"
OPERATOR = "operator@example.org"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", KEY)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[str]:
    """The one-click endpoint that `serve` runs, on the test's state file."""
    with running(minimal_config(tmp_path / "state.db", "T"), KEY.encode()) as root:
        yield root


def parse(received: Received) -> EmailMessage:
    msg = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def request(url: str, method: str) -> tuple[int, str]:
    data = b"List-Unsubscribe=One-Click" if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_test_copy_cannot_unsubscribe_the_subscriber(tmp_path: Path, endpoint: str) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=3)
        result = send(cfg, "--subscriber", READER, "--test", OPERATOR)
        assert result.exit_code == 0, result.output
        assert [m.rcpt_tos for m in server.received] == [[OPERATOR]]
    msg = parse(server.received[0])
    assert msg["To"] == READER  # the subscriber's digest, only the envelope differs

    # Both List-Unsubscribe targets carry a test token, and so do both links in the body.
    targets = re.findall(r"<([^>]+)>", str(msg["List-Unsubscribe"]))
    web, mailto = targets
    path = urllib.parse.urlsplit(web).path
    token = path.removeprefix("/unsubscribe/")
    assert tokens.read_token(KEY.encode(), token, "test", dt.datetime.now(dt.UTC)) is not None
    assert tokens.read_token(KEY.encode(), token, "unsubscribe", dt.datetime.now(dt.UTC)) is None
    subject = urllib.parse.parse_qs(urllib.parse.urlsplit(mailto).query)["subject"][0]
    assert subject == f"test unsubscribe {token}"
    for text in (body(msg, "html"), body(msg, "plain")):
        links = re.findall(r"/(unsubscribe|manage)/([A-Za-z0-9._-]+)", text)
        assert {kind for kind, _ in links} == {"unsubscribe", "manage"}
        assert {found for _, found in links} == {token}

    # The link's page says it is a test, on GET and on the one-click POST, and changes nothing.
    for method in ("GET", "POST"):
        status, page = request(endpoint + path, method)
        assert status == 200, page
        assert "test copy" in page and "Nothing was changed" in page
    assert not (tmp_path / "state.db").exists()  # nothing recorded, not even a state file

    # Relabelled as a real token (the purpose byte changed), the test token is a forgery.
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[1:2] = b"u"
    real = "/unsubscribe/" + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    assert request(endpoint + real, "POST")[0] == 400
    with SqliteStore(tmp_path / "state.db") as store:
        assert held(store) == {}


def test_after_the_real_send_a_test_sends_the_digest_they_got(tmp_path: Path) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, n=3)
        before = send(cfg, "--subscriber", READER, "--test", OPERATOR)
        assert before.exit_code == 0, before.output
        assert (
            f"test: sent {OPERATOR} the digest {READER} would get for 2026-05-08, selected now"
            in before.output
        )
        assert send(cfg).exit_code == 0  # the day's real send
        state = (tmp_path / "state.db").read_bytes()

        after = send(cfg, "--subscriber", READER, "--test", OPERATOR)
        assert after.exit_code == 0, after.output
        assert (
            f"test: sent {OPERATOR} the digest {READER} got for 2026-05-08, "
            "as the day's run froze it (status sent)"
        ) in after.output
        assert (tmp_path / "state.db").read_bytes() == state  # records nothing
    to_operator = [parse(m) for m in server.received if m.rcpt_tos == [OPERATOR]]
    to_reader = [parse(m) for m in server.received if m.rcpt_tos == [READER]]
    assert len(to_operator) == 2 and len(to_reader) == 1
    got = ids_in(body(to_reader[0], "html"))
    assert got and ids_in(body(to_operator[1], "html")) == got
    assert ids_in(body(to_operator[0], "html")) == got  # the same day, the same papers
    test_token = str(to_operator[1]["List-Unsubscribe"]).split("/unsubscribe/")[1].split(">")[0]
    assert tokens.read_token(KEY.encode(), test_token, "test", dt.datetime.now(dt.UTC)) is not None
