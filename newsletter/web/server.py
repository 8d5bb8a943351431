"""The one-click unsubscribe endpoint (RFC 8058) that ``newsletter serve`` runs.

``POST /unsubscribe/<token>`` unsubscribes at once: no cookie, no login, idempotent, which
is what mail clients' one-click buttons send. Its form data (urlencoded or multipart, as
RFC 8058 allows) must hold ``List-Unsubscribe=One-Click``; a POST without it changes nothing
(a 400). ``GET`` shows a small page with a confirm button that sends exactly that (link
scanners follow GETs, so a GET alone never unsubscribes). A forged or malformed token gets a
400 page. A test copy's token (``send --test``) gets a page saying so, on GET and POST alike,
and changes nothing. Tokens never reach the log: request lines are logged with the token cut
off. Put TLS in front with a reverse proxy (see the README).
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.web import tokens

if TYPE_CHECKING:
    from newsletter.web.publish import ArchiveServer, Reply

log = logging.getLogger(__name__)

PREFIX = "/unsubscribe/"
MAX_BODY = 4096


def _page(title: str, body: str) -> bytes:
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#111}}
button{{font-size:1rem;padding:.6rem 1.2rem;cursor:pointer}}</style></head>
<body><h1>{html.escape(title)}</h1>{body}</body></html>
""".encode()


class UnsubscribeServer:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        state_path: Path,
        key: tokens.Keys,
        title: Callable[[], str],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        archive: ArchiveServer | None = None,
    ) -> None:
        self.archive = archive  # the public archive's pages and feeds (``web.publish``)
        self.state_path = state_path
        self.key = key
        self.title = title
        self.clock = clock
        server = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "papers-newsletter"

            def do_GET(self) -> None:
                server._get(self)

            def do_POST(self) -> None:
                server._post(self)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http %s", _redact(format % args))

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, name="newsletter-http", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(len(body)))
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Referrer-Policy", "no-referrer")
        handler.end_headers()
        handler.wfile.write(body)

    def _token(self, handler: BaseHTTPRequestHandler) -> str | None:
        path = handler.path.split("?", 1)[0]
        return path[len(PREFIX) :] if path.startswith(PREFIX) else None

    def _address(self, handler: BaseHTTPRequestHandler) -> tuple[str, str | None] | None:
        """(the address, its subscriber id) an unsubscribe token names (an old link names
        the address only), or None when it is not a genuine one."""
        token = self._token(handler)
        if token is None:
            return None
        claim = tokens.read_token(self.key, token, "unsubscribe", self.clock())
        if claim is not None:
            with SqliteStore(self.state_path) as store:
                row = store.subscriber_by_id(claim.subscriber_id)
            return None if row is None else (row.email, row.id)
        address = tokens.read_legacy_token(self.key, token)
        return None if address is None else (address, None)

    def _test_address(self, handler: BaseHTTPRequestHandler) -> str | None:
        """The address a test copy's token names ("" when the state has no such row: a test
        send of a subscriber's first digest), or None when it is not a valid test token."""
        token = self._token(handler)
        if token is None:
            return None
        claim = tokens.read_token(self.key, token, "test", self.clock())
        if claim is not None:
            with SqliteStore(self.state_path, read_only=True) as store:
                row = store.subscriber_by_id(claim.subscriber_id)
            return "" if row is None else row.email
        return tokens.read_legacy_token(self.key, token, test=True)

    def _test_page(self, handler: BaseHTTPRequestHandler, address: str) -> None:
        title = self.title()
        whose = f" for <strong>{html.escape(address)}</strong>" if address else ""
        who = html.escape(address) if address else "the subscriber"
        body = (
            f"<p>This link comes from a <strong>test copy</strong> of {html.escape(title)} "
            f"(<code>newsletter send --test</code>) of the digest{whose}.</p>"
            f"<p>Nothing was changed: {who} stays subscribed. In the real "
            "email this link unsubscribes its recipient.</p>"
        )
        self._reply(handler, 200, _page("Test copy: nothing changed", body))

    def _send(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(reply.body)))
        handler.end_headers()
        handler.wfile.write(reply.body)

    def _get(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.path == "/healthz":
            self._reply(handler, 200, b"ok\n")
            return
        path = handler.path.split("?", 1)[0]
        if self.archive is not None and self.archive.serves(path):
            headers = {name.lower(): value for name, value in handler.headers.items()}
            self._send(handler, self.archive.get(path, headers))
            return
        if not handler.path.startswith(PREFIX):
            self._reply(handler, 404, _page("Not found", "<p>There is nothing here.</p>"))
            return
        found = self._address(handler)
        if found is None:
            test = self._test_address(handler)
            if test is not None:
                self._test_page(handler, test)
                return
            self._reply(handler, 400, _invalid())
            return
        address = found[0]
        title = self.title()
        body = (
            f"<p>Stop sending {html.escape(title)} to <strong>{html.escape(address)}</strong>?</p>"
            f'<form method="post" action="{html.escape(handler.path)}">'
            '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
            '<button type="submit">Unsubscribe</button></form>'
        )
        self._reply(handler, 200, _page(f"Unsubscribe from {title}", body))

    def _post(self, handler: BaseHTTPRequestHandler) -> None:
        length = handler.headers.get("Content-Length") or "0"
        form = b""
        if length.isdigit() and 0 < int(length) <= MAX_BODY:
            form = handler.rfile.read(int(length))
        found = self._address(handler) if handler.path.startswith(PREFIX) else None
        if found is None:
            test = self._test_address(handler)
            if test is not None:
                self._test_page(handler, test)  # a test copy never unsubscribes anyone
                return
            self._reply(handler, 400, _invalid())
            return
        if not one_click(handler.headers.get("Content-Type") or "", form):
            log.info("unsubscribe.refused reason=not_one_click")
            self._reply(handler, 400, _not_one_click())
            return
        address, subscriber_id = found
        # A connection per request: the server's threads never share one.
        with SqliteStore(self.state_path) as store:
            row = (
                store.subscriber_by_id(subscriber_id)
                if subscriber_id
                else store.subscriber_by_email(address)
            )
            if row is None and not store.is_removed(address):
                # an old link of the file's subscriber, before their first run
                store.add_subscriber(
                    SubscriberRecord(
                        email=address,
                        topics=(),
                        status="unsubscribed",
                        source="config",
                        reason="one-click unsubscribe",
                    ),
                    now=self.clock(),
                )
                log.info("unsubscribe.done subscriber=%s", address)
            elif row is not None and row.status != "unsubscribed":
                store.set_subscriber_status(
                    row.id, "unsubscribed", "one-click unsubscribe", self.clock()
                )
                log.info("unsubscribe.done subscriber=%s", address)
        title = self.title()
        body = f"<p><strong>{html.escape(address)}</strong> will get no more emails from {html.escape(title)}.</p>"
        self._reply(handler, 200, _page("You are unsubscribed", body))


def _redact(line: str) -> str:
    """A request line without its token: tokens never reach the log."""
    return re.sub(r"(/unsubscribe/)[^\s\"?]+", r"\1<token>", line)


def one_click(content_type: str, body: bytes) -> bool:
    """Whether form data holds ``List-Unsubscribe=One-Click`` (RFC 8058: urlencoded or
    multipart/form-data, the two encodings a form is sent in)."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        form = email.message_from_bytes(head + body, policy=email.policy.HTTP)
        return any(
            part.get_param("name", header="content-disposition") == "List-Unsubscribe"
            and part.get_payload(decode=True) == b"One-Click"
            for part in form.walk()
            if not part.is_multipart()
        )
    if kind not in ("application/x-www-form-urlencoded", ""):
        return False
    fields = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return "One-Click" in fields.get("List-Unsubscribe", [])


def _not_one_click() -> bytes:
    return _page(
        "Nothing was changed",
        "<p>This request did not say <code>List-Unsubscribe=One-Click</code>. To unsubscribe, "
        "open the unsubscribe link of a recent email and press its button.</p>",
    )


def _invalid() -> bytes:
    return _page(
        "This unsubscribe link is not valid",
        "<p>The link is incomplete or was changed. Use the unsubscribe link of a recent email, "
        "or reply to it and ask to be removed.</p>",
    )
