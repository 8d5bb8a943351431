"""A real IMAP server (Debian's ``dovecot-imapd``) on 127.0.0.1, with its own config in a temp
folder (nothing read from /etc/dovecot): plaintext login without TLS (loopback only), every
``local@example.org`` an account (password ``pw-local@example.org``), Maildirs under
``mail_root/<domain>/<local part>/`` owned by ``nobody``.

It also takes mail over LMTP (``dovecot-lmtpd``) on 127.0.0.1 for its users,
``user+detail@domain`` included, into ``user``'s INBOX: how the Postfix test server
(tests/servers/postfix.py) delivers, as a production Postfix + Dovecot pair does.
"""

from __future__ import annotations

import contextlib
import imaplib
import itertools
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.servers.process import (
    Server,
    ServerError,
    free_port,
    retry_port_clash,
    unprivileged_user,
    which,
)

DOMAIN = "example.org"


def missing() -> str | None:
    """Why Dovecot cannot start here, or None."""
    binary = which("dovecot")
    if binary is None:
        return "no dovecot (Debian packages dovecot-imapd, dovecot-lmtpd)"
    for part, package in (("imap", "dovecot-imapd"), ("lmtp", "dovecot-lmtpd")):
        if not Path(f"/usr/lib/dovecot/{part}").exists():
            return f"no dovecot {part} server (Debian package {package})"
    if os.geteuid() != 0:
        return "dovecot as a test server needs root (it switches to the mail user)"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    if not version.startswith("2.3."):
        return f"dovecot {version.strip() or '?'}: the test config is written for 2.3 (Debian 12)"
    return None


@dataclass(frozen=True)
class Mailbox:
    """One IMAP account: log in as ``address`` with ``password`` at ``host:port``."""

    address: str
    password: str
    host: str
    port: int
    maildir: Path

    @contextlib.contextmanager
    def imap(self) -> Iterator[imaplib.IMAP4]:
        """A logged-in IMAP connection, logged out at the end."""
        conn = imaplib.IMAP4(self.host, self.port, timeout=30)
        try:
            conn.login(self.address, self.password)
            yield conn
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                conn.logout()

    def append(self, raw: bytes, folder: str = "INBOX") -> None:
        """Put one raw message into a folder (made if missing) with IMAP APPEND."""
        with self.imap() as conn:
            if folder != "INBOX":
                conn.create(_quote(folder))  # NO when it exists: fine
            typ, data = conn.append(_quote(folder), "", "", raw)
            if typ != "OK":
                raise ServerError(f"APPEND to {folder} failed: {data!r}")

    def folders(self) -> list[str]:
        """The account's folder names, sorted."""
        with self.imap() as conn:
            _, data = conn.list()
        names = []
        for line in data:
            if isinstance(line, bytes):
                match = re.match(rb'\(.*?\) (?:"[^"]*"|NIL) (.+)$', line)
                if match:
                    names.append(match.group(1).decode().strip('"'))
        return sorted(names)

    def messages(self, folder: str = "INBOX") -> list[bytes]:
        """The raw messages in a folder, oldest first; read-only (flags stay as they are).
        A folder that does not exist holds none."""
        with self.imap() as conn:
            typ, _ = conn.select(_quote(folder), readonly=True)
            if typ != "OK":
                return []
            _, ids = conn.uid("SEARCH", "ALL")
            out: list[bytes] = []
            for uid in ids[0].split():
                _, parts = conn.uid("FETCH", uid, "(BODY.PEEK[])")
                out.extend(part[1] for part in parts if isinstance(part, tuple))
            return out

    def wait_for_messages(
        self,
        count: int = 1,
        folder: str = "INBOX",
        timeout: float = 60.0,
        poll: Callable[[], None] | None = None,
    ) -> list[bytes]:
        """The folder's messages once it holds at least ``count``, or what it holds when
        ``timeout`` is up (a hang guard, not a speed check: assert on what comes back).
        ``poll`` runs between looks, e.g. a Postfix queue flush."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.messages(folder)
            if len(found) >= count or time.monotonic() > deadline:
                return found
            if poll is not None:
                poll()
            time.sleep(0.2)


class Dovecot(Server):
    """``with Dovecot() as imap: box = imap.add_user()`` -> ``box.append(raw)``, ``box.messages()``;
    ``imap.port`` is IMAP, ``imap.lmtp_port`` LMTP."""

    name = "dovecot"
    host = "127.0.0.1"

    def __init__(self, domain: str = DOMAIN) -> None:
        binary = which("dovecot")
        if binary is None:
            raise ServerError(missing() or "no dovecot")
        self.binary = binary
        super().__init__()
        self.domain = domain
        self.mail_root = self.root / "mail"
        self.conf = self.root / "dovecot.conf"
        self.log = self.root / "dovecot.log"
        self.stdout = self.root / "dovecot.stdout"
        self.user, self.uid, self.gid = unprivileged_user()
        self.port = 0
        self.lmtp_port = 0
        self._serial = itertools.count(1)

    @property
    def logs(self) -> list[Path]:
        return [self.log, self.stdout]

    def add_user(self, local: str | None = None) -> Mailbox:
        """An account ``local@domain`` (default: a fresh name) to log in to; its INBOX is empty
        until mail comes. Any local part is an account (static passdb and userdb): its
        password is ``pw-`` + the address."""
        local = local or f"user{next(self._serial)}"
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", local):
            raise ValueError(f"not a plain local part: {local!r}")
        address = f"{local}@{self.domain}"
        return Mailbox(
            address=address,
            password=f"pw-{address}",
            host=self.host,
            port=self.port,
            maildir=self.mail_root / self.domain / local,
        )

    def _start(self) -> None:
        self.mail_root.mkdir()
        os.chown(self.mail_root, self.uid, self.gid)
        retry_port_clash(self._start_server, "dovecot")

    def _start_server(self) -> None:
        self.port, self.lmtp_port = free_port(), free_port()
        self._write_conf()
        self._launch(
            [self.binary, "-F", "-c", self.conf],
            ports=[self.port, self.lmtp_port],
            output=self.stdout,
        )

    def _write_conf(self) -> None:
        r = self.root
        self.conf.write_text(
            f"""\
# A private test instance: nothing here reads /etc/dovecot.
instance_name = newsletter-test-{self.port}
base_dir = {r}/run
state_dir = {r}/state
log_path = {self.log}
info_log_path = {self.log}
auth_verbose = yes
auth_failure_delay = 0
hostname = imap.test
protocols = imap lmtp
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:{self.mail_root}/%d/%n
mail_uid = {self.uid}
mail_gid = {self.gid}
first_valid_uid = {self.uid}
last_valid_uid = {self.uid}
first_valid_gid = {self.gid}
last_valid_gid = {self.gid}
# LMTP: user+detail@domain goes to user's INBOX
recipient_delimiter = +
lmtp_save_to_detail_mailbox = no
postmaster_address = postmaster@{self.domain}
namespace inbox {{
  inbox = yes
  separator = /
}}
# Every user exists, password "pw-" + the address: a passwd-file is re-read at most once a
# second, too late for an account a test adds and logs in to at once.
passdb {{
  driver = static
  args = password=pw-%u
}}
userdb {{
  driver = static
  args = uid={self.uid} gid={self.gid} home={self.mail_root}/%d/%n allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
# No auth penalty: every login comes from 127.0.0.1, and one test's wrong password must not
# delay the next test's logins by seconds.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {self.host}
    port = {self.lmtp_port}
  }}
}}
""",
            encoding="utf-8",
        )


def _quote(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
