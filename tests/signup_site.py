"""The public site as `serve` runs it, for tests: the daemon in this process (on a simulated
clock that stands still, so no digest run fires), its sign-up emails going to a real SMTP
server (aiosmtpd), and a visitor with a cookie jar that reads form tokens off the pages."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import html
import http.cookiejar
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from newsletter import config, schedule
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from tests.clock import FakeClock
from tests.smtpserver import Received, SmtpServer, free_port

KEY = b"signup-test-signing-key-0123456789abcdef"
NOW = dt.datetime(2026, 5, 8, 7, 0, tzinfo=dt.UTC)


def write_config(
    folder: Path,
    smtp_port: int,
    web_port: int,
    *,
    signup: str = "",
    enabled: bool = True,
    subscribers: str = "[]",
    extra: str = "",
    sources: str = "  huggingface:\n    enabled: false\n",
) -> Path:
    path = folder / "site.yaml"
    path.write_text(
        f"""\
newsletter:
  title: Trending Papers
  description: The most talked-about machine learning papers of the day, by topic.
  from: "Trending Papers <papers@example.org>"
  base_url: http://127.0.0.1:{web_port}
  state: state.db
sources:
{sources}smtp:
  host: 127.0.0.1
  port: {smtp_port}
  security: none
  retry_backoff: 0
  timeout: 5
server:
  host: 127.0.0.1
  port: {web_port}
  trusted_proxies: [127.0.0.1]
signup:
  enabled: {str(enabled).lower()}
{signup}topics:
  agents:
    name: AI agents
    description: Agents that plan, use tools and act.
    keywords: [agent, agents, agentic]
  diffusion:
    name: Diffusion models
    description: Image and video generation.
    keywords: [diffusion]
  robotics:
    keywords: [robot, robotics]
  internal:
    public: false
    keywords: [benchmark]
{extra}subscribers: {subscribers}
""",
        encoding="utf-8",
    )
    return path


class RunningSite:
    """The running daemon's web side, its SMTP server, and the state file."""

    def __init__(self, daemon: schedule.Daemon, smtp: SmtpServer, cfg: Path) -> None:
        self.daemon = daemon
        self.smtp = smtp
        self.cfg = cfg
        host, port = daemon.web.address
        self.root = f"http://{host}:{port}"

    @property
    def state(self) -> Path:
        return self.cfg.parent / "state.db"

    def drain(self) -> None:
        """Until every queued sign-up email reached the SMTP server."""
        self.daemon.outbox.drain()

    def mail_to(self, address: str) -> list[Received]:
        return [
            m for m in self.smtp.received if address.casefold() in map(str.casefold, m.rcpt_tos)
        ]

    def row(self, address: str) -> SubscriberRecord | None:
        with SqliteStore(self.state, read_only=True) as store:
            return store.subscriber_by_email(address)

    def rows(self) -> list[SubscriberRecord]:
        if not self.state.exists():
            return []
        with SqliteStore(self.state, read_only=True) as store:
            return list(store.subscribers())


@contextmanager
def running_site(
    folder: Path,
    *,
    signup: str = "",
    enabled: bool = True,
    subscribers: str = "[]",
    hf_url: str | None = None,
) -> Iterator[RunningSite]:
    """``hf_url``: the Hugging Face source's (a test server); without it, no source."""
    with SmtpServer() as smtp:
        web_port = free_port()
        cfg = write_config(
            folder,
            smtp.port,
            web_port,
            signup=signup,
            enabled=enabled,
            subscribers=subscribers,
            sources=(
                f"  huggingface:\n    base_url: {hf_url}\n    retries: 0\n"
                if hf_url
                else "  huggingface:\n    enabled: false\n"
            ),
        )
        daemon = schedule.Daemon(cfg, config.load(cfg), (KEY,), clock=FakeClock(NOW))
        daemon.start()
        try:
            yield RunningSite(daemon, smtp, cfg)
        finally:
            daemon.close()


def body_text(message: Received) -> str:
    msg = email.message_from_bytes(message.data, policy=email.policy.default)
    part = msg.get_body(("plain",))  # type: ignore[attr-defined]
    return str(part.get_content()) if part is not None else ""


def link(message: Received, kind: str) -> str:
    """The first /<kind>/<token> link in an email."""
    found = re.search(rf"https?://[^\s\"<>]+/{kind}/[A-Za-z0-9_.=-]+", body_text(message))
    assert found, body_text(message)
    return found.group(0)


class Visitor:
    """A browser without JavaScript: cookies, forms, and the client address a trusted proxy
    (127.0.0.1, the test) says it has."""

    def __init__(self, client: str = "198.51.100.7") -> None:
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        self.client = client

    def get(self, url: str) -> tuple[int, str]:
        return self._open(urllib.request.Request(url, method="GET"))

    def post(self, url: str, fields: dict[str, str | list[str]]) -> tuple[int, str]:
        data = urllib.parse.urlencode(fields, doseq=True).encode()
        req = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        return self._open(req)

    def _open(self, req: urllib.request.Request) -> tuple[int, str]:
        req.add_header("X-Forwarded-For", self.client)
        try:
            with self.opener.open(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def form_token(self, url: str) -> str:
        status, page = self.get(url)
        assert status == 200, page
        return form_token(page)

    def sign_up(
        self, root: str, address: str, topics: list[str], cadence: str = "daily", **extra: str
    ) -> tuple[int, str]:
        token = self.form_token(root + "/")
        fields: dict[str, str | list[str]] = {
            "form_token": token,
            "email": address,
            "topics": topics,
            "cadence": cadence,
            "website": "",
            **extra,
        }
        return self.post(root + "/subscribe", fields)


def form_token(page: str) -> str:
    found = re.search(r'name="form_token" value="([^"]+)"', page)
    assert found, page
    return html.unescape(found.group(1))


def env() -> dict[str, str]:
    return {**os.environ, "NEWSLETTER_SECRET": KEY.decode()}
