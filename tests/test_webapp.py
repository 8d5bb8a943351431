"""The web application of `serve` on a real socket: security headers on every response, the
request deadline against slow and idle clients, the operator's templates, client addresses
behind trusted proxies."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.store import SqliteStore
from newsletter.web import protect, tokens
from tests.webapp import minimal_config, running

KEY = b"webapp-test-signing-key-0123456789abcdef"
ADA = "ada@example.org"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("webapp") / "state.db"
    SqliteStore(state).close()
    cfg = minimal_config(state, extra="server:\n  request_timeout: 2\n")
    with running(cfg, KEY) as url:
        yield url


def fetch(url: str, data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def test_every_response_carries_the_security_headers(root: str) -> None:
    token = tokens.legacy_token(KEY, ADA)
    answers = {
        "healthz": fetch(f"{root}/healthz"),
        "unsubscribe": fetch(f"{root}/unsubscribe/{token}"),
        "forged": fetch(f"{root}/unsubscribe/{token}x"),
        "not one-click": fetch(f"{root}/unsubscribe/{token}", b"x=1"),
        "missing": fetch(f"{root}/no/such/page"),
        "stylesheet": fetch(f"{root}/static/site.css"),
    }
    assert {k: v[0] for k, v in answers.items()} == {
        "healthz": 200,
        "unsubscribe": 200,
        "forged": 400,
        "not one-click": 400,
        "missing": 404,
        "stylesheet": 200,
    }
    for what, (_, headers, _) in answers.items():
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, what
        assert "unsafe-inline" not in csp and "script-src" not in csp, what
        assert headers["referrer-policy"] == "no-referrer", what
        assert headers["x-content-type-options"] == "nosniff", what
        assert "server" not in headers, what
        if what != "stylesheet":
            assert headers["cache-control"] == "no-store", what
            assert headers["content-type"].startswith(("text/html", "text/plain")), what
    assert answers["stylesheet"][1]["content-type"].startswith("text/css")
    assert answers["healthz"][2] == "ok\n"


def test_pages_have_no_script_and_no_inline_style(root: str) -> None:
    _, _, page = fetch(f"{root}/unsubscribe/{tokens.legacy_token(KEY, ADA)}")
    assert "<script" not in page and "style=" not in page and "<style" not in page
    assert '<link rel="stylesheet" href="/static/site.css">' in page
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page


def test_a_request_must_arrive_before_the_deadline(root: str) -> None:
    """One byte a second keeps uvicorn's keep-alive timer alive forever; the deadline does not
    care (request_timeout: 2 here): the connection is closed while the client still drips."""
    host, port = root.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(0.2)
        closed = False
        deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
        while time.monotonic() < deadline:
            try:
                s.sendall(b"X")
                if s.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except OSError:  # reset or broken pipe: closed too
                closed = True
                break
        assert closed, "a client sending a byte at a time held the connection for a minute"


def test_a_thousand_idle_or_half_sent_connections_do_not_block_a_real_request(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.db"
    SqliteStore(state).close()
    with running(minimal_config(state), KEY) as url:  # request_timeout: the default
        limit = protect.raise_fd_limit()
        assert limit >= 2200, f"the hard limit on open files is too low for this test ({limit})"
        host, port = url.removeprefix("http://").split(":")
        held: list[socket.socket] = []
        try:
            for i in range(1000):
                s = socket.create_connection((host, int(port)), timeout=30)
                if i % 2:
                    s.sendall(b"POST /unsubscribe/abc HTTP/1.1\r\nHost: x\r\nContent-Len")
                held.append(s)
            started = time.monotonic()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            assert (answer.status, answer.read()) == (200, b"ok\n")
            conn.close()
            print(
                f"\n1,000 held connections (500 idle, 500 half-sent): /healthz answered in "
                f"{(time.monotonic() - started) * 1000:.0f} ms; open-file limit {limit}"
            )
        finally:
            for s in held:
                s.close()


def test_an_operator_overrides_a_page_and_the_stylesheet(tmp_path: Path) -> None:
    (tmp_path / "mine" / "web").mkdir(parents=True)
    (tmp_path / "mine" / "web" / "site.css").write_text("body { color: teal; }\n")
    (tmp_path / "mine" / "web" / "message.html.j2").write_text(
        "{% extends 'base.html.j2' %}{% block content %}<p>Ours: {{ lines|join(' ') }}</p>"
        "{% endblock %}"
    )
    cfg = minimal_config(tmp_path / "state.db", extra="")
    cfg_path = cfg.path
    cfg_path.write_text(
        cfg_path.read_text().replace("newsletter:\n", "newsletter:\n  templates_dir: mine\n")
    )
    from newsletter import config

    with running(config.load(cfg_path), KEY) as url:
        status, _, page = fetch(f"{url}/nothing-here")
        css = fetch(f"{url}/static/site.css")[2]
    assert status == 404 and "<p>Ours: There is nothing here.</p>" in page
    assert css == "body { color: teal; }\n"


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        ("203.0.113.9", None, [], "203.0.113.9"),
        ("203.0.113.9", "198.51.100.1", [], "203.0.113.9"),  # nobody trusted: header ignored
        ("127.0.0.1", "198.51.100.1", ["127.0.0.1"], "198.51.100.1"),
        ("127.0.0.1", "6.6.6.6, 198.51.100.1", ["127.0.0.1"], "198.51.100.1"),  # forged first
        ("10.0.0.2", "198.51.100.1, 10.0.0.3", ["10.0.0.0/8"], "198.51.100.1"),
        ("203.0.113.9", "198.51.100.1", ["127.0.0.1"], "203.0.113.9"),  # not from the proxy
        ("127.0.0.1", "garbage", ["127.0.0.1"], "127.0.0.1"),
        ("127.0.0.1", "10.0.0.1", ["127.0.0.1", "10.0.0.0/8"], "127.0.0.1"),  # all trusted
    ],
)
def test_the_client_address_behind_trusted_proxies(
    peer: str, forwarded: str | None, trusted: list[str], client: str
) -> None:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    scope = {"type": "http", "client": (peer, 5000), "headers": headers}
    networks = [ipaddress.ip_network(t) for t in trusted]
    assert protect.client_address(scope, networks) == client


def test_the_token_part_of_a_path_is_redacted() -> None:
    assert protect.redact("/unsubscribe/abc.def") == "/unsubscribe/<token>"
    assert protect.redact("/manage/abc.def") == "/manage/<token>"
    assert protect.redact("/confirm/abc") == "/confirm/<token>"
    assert protect.redact("/healthz") == "/healthz"
