"""``SmtpSender``: messages delivered over a small pool of long-lived SMTP connections.

Each message's outcome is reported through ``Events`` as it happens, so the caller can keep
a ledger; what each reply means is ``replies``'. A message that meets a temporary failure
waits aside in the shared backlog while its connection goes on with others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import aiosmtplib

from newsletter.deliver.backlog import Backlog, Queued
from newsletter.deliver.events import Events, Outcome
from newsletter.deliver.replies import ReplyAction, SmtpStatus, action, describe, permanent
from newsletter.errors import SendError
from newsletter.models import Outgoing

log = logging.getLogger(__name__)


class SendAborted(SendError):
    """The server refuses us as a sender (authentication, policy): stop instead of burning the list."""


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
    connect_timeout: float = 10.0  # one attempt to open a connection, greeting to AUTH
    helo_name: str | None = None  # None: aiosmtplib's own (the machine's name)

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


def default_helo_name(from_address: str) -> str:
    """The name to greet with: the machine's fully qualified name when it has a dot, else the
    From address's domain. A bare ``localhost`` costs spam points at receiving servers."""
    fqdn = socket.getfqdn().strip().rstrip(".")
    if "." in fqdn and not fqdn.startswith("localhost") and not fqdn.endswith(".localdomain"):
        return fqdn
    return from_address.rpartition("@")[2] or "localhost"


class _RateLimiter:
    """At most ``rate`` message starts per second across all connections; ``shared``: the
    seconds to wait, from a pace kept by every sender together (``Events.pace``)."""

    def __init__(self, rate: float | None, shared: Callable[[], float] | None = None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self.next_at = 0.0
        self.shared = shared

    async def wait(self) -> None:
        if self.shared is not None:
            delay = self.shared()
            if delay > 0:
                await asyncio.sleep(delay)
            return
        if not self.interval:
            return
        now = time.monotonic()
        at = max(now, self.next_at)
        self.next_at = at + self.interval
        if at > now:
            await asyncio.sleep(at - now)


class _Retry(Exception):
    """A temporary failure: try the message again later, on a (possibly new) connection.

    ``started``: ``Events.started`` was called (the server refused it after its end of data).
    """

    def __init__(self, detail: str, reconnect: bool, started: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.reconnect = reconnect
        self.started = started


class _NoConnection(Exception):
    """One attempt to open a connection failed in a way that may pass (refused, timeout, 4xx).

    ``replied``: the server answered (a 4xx); else it could not be reached at all.
    """

    def __init__(self, detail: str, *, replied: bool = False) -> None:
        super().__init__(detail)
        self.replied = replied


class _LedgerFailed(Exception):
    """``Events.started`` raised: the message was not sent; the send stops with that error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _reply(e: aiosmtplib.SMTPResponseException) -> str:
    return describe(e.code, e.message)


def _backoff(base: float, attempt: int) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): doubling, capped, jittered."""
    return float(min(60.0, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0))


class SmtpSender:
    """Delivers over ``connections`` long-lived SMTP connections with a shared rate limit.

    Reply handling: a 4xx, or a connection lost before the end of the message's data, is
    retried with backoff (the message waits aside; its connection goes on with others) up to
    ``max_retries`` times, then ``deferred`` (a later run tries again); a 5xx to RCPT that
    condemns the address (user unknown) fails the message and suppresses the address; another
    5xx to RCPT or to the message fails it; a 5.7.x reply, a 5xx to MAIL FROM or a refused AUTH
    stops the run (SendAborted), and so does a pool none of whose
    connections can be opened (``1 + max_retries`` attempts each, ``connect_timeout`` each); a
    drop or timeout after the end of data was written is ``unknown`` (the server may have it).
    """

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
        self._wake: Callable[[], None] | None = None  # wakes the running send's event loop

    def close(self) -> None:
        pass

    @property
    def stopped(self) -> bool:
        """``stop`` was called: a send of several batches starts no other."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish the messages in flight, start no more (SIGTERM); safe from any thread and
        from a signal handler (no lock: the handler may run while this thread holds one)."""
        self._stop.set()
        wake = self._wake
        if wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has just closed
                wake()

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
        except _NoConnection as e:
            tls = _tls_failure(e)
            if tls is not None:  # not an outage: the settings (or the CA) do not fit the server
                raise SendAborted(self.settings.where, f"{tls}: {e}") from e
            raise SendError(
                self.settings.where, str(e) if e.replied else f"cannot connect: {e}"
            ) from e

    async def _send_all(self, messages: Iterator[Outgoing], events: Events) -> None:
        delivery = _Delivery(self, events)
        loop = asyncio.get_running_loop()

        def wake() -> None:
            loop.call_soon_threadsafe(delivery.backlog.wake)

        self._wake = wake
        try:
            await delivery.run(messages)
        finally:
            self._wake = None

    async def _connect(self) -> aiosmtplib.SMTP:
        """Open one connection: greeting, EHLO, STARTTLS or TLS, AUTH, within connect_timeout.

        Raises _NoConnection when the failure may pass (refused, no answer, a 4xx, a TLS
        handshake that failed) and SendAborted when it will not (a 5xx, AUTH refused or not
        offered, STARTTLS not offered).
        """
        s = self.settings
        context = ssl.create_default_context(cafile=s.ca_file) if s.security != "none" else None
        conn = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout,
            local_hostname=s.helo_name,
            use_tls=s.security == "tls",
            start_tls=s.security == "starttls",  # required when asked: no silent downgrade
            tls_context=context,
        )
        stage = "connect"
        try:
            async with asyncio.timeout(s.connect_timeout):
                await conn.connect(timeout=s.connect_timeout)
                if s.username:
                    stage = "auth"
                    await conn.login(s.username, s.password or "")
        except aiosmtplib.SMTPAuthenticationError as e:
            conn.close()
            raise SendAborted(s.where, f"SMTP AUTH as {s.username!r} refused: {_reply(e)}") from e
        except aiosmtplib.SMTPResponseException as e:
            conn.close()
            if permanent(e.code):
                raise SendAborted(s.where, f"SMTP server refused the session: {_reply(e)}") from e
            raise _NoConnection(_reply(e), replied=True) from e
        except TimeoutError as e:
            conn.close()
            raise _NoConnection(
                f"no answer within {s.connect_timeout:g} s (smtp.connect_timeout)"
            ) from e
        except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as e:
            conn.close()  # refused, reset, or a TLS handshake that failed (ssl.SSLError)
            raise _NoConnection(str(e) or type(e).__name__) from e
        except aiosmtplib.SMTPException as e:
            conn.close()
            if stage == "auth":
                plain = " on an unencrypted connection" if s.security == "none" else ""
                raise SendAborted(
                    s.where,
                    f"smtp.username is set ({s.username!r}) but the server offers no AUTH{plain}; "
                    "check smtp.host, smtp.port and smtp.security",
                ) from e
            raise SendAborted(
                s.where, f"STARTTLS is required (smtp.security) but failed: {e}"
            ) from e
        return conn

    async def _quit(self, conn: aiosmtplib.SMTP) -> None:
        try:
            await conn.quit(timeout=5)
        except (TimeoutError, aiosmtplib.SMTPException, OSError):
            conn.close()

    async def _transaction(
        self, conn: aiosmtplib.SMTP, message: Outgoing, events: Events
    ) -> Outcome:
        """One MAIL/RCPT/DATA exchange. Raises _Retry for temporary failures.

        ``events.started`` is called once the message's data is written but for its end mark:
        a drop before that point is retried, one after it is ``unknown``.
        """
        recipient = self.redirect_to or message.recipient
        sender = message.envelope_from
        committed = False  # the end of data was written: from here on the server may have it
        try:
            try:
                await conn.mail(sender)
            except aiosmtplib.SMTPSenderRefused as e:
                if action(e.code, e.message, "MAIL") is ReplyAction.stop:
                    raise SendAborted(
                        self.settings.where, f"MAIL FROM:<{sender}> refused: {_reply(e)}"
                    ) from e
                raise
            try:
                await conn.rcpt(recipient)
            except aiosmtplib.SMTPRecipientRefused as e:
                said = action(e.code, e.message, "RCPT")
                if said is ReplyAction.stop:
                    raise SendAborted(
                        self.settings.where, f"RCPT TO:<{recipient}> refused by policy: {_reply(e)}"
                    ) from e
                if said in (ReplyAction.fail, ReplyAction.bounce):
                    await self._reset(conn)
                    bounce = said is ReplyAction.bounce
                    return Outcome("failed", _reply(e), suppress=bounce, refused=not bounce)
                raise
            # DATA by hand, so that we know whether the end of data went out: a failure before
            # it can be retried, one after it may have been delivered.
            start = await conn.execute_command(b"DATA")
            if start.code != SmtpStatus.start_input:
                raise aiosmtplib.SMTPDataError(start.code, start.message)
            await _write_data(conn, message.data)
            try:
                events.started(message)
            except Exception as e:
                conn.close()  # without its end mark the server discards the message
                raise _LedgerFailed(e) from e
            if conn.protocol is None:
                raise aiosmtplib.SMTPServerDisconnected("connection lost")
            committed = True
            conn.protocol.write(b".\r\n")
            reply = await conn.protocol.read_response(timeout=self.settings.timeout)
            if reply.code != SmtpStatus.completed:
                raise aiosmtplib.SMTPDataError(reply.code, reply.message)
            return Outcome("sent", describe(reply.code, reply.message))
        except aiosmtplib.SMTPResponseException as e:
            # A 4xx to MAIL FROM or RCPT TO comes here too: for a 4xx the stage does not matter.
            said = action(e.code, e.message, "DATA")
            if said is ReplyAction.reconnect:
                raise _Retry(_reply(e), reconnect=True, started=committed) from e
            if said is ReplyAction.stop:
                raise SendAborted(
                    self.settings.where, f"message to {recipient} refused by policy: {_reply(e)}"
                ) from e
            if said is ReplyAction.retry:
                await self._reset(conn)
                raise _Retry(_reply(e), reconnect=False, started=committed) from e
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
            if committed:
                return Outcome("unknown", f"after the message was sent: {problem}")
            raise _Retry(f"connection lost before the end of the message: {problem}", True) from e

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


_CHUNK = 64 * 1024


async def _write_data(conn: aiosmtplib.SMTP, data: bytes) -> None:
    """The message's data, all but its end mark, as fast as the server reads it.

    Written in pieces with flow control, so that a server that closes the connection in the
    middle is seen here, before the end mark: then the message was certainly not accepted.
    """
    body = _dot_stuff(data)
    for at in range(0, len(body), _CHUNK):
        protocol = conn.protocol
        if protocol is None or not conn.is_connected:
            raise aiosmtplib.SMTPServerDisconnected("connection lost during the message")
        protocol.write(body[at : at + _CHUNK])
        # aiosmtplib's copy of asyncio's flow control (StreamWriter.drain): waits while the
        # server does not read, raises ConnectionResetError once the connection is lost.
        await protocol._drain_helper()
    await asyncio.sleep(0)  # a close that has already arrived is seen now, not after the end mark
    if conn.protocol is None or not conn.is_connected:
        raise aiosmtplib.SMTPServerDisconnected("connection lost during the message")


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _dot_stuff(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): CRLF line ends, a leading dot doubled; no end mark.

    Counting and ``replace`` instead of regular expressions over the whole message: a regex
    that may start at any byte cost ~700 µs a 35 KB message, a third of a send's CPU.
    """
    if data.count(b"\n") != data.count(b"\r\n"):  # a bare LF (ours end lines with CRLF)
        data = _BARE_LF.sub(b"\r\n", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.startswith(b"."):
        data = b"." + data
    # Every line end is CRLF now: a line that starts with a dot follows one.
    return data.replace(b"\r\n.", b"\r\n..")


class _GaveUp(Exception):
    """A connection could not be opened in ``1 + max_retries`` attempts."""

    def __init__(self, detail: str, attempts: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.attempts = attempts


@dataclass(slots=True)
class _Slot:
    conn: aiosmtplib.SMTP | None = None


class _Delivery:
    """One ``send_all``: a producer, one worker per connection, and what stops them all.

    The first error that stops the send (SendAborted, a ledger write that failed, a message
    that could not be composed) halts the backlog: the messages in flight on other connections
    finish, nothing more starts, and the error is raised once every worker is done.
    """

    def __init__(self, sender: SmtpSender, events: Events) -> None:
        self.sender = sender
        self.settings = sender.settings
        self.events = events
        self.connections = max(1, self.settings.connections)
        self.backlog = Backlog(2 * self.connections, sender._stop)
        # A ledger's recorder may carry the pace of several senders sharing one rate.
        self.limiter = _RateLimiter(self.settings.rate_per_second, getattr(events, "pace", None))
        self.workers = self.connections  # those that have not given up on connecting
        self.error: BaseException | None = None

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        else:
            log.info("send.also_failed error=%s", error)  # the first error is the one reported
        self.backlog.halt()

    async def run(self, messages: Iterator[Outgoing]) -> None:
        await asyncio.gather(
            self._produce(messages), *(self._work() for _ in range(self.connections))
        )
        if self.error is not None:
            raise self.error

    async def _produce(self, messages: Iterator[Outgoing]) -> None:
        try:
            for message in messages:  # built lazily: one digest in memory per slot
                if not await self.backlog.put(message):
                    break
                await asyncio.sleep(0)
        except Exception as e:  # composing failed: stop the send with that error
            self.fail(e)
        finally:
            self.backlog.close()

    async def _work(self) -> None:
        slot = _Slot()
        try:
            while (job := await self.backlog.take()) is not None:
                try:
                    await self._deliver(slot, job)
                except _GaveUp as e:
                    self.backlog.give_back(job)
                    self._give_up(e)
                    return
                except _LedgerFailed as e:
                    self.fail(e.error)
                except Exception as e:  # a ledger write that failed, or a bug: stop the send
                    self.fail(e)
                finally:
                    self.backlog.done()
        finally:
            if slot.conn is not None:
                await self.sender._quit(slot.conn)

    def _give_up(self, e: _GaveUp) -> None:
        s = self.settings
        self.workers -= 1
        if self.workers > 0:
            log.info(
                "smtp.connection_given_up server=%s error=%r connections_left=%d",
                s.where,
                e.detail,
                self.workers,
            )
            return
        self.fail(
            SendAborted(
                s.where,
                f"cannot connect ({e.attempts} attempt{'s' if e.attempts != 1 else ''}, "
                f"smtp.max_retries: {s.max_retries}): {e.detail}",
            )
        )

    async def _open(self) -> aiosmtplib.SMTP | None:
        """A new connection, or None when the send stopped meanwhile; raises _GaveUp."""
        s = self.settings
        detail = ""
        attempts = s.max_retries + 1
        for attempt in range(attempts):
            if attempt:
                await self.backlog.sleep(_backoff(s.retry_backoff, attempt))
            if self.backlog.stopped:
                return None
            try:
                return await self.backlog.unless_stopped(self.sender._connect())
            except _NoConnection as e:
                tls = _tls_failure(e)  # a TLS failure says what to check
                detail = f"{tls}: {e}" if tls else str(e)
                log.info(
                    "smtp.connect_failed server=%s attempt=%d/%d error=%r",
                    s.where,
                    attempt + 1,
                    attempts,
                    detail,
                )
        raise _GaveUp(detail, attempts)

    async def _deliver(self, slot: _Slot, job: Queued) -> None:
        s = self.settings
        message = job.message
        if slot.conn is None or not slot.conn.is_connected:
            slot.conn = await self._open()
            if slot.conn is None or self.backlog.stopped:
                self.backlog.give_back(job)
                return
        conn = slot.conn
        await self.limiter.wait()
        try:
            outcome = await self.sender._transaction(conn, message, self.events)
        except _Retry as e:
            if e.reconnect:
                conn.close()
                slot.conn = None
            if e.started:  # refused after its end of data: certainly not at the server
                self.events.retrying(message, e.detail)
            job.failures += 1
            if job.failures <= s.max_retries:
                delay = _backoff(s.retry_backoff, job.failures)
                log.info(
                    "smtp.retry to=%s reply=%r attempt=%d delay=%.1f",
                    message.recipient,
                    e.detail,
                    job.failures,
                    delay,
                )
                self.backlog.retry_later(job, delay)
                return
            outcome = Outcome("deferred", e.detail)
        except SendAborted as e:
            self.fail(e)
            outcome = Outcome("pending", str(e))
        self.events.finished(message, outcome)
