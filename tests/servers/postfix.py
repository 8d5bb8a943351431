"""A private Postfix instance (Debian's ``postfix``) on 127.0.0.1, in a temp folder.

Its own config_directory (main.cf, master.cf), queue_directory and data_directory; smtpd on
127.0.0.1 and a free port; nothing ever leaves the machine (every destination that is not
listed resolves to the ``error`` transport). It:

- hands mail for the local domain (``example.org``) to the Dovecot test server over LMTP
  (tests/servers/dovecot.py), which puts ``bounces+TOKEN@example.org`` into ``bounces``'s
  INBOX (``recipient_delimiter = +``), as a production Postfix + Dovecot pair does;
- ACCEPTS mail for each bouncing destination (``bounce.test`` by default) with 250 and BOUNCES
  it afterwards (an ``error:5.1.1 ...`` transport), so Postfix itself sends a DSN to the
  envelope sender, the way a real relay reports a failure after the SMTP conversation.

Postfix's master must start as root.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import smtplib
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from tests.servers.process import Server, ServerError, free_port, retry_port_clash, run, which

LOCAL_DOMAIN = "example.org"
# destination (a domain or one address) -> the DSN status and text Postfix bounces it with:
# an address that does not exist, then two failures that are not the address's fault.
DEFAULT_BOUNCES: Mapping[str, str] = {
    "bounce.test": "5.1.1 user unknown",
    "full.test": "5.2.2 mailbox full",
    "blocked.test": "5.7.1 message refused by local policy",
}


def missing() -> str | None:
    """Why Postfix cannot start here, or None."""
    if which("postfix") is None or which("postqueue") is None:
        return "no postfix (Debian package postfix)"
    if os.geteuid() != 0:
        return "postfix as a test server needs root (its master starts as root)"
    return None


class Postfix(Server):
    """``with Postfix(dovecot.lmtp_port) as relay: relay.send(...)``; ``relay.port`` is SMTP.

    ``lmtp_port``: where on 127.0.0.1 an LMTP server (Dovecot) takes the local domain's mail.
    ``bounces``: destination (a domain, or one address) -> the status and text Postfix
    bounces mail for it with, after accepting it.
    """

    name = "postfix"
    host = "127.0.0.1"

    def __init__(
        self,
        lmtp_port: int,
        *,
        local_domain: str = LOCAL_DOMAIN,
        bounces: Mapping[str, str] = DEFAULT_BOUNCES,
    ) -> None:
        postfix, postqueue = which("postfix"), which("postqueue")
        if postfix is None or postqueue is None:
            raise ServerError(missing() or "no postfix")
        self.postfix = postfix
        self.postqueue = postqueue
        self.master = _daemon_directory() / "master"
        super().__init__()
        self.lmtp_port = lmtp_port
        self.local_domain = local_domain
        self.bounces = dict(bounces)
        self.config = self.root / "etc"
        self.queue = self.root / "queue"
        self.data = self.root / "data"
        self.log = self.root / "postfix.log"
        self.stdout = self.root / "master.stdout"
        self.port = 0

    @property
    def logs(self) -> list[Path]:
        return [self.log, self.stdout]

    def send(self, mail_from: str, rcpt_to: list[str], raw: bytes) -> dict[str, tuple[int, bytes]]:
        """Submit one message over SMTP; smtplib's refused recipients (empty: all got 250).
        Raises smtplib's errors when every recipient or the message is refused."""
        # A fixed EHLO name: smtplib's default looks the machine's own name up in the DNS.
        with smtplib.SMTP(self.host, self.port, local_hostname="client.test", timeout=30) as smtp:
            return smtp.sendmail(mail_from, rcpt_to, raw)

    def flush(self) -> None:
        """Ask the queue manager to try every queued message now (``postqueue -f``)."""
        run([self.postqueue, "-c", self.config, "-f"], what="postqueue -f", logs=self.logs)

    def queue_ids(self) -> list[str]:
        """Ids of the messages still in the queue (``postqueue -j``); empty when all is done."""
        out = run([self.postqueue, "-c", self.config, "-j"], what="postqueue -j", logs=self.logs)
        return re.findall(r'"queue_id":\s*"([0-9A-Za-z]+)"', out)

    def _start(self) -> None:
        self.config.mkdir()
        if not _make_queue(self.queue, self.data):
            self._write_config()  # `postfix check` makes them (slowly: seconds)
            run([self.postfix, "-c", self.config, "check"], what="postfix check", logs=self.logs)
        retry_port_clash(self._start_server, "postfix")

    def _start_server(self) -> None:
        self.port = free_port()
        self._write_config()
        # The master in the foreground, as our child: `postfix start` adds seconds of
        # integrity checks and leaves a daemon that only a pid file names.
        self._launch([self.master, "-c", self.config, "-d"], ports=[self.port], output=self.stdout)

    def _write_config(self) -> None:
        c = self.config
        transport = f"{self.local_domain} lmtp:inet:{self.host}:{self.lmtp_port}\n" + "".join(
            f"{dest} error:{reason}\n" for dest, reason in self.bounces.items()
        )
        (c / "transport").write_text(transport, encoding="utf-8")
        (c / "main.cf").write_text(
            f"""\
# A private test instance: nothing here reads or changes /etc/postfix.
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.data}
maillog_file = {self.log}
maillog_file_prefixes = {self.root}
myhostname = relay.test
mydomain = relay.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
alias_maps =
alias_database =
local_recipient_maps =
biff = no
append_dot_mydomain = no
smtputf8_enable = no
recipient_delimiter = +
# accept mail for the bouncing destinations; their error transport bounces it afterwards
smtpd_reject_unlisted_recipient = no
# nothing leaves: every destination not listed below bounces
default_transport = error:5.4.6 the test relay sends nothing out
relay_transport = error:5.4.6 the test relay sends nothing out
transport_maps = texthash:{c}/transport
relay_domains = {self.local_domain}
# retry at once in tests
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
""",
            encoding="utf-8",
        )
        (c / "master.cf").write_text(
            f"""\
# service type private unpriv chroot wakeup maxproc command
{self.host}:{self.port} inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
proxywrite unix - - n -    1 proxymap
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
lmtp      unix  - - n -    - lmtp
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
""",
            encoding="utf-8",
        )
        # Postfix waits (seconds) for a config file written within the last second to settle.
        past = time.time() - 10
        for file in c.iterdir():
            os.utime(file, (past, past))


def _make_queue(queue: Path, data: Path) -> bool:
    """Make the queue and data folders with the owners and modes that Postfix's own list
    (postfix-files) gives; False when that list is not where Debian puts it (then
    ``postfix check`` must make them, slowly)."""
    listing = Path("/etc/postfix/postfix-files")
    if not listing.is_file():
        queue.mkdir()
        data.mkdir()
        return False
    owners = {"$mail_owner": "postfix", "$setgid_group": "postdrop", "root": "root", "-": "root"}
    places = {"$queue_directory": queue, "$data_directory": data}
    for line in listing.read_text(encoding="utf-8").splitlines():
        fields = line.split(":")
        if len(fields) < 5 or fields[1] != "d":
            continue
        top, _, rest = fields[0].partition("/")
        if top not in places:
            continue
        folder = places[top] / rest if rest else places[top]
        folder.mkdir(parents=True, exist_ok=True)
        uid = pwd.getpwnam(owners.get(fields[2], fields[2])).pw_uid
        gid = grp.getgrnam(owners.get(fields[3], fields[3])).gr_gid
        os.chown(folder, uid, gid)
        folder.chmod(int(fields[4], 8))
    return True


def _daemon_directory() -> Path:
    """Where the master and its daemons live (/usr/lib/postfix/sbin on Debian)."""
    postconf = which("postconf")
    if postconf is not None:
        out = subprocess.run(
            [postconf, "-d", "-h", "daemon_directory"], capture_output=True, text=True
        ).stdout.strip()
        if out:
            return Path(out)
    return Path("/usr/lib/postfix/sbin")
