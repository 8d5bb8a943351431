"""What every response and connection gets, whatever the page: security headers, an access
line without tokens, the client's address behind trusted proxies, and a deadline for a
request to arrive.

uvicorn has no timeout for receiving a request: its keep-alive timer restarts on every byte,
so a client that sends one byte a second holds a connection forever (uvicorn issue #157).
``deadline_protocol`` wraps its HTTP protocol: from the connection (or the previous
response) a request's headers and body must be in within ``seconds``, or the connection is
closed. Idle and half-sent connections then cost a file descriptor for a few seconds each,
and ``raise_fd_limit`` makes room for thousands of them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import resource
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("newsletter.web.server")

# Pages can load the one stylesheet and nothing else: no script at all, no inline style
# (an injected style attribute or <style> could otherwise restyle a page to trick a reader,
# or leak a token through attribute selectors), no framing, forms post only here.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),  # tokens travel in URLs
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

_TOKEN_PATH = re.compile(r"^(/(?:unsubscribe|confirm|manage)/)[^/]*")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def redact(path: str) -> str:
    """A path without its token: tokens never reach the log."""
    return _TOKEN_PATH.sub(r"\1<token>", path)


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    """The visitor's address: the peer's, or behind a trusted proxy the last address in
    X-Forwarded-For that is not a trusted proxy (the ones before it anyone could write)."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _trusted(peer, trusted):
        return str(peer)
    forwarded: list[str] = []
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded += [a.strip() for a in value.decode("latin-1").split(",")]
    for hop in reversed(forwarded):
        if not _trusted(hop, trusted):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return str(peer)  # a garbled header: the proxy is who we know
    return str(peer)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


class Guard:
    """Security headers on every response, Cache-Control (no-store unless the response says
    otherwise or is a cacheable document with an ETag), one access line per request with the token cut off, and a plain 500 page
    instead of a traceback."""

    def __init__(self, app: ASGIApp, error_page: bytes) -> None:
        self.app = app
        self.error_page = error_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"server"]
                names = {k.lower() for k, _ in headers}
                headers += [h for h in HEADERS if h[0] not in names]
                if b"cache-control" not in names and b"etag" not in names:
                    # Pages are no-store (tokens, form tokens); the archive's documents,
                    # which carry an ETag, stay cacheable.
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            log.exception("http.error method=%s path=%s", scope["method"], redact(scope["path"]))
            if status == 0:
                await guarded_send(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/html; charset=utf-8")],
                    }
                )
                await guarded_send({"type": "http.response.body", "body": self.error_page})
            status = status or 500
        log.debug("http %s %s %d", scope["method"], redact(scope["path"]), status)


def deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a deadline for each request to arrive in full."""

    class DeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _after: Any = None  # the cycle (request) that was complete when the clock started

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._arrived()

        def on_response_complete(self) -> None:
            self._arm()  # the next request on this connection gets its own deadline
            super().on_response_complete()
            self._arrived()  # a pipelined one may be in already

        def _arm(self) -> None:
            self._disarm()
            self._after = self.cycle
            self._deadline = self.loop.call_later(seconds, self._expired)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _arrived(self) -> None:
            cycle = self.cycle
            if cycle is not None and cycle is not self._after and not cycle.more_body:
                self._disarm()

        def _expired(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                log.debug("http.deadline client=%s seconds=%g", (self.client or ("?",))[0], seconds)
                self.transport.close()

    return DeadlineProtocol


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (each connection holds one);
    the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("serve.fd_limit soft=%d hard=%d: %s", soft, hard, e)
    return int(soft)
