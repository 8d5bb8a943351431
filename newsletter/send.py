"""Delivery: the ``Sender`` protocol, the SMTP sender and the preview sender.

``SmtpSender`` delivers over a small pool of long-lived aiosmtplib connections and reports
each message's outcome as it happens, so the caller can keep a ledger. ``PreviewSender``
writes one ``.eml`` (the complete MIME message) and one ``.html`` per recipient plus an
``index.html`` gallery; it never sends and never records a delivery.
"""

from __future__ import annotations

import asyncio
import html
import ipaddress
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol
from urllib.parse import quote

import aiosmtplib

from newsletter.errors import SendError
from newsletter.message import Outgoing

log = logging.getLogger(__name__)

Status = Literal["sent", "failed", "unknown", "pending"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one message. ``pending``: not handed over, try again in a later run."""

    status: Status
    detail: str = ""
    suppress: bool = False  # the address does not exist: never mail it again


class Events(Protocol):
    def started(self, message: Outgoing) -> None:
        """Called just before the message goes to the server."""

    def finished(self, message: Outgoing, outcome: Outcome) -> None: ...


class Sender(Protocol):
    #: Whether delivering means a subscriber received it (so it is recorded as sent).
    records_deliveries: bool
    #: Whether it reads ``message.email.html`` / ``.text``; if not, they are not carried
    #: back from the workers that compose (``build.compose_all(bodies=False)``) and are "".
    needs_bodies: bool

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        """Deliver every message, reporting each through ``events``; raise SendAborted to stop."""

    def close(self) -> None: ...


class SendAborted(SendError):
    """The server refuses us as a sender (authentication, policy): stop instead of burning the list."""


@dataclass(frozen=True, slots=True)
class _Entry:
    recipient: str
    subject: str
    papers: int
    left_out: int
    html_bytes: int
    html_name: str
    eml_name: str


class PreviewSender:
    records_deliveries = False
    needs_bodies = True  # writes the HTML body as a page of its own

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        for message in messages:
            events.started(message)
            self.deliver(message)
            events.finished(message, Outcome("sent"))

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.entries: list[_Entry] = []
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SendError(
                str(out_dir), f"cannot create the preview folder: {e.strerror or e}"
            ) from e

    def deliver(self, message: Outgoing) -> None:
        if not message.email.html:  # composed with bodies=False: never write an empty page
            raise SendError(message.recipient, "the message came without its HTML body")
        stem = f"{len(self.entries) + 1:03d}-{_slug(message.recipient)}"
        try:
            (self.out_dir / f"{stem}.eml").write_bytes(message.data)
            (self.out_dir / f"{stem}.html").write_text(message.email.html, encoding="utf-8")
        except OSError as e:
            raise SendError(
                message.recipient, f"cannot write {self.out_dir}: {e.strerror or e}"
            ) from e
        self.entries.append(
            _Entry(
                recipient=message.recipient,
                subject=message.email.subject,
                papers=len(message.email.paper_ids),
                left_out=len(message.email.dropped_ids),
                html_bytes=len(message.email.html.encode("utf-8")),
                html_name=f"{stem}.html",
                eml_name=f"{stem}.eml",
            )
        )

    def close(self) -> None:
        self.write_index()

    def write_index(self, not_written: Iterable[tuple[str, str]] = ()) -> None:
        """The gallery: every email, then each subscriber who got none and why (``not_written``:
        (address, reason) pairs, e.g. "nothing new", "unsubscribed")."""
        try:
            self.index_path.write_text(_index(self.entries, list(not_written)), encoding="utf-8")
        except OSError as e:
            raise SendError(
                str(self.index_path), f"cannot write the gallery: {e.strerror or e}"
            ) from e

    @property
    def index_path(self) -> Path:
        return self.out_dir / "index.html"


def _slug(address: str) -> str:
    return re.sub(r"[^a-z0-9@._-]+", "_", address.casefold())[:80]


# On a narrow screen (a phone) each row becomes a small card: no sideways scrolling.
_GALLERY_CSS = """\
body{font-family:system-ui,sans-serif;margin:2rem;color:#111}
table{border-collapse:collapse;width:100%}
td,th{padding:.4rem .8rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
.n{text-align:right;white-space:nowrap}
.why{color:#555}
@media (max-width:40rem){
body{margin:1rem}
thead{display:none}
table,tbody,tr,td{display:block}
tr{border-bottom:1px solid #ddd;padding:.5rem 0}
td{border:0;padding:.1rem 0}
.n{text-align:left}
td[data-label]::before{content:attr(data-label) ": ";color:#555}
td:first-child{font-weight:600}
}"""


def _index(entries: list[_Entry], not_written: list[tuple[str, str]]) -> str:
    """One row per email (the subject opens it, .eml the whole message), then one per
    subscriber without an email, saying why."""

    def row(e: _Entry) -> str:
        papers = f"{e.papers}" + (f" ({e.left_out} left out)" if e.left_out else "")
        return (
            f"<tr><td>{html.escape(e.recipient)}</td>"
            f'<td><a href="{html.escape(quote(e.html_name))}" target="_blank">'
            f"{html.escape(e.subject)}</a></td>"
            f'<td class="n" data-label="Papers">{html.escape(papers)}</td>'
            f'<td class="n" data-label="HTML size">{e.html_bytes / 1000:.1f} KB</td>'
            f'<td><a href="{html.escape(quote(e.eml_name))}">.eml</a></td></tr>'
        )

    def skipped(address: str, why: str) -> str:
        return (
            f'<tr class="none"><td>{html.escape(address)}</td>'
            f'<td colspan="4" class="why">no email: {html.escape(why)}</td></tr>'
        )

    rows = "\n".join([*(row(e) for e in entries), *(skipped(a, w) for a, w in not_written)])
    empty = "" if entries else "<p>No digests: no subscriber gets an email this time.</p>"
    n, others = len(entries), len(not_written)
    counts = f"{n} email{'' if n == 1 else 's'}" + (
        f"; {others} subscriber{'' if others == 1 else 's'} without one" if others else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Newsletter preview</title>
<style>{_GALLERY_CSS}</style></head>
<body><h1>Newsletter preview</h1><p>{counts}; nothing was sent.
Click a subject to open the email.</p>{empty}
<table><thead><tr><th>Recipient</th><th>Subject</th><th>Papers</th><th>HTML size</th><th>Message</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""


# -- SMTP -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: Literal["starttls", "tls", "none"]
    username: str | None = None
    password: str | None = None
    connections: int = 4
    rate_per_second: float | None = None
    timeout: float = 30.0
    max_retries: int = 3
    retry_backoff: float = 2.0
    ca_file: str | None = None

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RateLimiter:
    """At most ``rate`` message starts per second across all connections."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class _Retry(Exception):
    """A temporary failure: try the message again on a (possibly new) connection."""

    def __init__(self, detail: str, reconnect: bool) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reconnect = reconnect


def _reply(e: aiosmtplib.SMTPResponseException) -> str:
    return f"{e.code} {e.message}".strip()


def _is_policy(e: aiosmtplib.SMTPResponseException) -> bool:
    """5.7.x: the server refuses *us* (policy, authentication), not this recipient."""
    return e.code >= 500 and e.message.lstrip().startswith("5.7.")


class SmtpSender:
    """Delivers over ``connections`` long-lived SMTP connections with a shared rate limit.

    Reply handling: 4xx is retried with backoff (a new connection after 421 or a drop) up
    to ``max_retries`` times, then ``failed``; 550/551/553 at RCPT fail the message and
    suppress the address; a 5.7.x reply or failed AUTH stops the run (SendAborted); a drop
    or timeout after the message body was written is ``unknown`` (the server may have it).
    """

    needs_bodies = False  # sends ``message.data``; the ledger reads ``email.paper_ids``

    def __init__(
        self,
        settings: SmtpSettings,
        *,
        records_deliveries: bool = True,
        redirect_to: str | None = None,
    ) -> None:
        self.settings = settings
        self.records_deliveries = records_deliveries
        self.redirect_to = redirect_to  # --test: every message goes to this address instead
        self._stop = threading.Event()

    def close(self) -> None:
        pass

    def stop(self) -> None:
        """Finish the messages in flight, start no more (SIGTERM); safe from any thread."""
        self._stop.set()

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        asyncio.run(self._send_all(iter(messages), events))

    def probe(self) -> None:
        """Open one connection as a send would (greeting, STARTTLS or TLS, AUTH), then QUIT
        without sending (``check --connect``). Raises SendAborted when the server refuses us
        (login, TLS, a certificate: configuration), SendError when it cannot be reached
        (refused, timeout, a 4xx greeting)."""

        async def probe() -> None:
            await self._quit(await self._connect())

        try:
            asyncio.run(probe())
        except _Retry as e:
            tls = _tls_failure(e)
            if tls is not None:  # not an outage: the settings (or the CA) do not fit the server
                raise SendAborted(self.settings.where, f"{tls}: {e.detail}") from e
            raise SendError(self.settings.where, e.detail) from e

    async def _send_all(self, messages: Iterator[Outgoing], events: Events) -> None:
        n = max(1, self.settings.connections)
        queue: asyncio.Queue[Outgoing | None] = asyncio.Queue(maxsize=2 * n)
        limiter = _RateLimiter(self.settings.rate_per_second)
        stop = asyncio.Event()
        aborted: list[SendAborted] = []

        async def produce() -> None:
            try:
                for message in messages:  # built lazily: one digest in memory per slot
                    if stop.is_set() or self._stop.is_set():
                        break
                    await queue.put(message)
                    await asyncio.sleep(0)
            finally:
                for _ in range(n):
                    await queue.put(None)

        async def work(worker: int) -> None:
            conn: aiosmtplib.SMTP | None = None
            try:
                while (message := await queue.get()) is not None:
                    if stop.is_set() or self._stop.is_set():
                        continue  # drain: not started, stays pending
                    try:
                        conn, outcome = await self._deliver(conn, message, limiter, events)
                    except SendAborted as e:
                        aborted.append(e)
                        stop.set()
                        events.finished(message, Outcome("pending", str(e)))
                        continue
                    events.finished(message, outcome)
            finally:
                if conn is not None:
                    await self._quit(conn)

        await asyncio.gather(produce(), *(work(i) for i in range(n)))
        if aborted:
            raise aborted[0]

    async def _connect(self) -> aiosmtplib.SMTP:
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file) if s.security != "none" else None
        conn = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",  # required when asked: no silent downgrade
            tls_context=context,
        )
        try:
            await conn.connect()
            if s.username:
                await conn.login(s.username, s.password or "")
        except aiosmtplib.SMTPAuthenticationError as e:
            conn.close()
            raise SendAborted(s.where, f"SMTP AUTH as {s.username!r} refused: {_reply(e)}") from e
        except aiosmtplib.SMTPResponseException as e:
            conn.close()
            if e.code >= 500 or _is_policy(e):
                raise SendAborted(s.where, f"SMTP server refused the session: {_reply(e)}") from e
            raise _Retry(_reply(e), reconnect=True) from e
        except aiosmtplib.SMTPException as e:
            conn.close()
            if "STARTTLS" in str(e) or isinstance(e, aiosmtplib.SMTPNotSupported):
                raise SendAborted(
                    s.where, f"STARTTLS is required (smtp.security) but failed: {e}"
                ) from e
            raise _Retry(f"cannot connect to {s.where}: {e}", reconnect=True) from e
        except (OSError, ssl.SSLError) as e:
            conn.close()
            raise _Retry(f"cannot connect to {s.where}: {e}", reconnect=True) from e
        return conn

    async def _quit(self, conn: aiosmtplib.SMTP) -> None:
        try:
            await conn.quit(timeout=5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            conn.close()

    async def _deliver(
        self, conn: aiosmtplib.SMTP | None, message: Outgoing, limiter: _RateLimiter, events: Events
    ) -> tuple[aiosmtplib.SMTP | None, Outcome]:
        s = self.settings
        attempt = 0
        while True:
            try:
                if conn is None or not conn.is_connected:
                    conn = await self._connect()
                await limiter.wait()
                events.started(message)
                return conn, await self._transaction(conn, message)
            except _Retry as e:
                if e.reconnect and conn is not None:
                    conn.close()
                    conn = None
                attempt += 1
                if attempt > s.max_retries:
                    return conn, Outcome("failed", e.detail)
                delay = min(60.0, s.retry_backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                log.info(
                    "smtp.retry to=%s reply=%r attempt=%d delay=%.1f",
                    message.recipient,
                    e.detail,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)

    async def _transaction(self, conn: aiosmtplib.SMTP, message: Outgoing) -> Outcome:
        """One MAIL/RCPT/DATA exchange. Raises _Retry for temporary failures."""
        recipient = self.redirect_to or message.recipient
        sender = message.envelope_from
        written = False
        try:
            try:
                await conn.mail(sender)
            except aiosmtplib.SMTPSenderRefused as e:
                if e.code >= 500:
                    raise SendAborted(
                        self.settings.where, f"MAIL FROM:<{sender}> refused: {_reply(e)}"
                    ) from e
                raise
            try:
                await conn.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as e:
                if _is_policy(e):
                    raise SendAborted(
                        self.settings.where, f"RCPT TO:<{recipient}> refused by policy: {_reply(e)}"
                    ) from e
                if e.code >= 500:
                    await self._reset(conn)
                    return Outcome("failed", _reply(e), suppress=e.code in (550, 551, 553))
                raise
            # DATA by hand, so that we know whether the body went out: a failure before it
            # can be retried, one after it may have been delivered.
            start = await conn.execute_command(b"DATA")
            if start.code != 354:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            if conn.protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            written = True
            conn.protocol.write(_dot_stuff(message.data))
            reply = await conn.protocol.read_response(timeout=self.settings.timeout)
            if reply.code != 250:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            return Outcome("sent", f"{reply.code} {reply.message}".strip())
        except aiosmtplib.SMTPResponseException as e:
            if e.code == 421:
                raise _Retry(_reply(e), reconnect=True) from e
            if _is_policy(e):
                raise SendAborted(
                    self.settings.where, f"message to {recipient} refused by policy: {_reply(e)}"
                ) from e
            if 400 <= e.code < 500:
                await self._reset(conn)
                raise _Retry(_reply(e), reconnect=False) from e
            await self._reset(conn)
            return Outcome("failed", _reply(e))
        except (
            TimeoutError,
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as e:
            conn.close()
            problem = f"{type(e).__name__}: {e}".rstrip(": ")
            if written:
                return Outcome("unknown", f"after the message was sent: {problem}")
            raise _Retry(problem, reconnect=True) from e

    async def _reset(self, conn: aiosmtplib.SMTP) -> None:
        try:
            await conn.rset()
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            conn.close()


def _tls_failure(error: BaseException) -> str | None:
    """What went wrong with TLS, when a failure comes from it (anywhere in its causes)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return "TLS certificate not trusted (smtp.ca_file?)"
        if isinstance(seen, ssl.SSLError):
            return "TLS handshake failed (smtp.security and smtp.port must match the server)"
        seen = seen.__cause__ or seen.__context__
    return None


def _dot_stuff(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): CRLF line ends, a leading dot doubled, then the end mark."""
    data = re.sub(rb"\r?\n", b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", data) + b".\r\n"
