"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it accepts and can misbehave."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    helo: str = ""  # the name the client greeted with (EHLO/HELO)


@dataclass
class Faults:
    """What to do wrong, decided per recipient so that runs are reproducible."""

    temp_fail_share: float = 0.0  # this share of recipients get 451 on their first attempts
    temp_fail_times: int = 1
    reject: set[str] = field(default_factory=set)  # 550 at RCPT
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # this reply at RCPT instead
    policy_reject: set[str] = field(default_factory=set)  # 554 5.7.1 at DATA
    drop_data: set[str] = field(
        default_factory=set
    )  # close the connection instead of replying, once
    slow: dict[str, float] = field(default_factory=dict)  # sleep this long before accepting
    closing: set[str] = field(default_factory=set)  # 421 at the end of DATA, once
    # Close the connection in the middle of the message's data (before its end), once.
    cut_data: set[str] = field(default_factory=set)


def share(address: str) -> float:
    """A stable number in [0, 1) per address."""
    return int(hashlib.sha256(address.encode()).hexdigest()[:8], 16) / 2**32


class RecordingHandler:
    """``keep_data=False``: the messages' bytes are not kept (a sink for many thousands)."""

    def __init__(self, faults: Faults, *, keep_data: bool = True) -> None:
        self.faults = faults
        self.keep_data = keep_data
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self.cut: set[str] = set()  # recipients whose data was cut off (Faults.cut_data)
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.faults.reject:
            return "550 5.1.1 No such user here"
        if address in self.faults.rcpt_replies:
            return self.faults.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        rcpt = envelope.rcpt_tos[0]
        with self.lock:
            self.attempts[rcpt] += 1
            attempt = self.attempts[rcpt]
        f = self.faults
        if share(rcpt) < f.temp_fail_share and attempt <= f.temp_fail_times:
            return "451 4.3.0 Temporary failure, try again"
        if rcpt in f.closing and attempt == 1:
            return "421 4.3.2 Service shutting down, closing channel"
        if rcpt in f.policy_reject:
            return "554 5.7.1 Message rejected by policy"
        if rcpt in f.drop_data and attempt == 1:
            server.transport.close()  # the body arrived; the reply never does
            return "421 closing"
        with self.lock:
            self.received.append(
                Received(
                    envelope.mail_from,
                    list(envelope.rcpt_tos),
                    bytes(envelope.content) if self.keep_data else b"",
                    session.host_name or "",
                )
            )
        if rcpt in f.slow:  # queued already, slow to say so: the client cannot know
            await asyncio.sleep(f.slow[rcpt])
        return "250 2.0.0 Queued"

    def count(self) -> Counter[str]:
        with self.lock:
            return Counter(r for m in self.received for r in m.rcpt_tos)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _FaultySMTP(SMTP):
    """aiosmtpd's session, with the faults that happen before the handler sees the message."""

    async def smtp_DATA(self, arg: str) -> None:
        handler: RecordingHandler = self.event_handler
        rcpt = self.envelope.rcpt_tos[0] if self.envelope and self.envelope.rcpt_tos else ""
        if rcpt in handler.faults.cut_data:
            with handler.lock:
                first = rcpt not in handler.cut
                handler.cut.add(rcpt)
            if first and self.transport is not None:
                # Read the first line, stop reading (the client's writes back up), then drop
                # the connection: the end of the data never arrives.
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                sock = self.transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                await self._reader.readuntil(b"\r\n")
                await asyncio.sleep(0.5)
                self.transport.close()
                return
        await super().smtp_DATA(arg)


class _FaultyController(Controller):
    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    def __init__(
        self,
        faults: Faults | None = None,
        *,
        port: int | None = None,
        keep_data: bool = True,
        **smtp_kwargs: Any,
    ) -> None:
        self.handler = RecordingHandler(faults or Faults(), keep_data=keep_data)
        self.port = port or free_port()
        self.controller = _FaultyController(
            self.handler, hostname="127.0.0.1", port=self.port, **smtp_kwargs
        )

    def __enter__(self) -> SmtpServer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()

    @property
    def received(self) -> list[Received]:
        return self.handler.received


def password_authenticator(user: str, password: str) -> Any:
    def authenticate(
        server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


def make_test_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file, key_file = folder / "server.pem", folder / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


class BrokenServer:
    """A TCP server on 127.0.0.1 that is no SMTP server to talk to.

    ``greeting``: sent on every connection, which is then closed (e.g. "421 4.3.2 Too busy");
    None: the connection is held open and nothing is ever said. ``connections`` counts them.
    """

    def __init__(self, greeting: str | None = None, *, port: int | None = None) -> None:
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port or 0))
        self.sock.listen(64)
        self.port = int(self.sock.getsockname()[1])
        self.connections = 0
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> BrokenServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.connections += 1
            if self.greeting is None:
                self.held.append(conn)
                continue
            with conn:
                conn.sendall(self.greeting.encode() + b"\r\n")
