"""The one YAML file: schema, validation and operator-readable errors.

``load(path)`` returns a validated ``Config`` or raises ``ConfigError`` whose ``problems``
are lines of the form ``FILE:LINE: key.path: message`` (indexes from 0), e.g.
``subscribers.example.yaml:14: subscribers[2].topics[0]: unknown topic 'difusion'``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import sys
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from newsletter import collector, models
from newsletter.errors import ConfigError

DEFAULT_PATH = "newsletter.yaml"
ENV_VAR = "NEWSLETTER_CONFIG"

# Deliberately simple: one @, no spaces or angle brackets, a dotted domain. Deliverability
# is the SMTP server's call; this catches typos such as a missing @ or a trailing comma.
_EMAIL_RE = re.compile(
    r"^[^@\s<>(),;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)


def _check_email(value: str) -> str:
    value = value.strip()
    if not _EMAIL_RE.match(value):
        raise ValueError(f"invalid email address {value!r}")
    return value


#: An address as the config file accepts one (stripped), or ValueError: for the sign-up form.
check_email = _check_email

_LINE_BREAKS = {"\r": "a line break (CR)", "\n": "a line break (LF)", "\0": "a NUL character"}
_HEADER_PLAIN = re.compile(r"(?:[^\r\n\0=]|=(?!\?))*")  # no line break, no encoded word


def _header_text(value: str) -> str:
    """A value that goes into an email header: no CR, LF or NUL, also in its encoded words.

    The email package decodes RFC 2047 encoded words (``=?utf-8?q?=0D=0A...?=``) in a header
    value and, before Python 3.11.10, writes what it decodes as is: a new header line
    (CVE-2024-6923). The decoded text is checked too, however deep the words are nested.
    """
    if _HEADER_PLAIN.fullmatch(value):  # most values (every subscriber's email and name)
        return value
    from email.policy import default

    text, decoded = value, False
    while True:
        found = next((name for char, name in _LINE_BREAKS.items() if char in text), None)
        if found is not None:
            where = " once its RFC 2047 encoded words (=?...?=) are decoded" if decoded else ""
            raise ValueError(
                f"contains {found}{where}; a value that goes into an email header must be one line"
            )
        if "=?" not in text:
            return value
        inner = str(default.header_factory("subject", text))
        if len(inner) >= len(text):  # nothing decoded
            return value
        text, decoded = inner, True


#: A str that reaches an email header (Subject, From, To, List-Id, List-Unsubscribe).
HeaderText = Annotated[str, AfterValidator(_header_text)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_DNS_NAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*$"
)


class DkimSettings(_Model):
    """Sign every message: the public key is published at SELECTOR._domainkey.DOMAIN."""

    key_file: Annotated[str, Field(min_length=1)]  # PEM private key, relative to the config file
    selector: str
    domain: str

    @field_validator("selector", "domain")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not _DNS_NAME_RE.match(value):
            raise ValueError(f"not a DNS name: {value!r}")
        return value.lower()


class NewsletterSettings(_Model):
    title: HeaderText = "Trending Papers"
    from_: Annotated[HeaderText, Field(alias="from")] = "Trending Papers <papers@example.org>"
    base_url: HeaderText = "https://papers.example.org"
    secret_env: str = "NEWSLETTER_SECRET"
    state: str = "newsletter.db"  # a SQLite file, or a postgresql:// URL
    state_password_env: str = "NEWSLETTER_STATE_PASSWORD"
    templates_dir: str | None = None
    subject: HeaderText = "{title}: {papers} for {date}"
    dkim: DkimSettings | None = None
    alert_after_days: Annotated[int, Field(ge=1)] = 3
    description: str = ""  # a sentence or two under the title on the sign-up page

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        problem = state_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("from_")
    @classmethod
    def _from_address(cls, value: str) -> str:
        from email.utils import parseaddr

        _, addr = parseaddr(value)
        _check_email(addr or value)
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        match = re.match(r"^(https?)://(\[[^\]]+\]|[^/:\s]+)", value)
        if not match:
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        host = match.group(2).strip("[]")
        # One-click unsubscribe (RFC 8058) needs HTTPS; plain HTTP only for local trials.
        if match.group(1) == "http" and not is_loopback(host):
            raise ValueError(
                f"must be https:// (one-click unsubscribe needs it), got {value!r}; "
                "plain http is accepted only for a loopback host"
            )
        return value.rstrip("/")

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str, info: ValidationInfo) -> str:
        try:
            title = info.data.get("title", "")
            subject = value.format(title=title, count=1, papers="1 new paper", date="2024-01-01")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(
                f"bad subject template {value!r} ({e}); "
                "use {title}, {papers}, {count} and {date}"
            ) from None
        try:  # the title in the template: an encoded word may span both
            _header_text(subject)
        except ValueError as e:
            raise ValueError(f"with the title, the subject {e}") from None
        return value

    @property
    def from_address(self) -> str:
        from email.utils import parseaddr

        return parseaddr(self.from_)[1]

    @model_validator(mode="after")
    def _dkim_alignment(self) -> NewsletterSettings:
        # DMARC passes on DKIM only when the signing domain matches the From domain
        # (or is a parent of it); a mismatch signs every message for nothing.
        if self.dkim is not None:
            domain = self.from_address.rpartition("@")[2].lower()
            if domain != self.dkim.domain and not domain.endswith("." + self.dkim.domain):
                raise ValueError(
                    f"dkim.domain {self.dkim.domain!r} does not match the From domain {domain!r}"
                )
        return self


class HuggingFaceSettings(_Model):
    enabled: bool = True
    base_url: str = "https://huggingface.co"
    mode: Literal["api", "page"] = "api"  # api falls back to the page when the API fails
    timeout: Annotated[float, Field(gt=0)] = 30.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    # A bigger answer is a failed fetch, not read further (a daily list is well under 1 MB).
    max_response_bytes: Annotated[int, Field(ge=1024)] = 10_000_000

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


_CATEGORY_RE = re.compile(r"^[a-z-]+(\.[A-Za-z-]+)?$")  # cs.CL, stat.ML, hep-th


class ArxivSettings(_Model):
    enabled: bool = False
    categories: Annotated[list[str], Field(validate_default=True)] = []
    announce_types: Annotated[list[Literal["new", "cross", "replace"]], Field(min_length=1)] = [
        "new",
        "cross",
    ]
    api_url: str = "https://export.arxiv.org/api/query"
    rss_url: str = "https://rss.arxiv.org/rss"
    delay_seconds: Annotated[float, Field(ge=0)] = 3.0  # arXiv asks for 3 s between requests
    timeout: Annotated[float, Field(gt=0)] = 30.0
    retries: Annotated[int, Field(ge=0, le=10)] = 3
    max_response_bytes: Annotated[int, Field(ge=1024)] = 10_000_000

    @field_validator("categories")
    @classmethod
    def _categories(cls, value: list[str], info: ValidationInfo) -> list[str]:
        for cat in value:
            if not _CATEGORY_RE.match(cat):
                raise ValueError(f"not an arXiv category like cs.CL: {cat!r}")
        if info.data.get("enabled") and not value:
            raise ValueError("list at least one category (e.g. [cs.CL]) when arXiv is enabled")
        return value

    @field_validator("api_url", "rss_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.rstrip("/")


class Sources(_Model):
    huggingface: HuggingFaceSettings = HuggingFaceSettings()
    arxiv: ArxivSettings = ArxivSettings()
    # All the fetching of one run, every source and retry included: a hung or trickling
    # server must not hold the run (and the send lock) for longer.
    fetch_deadline_seconds: Annotated[float, Field(gt=0)] = 300.0


class Smtp(_Model):
    host: str = "localhost"
    port: Annotated[int, Field(ge=1, le=65535)] = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    allow_insecure: bool = False
    ca_file: str | None = None
    username: str | None = None
    password_env: str = "NEWSLETTER_SMTP_PASSWORD"
    bounce_address: HeaderText | None = None  # envelope sender (MAIL FROM); default: From
    connections: Annotated[int, Field(ge=1, le=64)] = 4
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    daily_cap: Annotated[int, Field(ge=1)] | None = None
    claim_lease_seconds: Annotated[float, Field(ge=5)] = 120
    timeout: Annotated[float, Field(gt=0)] = 30.0
    connect_timeout: Annotated[float, Field(gt=0)] = 10.0
    max_retries: Annotated[int, Field(ge=0, le=20)] = 3
    retry_backoff: Annotated[float, Field(ge=0)] = 2.0
    max_deferrals: Annotated[int, Field(ge=0, le=100)] = 3
    helo_name: str | None = None  # default: the machine's FQDN if it has a dot, else From's domain

    @field_validator("bounce_address")
    @classmethod
    def _bounce(cls, value: str | None) -> str | None:
        return None if value is None else _check_email(value)

    @field_validator("helo_name")
    @classmethod
    def _helo(cls, value: str | None) -> str | None:
        literal = r"\[(?:IPv6:)?[0-9A-Fa-f:.]+\]"  # an address literal (RFC 5321 4.1.3)
        if value is None or _DNS_NAME_RE.fullmatch(value) or re.fullmatch(literal, value):
            return value
        raise ValueError(f"not a host name or an address literal such as [192.0.2.1]: {value!r}")

    @model_validator(mode="after")
    def _no_plaintext_over_the_network(self) -> Smtp:
        if self.security == "none" and not self.allow_insecure and not is_loopback(self.host):
            raise ValueError(
                f"security: none sends mail unencrypted to {self.host}; use starttls or tls, "
                "or set allow_insecure: true"
            )
        return self


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address: plain SMTP and plain HTTP are accepted there."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_time(text: str) -> dt.time:
    """``HH:MM`` or ``HH:MM:SS`` (24 h)."""
    for fmt in ("%H:%M", "%H:%M:%S"):
        try:
            return dt.datetime.strptime(text, fmt).time()
        except ValueError:
            continue
    raise ValueError(f"expected HH:MM (24 h), got {text!r}")


def _check_timezone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {value!r}") from None
    return value


def _check_time(value: str) -> str:
    parse_time(value)
    return value


class Schedule(_Model):
    daily_at: str = "08:00"  # local time of each subscriber
    weekly_on: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    grace_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 360

    @field_validator("daily_at")
    @classmethod
    def _daily_at(cls, value: str) -> str:
        return _check_time(value)

    @property
    def daily_time(self) -> dt.time:
        return parse_time(self.daily_at)


class Server(_Model):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8025
    # Whose X-Forwarded-For to believe (addresses or networks): the reverse proxy's. Anyone
    # else's header is ignored, or a client could claim any address to dodge the limits.
    trusted_proxies: list[str] = []
    # A request must arrive in full (headers and body) within this many seconds of the
    # connection (or of the previous response): slow or idle clients cannot hold the server.
    request_timeout: Annotated[float, Field(gt=0, le=300)] = 10

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return value

    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies]


# An IMAP folder name as we write it: printable ASCII without quotes, backslashes, wildcards or
# "&" (which starts IMAP's UTF-7 for other characters).
_FOLDER_RE = re.compile(r"^[ !#$'-)+-\[\]-~]+$")


class ImapSettings(_Model):
    """The mailbox bounces, complaints and mailto unsubscribes arrive in, read by ``serve``."""

    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65535)] | None = None  # default: 993 for tls, else 143
    security: Literal["tls", "starttls", "none"] = "tls"
    allow_insecure: bool = False
    username: Annotated[str, Field(min_length=1)]
    password_env: str = "NEWSLETTER_IMAP_PASSWORD"
    folder: str = "INBOX"
    after: Literal["move", "delete"] = "move"
    processed: str = "processed"  # the folder handled messages are moved to (made if missing)
    timeout: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("folder", "processed")
    @classmethod
    def _folder(cls, value: str) -> str:
        if not _FOLDER_RE.match(value):
            raise ValueError(
                f"not a folder name (ASCII without quotes, backslashes, &, * or %): {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _no_plaintext_over_the_network(self) -> ImapSettings:
        if self.security == "none" and not self.allow_insecure and not is_loopback(self.host):
            raise ValueError(
                f"security: none sends the password unencrypted to {self.host}; use tls or "
                "starttls, or set allow_insecure: true"
            )
        if self.after == "move" and self.processed == self.folder:
            raise ValueError(f"processed must be another folder than folder ({self.folder!r})")
        return self

    @property
    def port_number(self) -> int:
        return self.port or (993 if self.security == "tls" else 143)


class InboundSettings(_Model):
    """What bounces and complaints do (``newsletter inbound``, the IMAP poll of ``serve``)."""

    soft_bounces: Annotated[int, Field(ge=1, le=1000)] = 3  # other failures that make it bounced
    soft_days: Annotated[int, Field(ge=1, le=365)] = 14  # ... when they fall within this many days
    poll_minutes: Annotated[float, Field(gt=0, le=24 * 60)] = 5.0
    imap: ImapSettings | None = None


_ALNUM = re.compile(r"[^\W_]")  # a character str.isalnum() says yes to


def _check_term(value: str) -> str:
    # A term of punctuation only ("-") matches between any two non-letters: everywhere.
    if not _ALNUM.search(value):
        raise ValueError(f"{value!r} has no letter or digit to match")
    return value


Term = Annotated[str, Field(min_length=1), AfterValidator(_check_term)]


class TopicSettings(_Model):
    name: str | None = None  # what the email calls the topic; None: its key (the slug)
    public: bool = True  # shown in the archive, its feeds and the sign-up form
    description: str = ""  # what the sign-up page says about it
    keywords: list[Term] = []
    exclude: list[Term] = []
    authors: list[Term] = []
    organizations: list[Term] = []
    categories: list[Term] = []

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out to show the topic's key)")
        if value is not None and not value.isprintable():
            raise ValueError(f"must be one line of printable text, got {value!r}")
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _something_to_match(self) -> TopicSettings:
        if not (self.keywords or self.authors or self.organizations or self.categories):
            raise ValueError("a topic needs keywords, authors, organizations or categories")
        return self


_DEFAULT_WEIGHTS = models.Weights()


class ArchiveSettings(_Model):
    """The public archive: a page per day and topic, Atom feeds (``web.archive``)."""

    enabled: bool = False  # digests link to their day's page; ``serve`` serves the pages
    feed_entries: Annotated[int, Field(ge=1, le=500)] = 50  # the newest papers in a feed


class WeightSettings(_Model):
    upvotes: Annotated[float, Field(ge=0)] = _DEFAULT_WEIGHTS.upvotes
    velocity: Annotated[float, Field(ge=0)] = _DEFAULT_WEIGHTS.velocity
    match: Annotated[float, Field(ge=0)] = _DEFAULT_WEIGHTS.match
    half_life_days: Annotated[float, Field(ge=0)] = _DEFAULT_WEIGHTS.half_life_days


class SelectionSettings(_Model):
    max_age_days: Annotated[int, Field(ge=1, le=60)] = 7
    send_empty: bool = False
    trending_count: Annotated[int, Field(ge=0, le=50)] = 3
    weights: WeightSettings = WeightSettings()

    def weights_model(self) -> models.Weights:
        w = self.weights
        return models.Weights(w.upvotes, w.velocity, w.match, w.half_life_days)


class SubscriberSettings(_Model):
    email: HeaderText
    name: HeaderText | None = None
    topics: Annotated[list[str], Field(min_length=1)]
    cadence: Literal["daily", "weekly"] = "daily"
    max_papers: Annotated[int, Field(ge=1, le=100)] = 10
    min_upvotes: Annotated[int, Field(ge=0)] = 0
    timezone: str = "UTC"
    # A factory, not `= []`: pydantic deep-copies a mutable default for every subscriber
    # (a fifth of validating 20,000 of them).
    keywords: list[Term] = Field(default_factory=list)
    exclude: list[Term] = Field(default_factory=list)
    sections: bool = False
    send_at: str | None = None  # overrides schedule.daily_at

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str | None) -> str | None:
        return None if value is None else _check_time(value)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str) -> str:
        return _check_email(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _check_timezone(value)


class SignupDefaults(_Model):
    """What a reader who signs up on the page gets until they change it."""

    timezone: str = "UTC"
    send_at: str | None = None  # HH:MM local; None: schedule.daily_at
    max_papers: Annotated[int, Field(ge=1, le=100)] = 10
    min_upvotes: Annotated[int, Field(ge=0)] = 0

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        return _check_timezone(value)

    @field_validator("send_at")
    @classmethod
    def _send_at(cls, value: str | None) -> str | None:
        return None if value is None else _check_time(value)


class SignupSettings(_Model):
    """Readers who sign up themselves (the public pages of ``serve``), and the abuse limits."""

    enabled: bool = False
    # A confirmation link works this long; a sign-up not confirmed by then is purged.
    confirm_hours: Annotated[int, Field(ge=1, le=24 * 30)] = 48
    defaults: SignupDefaults = SignupDefaults()
    # Sign-ups one client address may post in an hour; more get a 429 page.
    per_client_per_hour: Annotated[int, Field(ge=1)] = 10
    # Sign-ups waiting for their confirmation, in all; more get no mail until some clear.
    max_pending: Annotated[int, Field(ge=1)] = 1000


class Config(_Model):
    newsletter: NewsletterSettings = NewsletterSettings()
    sources: Sources = Sources()
    smtp: Smtp = Smtp()
    selection: SelectionSettings = SelectionSettings()
    schedule: Schedule = Schedule()
    server: Server = Server()
    archive: ArchiveSettings = ArchiveSettings()
    signup: SignupSettings = SignupSettings()
    inbound: InboundSettings = InboundSettings()
    topics: dict[str, TopicSettings]
    # Where the file was read from; relative paths in it are relative to its folder.
    _path: Path = PrivateAttr(default=Path(DEFAULT_PATH))
    # The file's ``subscribers``, each validated as a ``SubscriberSettings`` and kept as the
    # ``models.Subscriber`` a run mails: a pydantic model apiece held ~0.9 KB more a
    # subscriber (~90 MB of 100,000) for the whole command.
    _subscribers: list[models.Subscriber] = PrivateAttr(default_factory=list)

    @property
    def subscribers(self) -> list[models.Subscriber]:
        """The file's subscribers, in its order."""
        return self._subscribers

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    @property
    def state_path(self) -> Path:
        return self.base_dir / self.newsletter.state

    @property
    def state_url(self) -> str | None:
        """The PostgreSQL URL ``newsletter.state`` names, or None: a SQLite file."""
        state = self.newsletter.state
        return state if state.startswith(POSTGRES_SCHEMES) else None

    @property
    def state_location(self) -> str | Path:
        """What ``store.open_store`` opens: the URL, or the file's path."""
        return self.state_url or self.state_path

    @property
    def templates_path(self) -> Path | None:
        tdir = self.newsletter.templates_dir
        return None if tdir is None else self.base_dir / tdir

    def topic_models(self) -> dict[str, models.Topic]:
        return {
            name: models.Topic(
                name=name,
                display_name=t.name,
                keywords=tuple(t.keywords),
                exclude=tuple(t.exclude),
                authors=tuple(t.authors),
                organizations=tuple(t.organizations),
                categories=tuple(t.categories),
            )
            for name, t in self.topics.items()
        }

    def public_topics(self) -> dict[str, models.Topic]:
        """The topics anyone may see (``topics.<slug>.public``): the archive's, the feeds'
        and the sign-up form's."""
        topics = self.topic_models()
        return {slug: topics[slug] for slug, t in self.topics.items() if t.public}

    def topic_names(self) -> dict[str, str]:
        """The display name of each topic that has one, by slug (``topics.<slug>.name``)."""
        return {slug: t.name for slug, t in self.topics.items() if t.name}

    def subscriber_models(self) -> list[models.Subscriber]:
        return list(self._subscribers)


def default_path() -> str:
    return os.environ.get(ENV_VAR) or DEFAULT_PATH


def load(path: str | os.PathLike[str]) -> Config:
    """Read, parse and validate the config file, or raise ConfigError listing every problem."""
    shown = os.fspath(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            shown, [f"{shown}: no such file (pass -c FILE or set ${ENV_VAR})"]
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(shown, [f"{shown}: cannot read: {e}"]) from e
    return parse(text, shown, path=Path(path))


def parse(text: str, shown: str, *, path: Path | None = None) -> Config:
    # The node tree and the raw data are freed when _parse returns, before the collector
    # is back: it never walks them.
    with collector.paused():
        return _parse(text, shown, path)


def _parse(text: str, shown: str, path: Path | None) -> Config:
    root: yaml.Node | None = None
    try:
        data = _data(text)
        if data is _UNREAD:
            root = _compose(text)
            data = _construct(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise ConfigError(shown, [f"{shown}:{line}: yaml: {e.problem or e}"]) from e
    except yaml.YAMLError as e:
        raise ConfigError(shown, [f"{shown}:1: yaml: {e}"]) from e
    except RecursionError:  # the YAML reader recurses once per level
        line = _too_deep(text)
        raise ConfigError(
            shown, [f"{shown}:{line}: yaml: nested more than {_MAX_DEPTH} levels deep"]
        ) from None
    except ValueError as e:  # a scalar YAML cannot make a value of: 5,001 digits, 2024-02-30
        problems = [_problem(shown, root, loc, msg) for loc, msg in _unreadable_scalars(root)]
        raise ConfigError(shown, [line for _, line in problems] or [f"{shown}:1: yaml: {e}"]) from e
    if not isinstance(data, dict):
        raise ConfigError(shown, [f"{shown}:1: (top level): expected a mapping of settings"])

    found = list(_semantic_problems(data))  # (key path, message)
    listed = data.pop("subscribers", [])
    try:
        config = Config.model_validate(data)
    except ValidationError as e:
        found += [_located(err) for err in e.errors()]
        config = None
    subscribers, wrong = _subscribers(listed)
    found += wrong
    del listed
    if config is not None and not wrong:
        config._subscribers = subscribers
        config._path = path or Path(shown)
        templates = config.templates_path
        if templates is not None and not templates.is_dir():
            found.append((("newsletter", "templates_dir"), f"no such folder {str(templates)!r}"))
        state = None if config.state_url else state_path_problem(config.state_path)
        if state is not None:
            found.append((("newsletter", "state"), f"{config.state_path}: {state}"))
        if config.smtp.ca_file and not (config.base_dir / config.smtp.ca_file).is_file():
            missing = str(config.base_dir / config.smtp.ca_file)
            found.append((("smtp", "ca_file"), f"no such file {missing!r}"))
    if found or config is None:  # no config without a problem found
        del data
        if root is None:  # the lines of the problems: only a file with problems is read again
            root = _compose(text)
        problems = [_problem(shown, root, loc, msg) for loc, msg in found]
        problems.sort(key=lambda p: p[0])
        raise ConfigError(shown, [line for _, line in problems])
    return config


#: Subscribers validated at a time: one call of pydantic's for many (a call costs), and the
#: models of only so many in memory at once.
_CHUNK = 500
_SUBSCRIBER_LIST: TypeAdapter[list[SubscriberSettings]] = TypeAdapter(list[SubscriberSettings])


def _subscribers(
    listed: Any,
) -> tuple[list[models.Subscriber], list[tuple[tuple[Any, ...], str]]]:
    """The file's ``subscribers``, validated as ``SubscriberSettings`` (pydantic's errors,
    located as if the list were validated within the ``Config``, whose last field it was)
    and kept as ``models.Subscriber``; ``listed``'s entries are dropped as they are read."""
    out: list[models.Subscriber] = []
    wrong: list[tuple[tuple[Any, ...], str]] = []
    if not isinstance(listed, list):  # pydantic's word on it
        try:
            _SUBSCRIBER_LIST.validate_python(listed)
        except ValidationError as e:
            return [], [
                (("subscribers", *loc), message) for loc, message in map(_located, e.errors())
            ]
        listed = list(listed)
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}  # a topic list is one tuple, not one each
    for start in range(0, len(listed), _CHUNK):
        chunk = listed[start : start + _CHUNK]
        listed[start : start + _CHUNK] = [None] * len(chunk)
        try:
            settings = _SUBSCRIBER_LIST.validate_python(chunk)
        except ValidationError as e:
            for err in e.errors():
                loc, message = _located(err)
                wrong.append((("subscribers", start + loc[0], *loc[1:]), message))
            continue
        if wrong:
            continue  # no config is made: its subscribers are not either
        for s in settings:
            topics = tuple(s.topics)
            out.append(
                models.Subscriber(
                    email=s.email,
                    name=s.name,
                    topics=shared.setdefault(topics, topics),
                    cadence=s.cadence,
                    max_papers=s.max_papers,
                    min_upvotes=s.min_upvotes,
                    timezone=s.timezone,
                    keywords=tuple(s.keywords),
                    exclude=tuple(s.exclude),
                    sections=s.sections,
                    send_at=parse_time(s.send_at) if s.send_at else None,
                )
            )
    return out, wrong


_MAX_DEPTH = 64  # a config is a few levels deep; the YAML reader's recursion gives out deeper

# libyaml's composer, when PyYAML was built with it: ~15x faster than the pure-Python one.
_FAST_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


_UNREAD = object()  # what _data returns for a text it leaves to the node tree


def _data(text: str) -> Any:
    """What ``yaml.safe_load`` makes of ``text``, straight from libyaml's events: no node tree
    (~300 bytes a scalar, 330 MB for 100,000 subscribers) is built on the way.

    Only plain mappings, sequences and scalars: anything else (an anchor, an alias, a tag
    written out, a merge key, more than one document) and any problem return ``_UNREAD``,
    for the node tree, whose answers and error lines are PyYAML's own.
    """
    if _FAST_LOADER is None:
        return _UNREAD
    loader = _FAST_LOADER(text)
    try:
        return _from_events(loader)
    except (_Unusual, yaml.YAMLError, ValueError):
        return _UNREAD
    finally:
        loader.dispose()


def _from_events(loader: yaml.CSafeLoader) -> Any:
    pyyaml = yaml.constructor.SafeConstructor()
    resolve: Callable[..., str] = loader.resolve
    # The resolver's answer is "str" without trying a pattern for a quoted scalar and for a
    # plain one whose first character starts none of its patterns: most of a subscriber's
    # values (emails, names, topics). Asked only for the others (~10% of the events' CPU).
    firsts = frozenset(loader.yaml_implicit_resolvers)
    quick = None not in firsts and not loader.yaml_path_resolvers
    # Each open collection: [the list or dict, the key read and waiting for its value].
    stack: list[list[Any]] = []
    top: Any = _UNREAD
    documents = 0
    no_key = _UNREAD
    # Bound once: this loop runs for every scalar of the file (170,000 at 20,000 subscribers).
    get_event, scalar_event, str_tag, intern = loader.get_event, yaml.ScalarEvent, _STR, sys.intern
    while True:
        event: Any = get_event()
        kind = type(event)
        if kind is scalar_event:
            if event.anchor is not None or event.tag not in (None, "!"):
                raise _Unusual
            text = event.value
            plain = event.implicit[0]
            if quick and (not plain or (text and text[0] not in firsts)):
                value: Any = text
            elif (tag := resolve(yaml.ScalarNode, text, event.implicit)) == str_tag:
                value = text
            else:
                node = yaml.ScalarNode(tag, text, event.start_mark, event.end_mark)
                value = pyyaml.construct_object(node, deep=True)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            if event.anchor is not None or event.tag not in (None, "!"):
                raise _Unusual
            if len(stack) == _MAX_DEPTH:
                raise RecursionError  # what the node tree's readers run into, deeper
            stack.append([{} if kind is yaml.MappingStartEvent else [], no_key])
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            value = stack.pop()[0]
        elif kind is yaml.DocumentStartEvent:
            documents += 1
            if documents > 1:
                raise _Unusual  # PyYAML's error: expected a single document
            continue
        elif kind is yaml.StreamEndEvent:
            return None if top is _UNREAD else top
        elif kind in (yaml.StreamStartEvent, yaml.DocumentEndEvent):
            continue
        else:  # an alias
            raise _Unusual
        if not stack:
            top = value
            continue
        parent = stack[-1]
        container = parent[0]
        if type(container) is list:
            # A list's strings (topics, keywords) repeat from subscriber to subscriber: one
            # object each, not one per subscriber (~20 MB of 100,000 subscribers' topics).
            container.append(intern(value) if type(value) is str else value)
        elif parent[1] is no_key:
            if type(value) is not str and not isinstance(value, int | float | bool | None):
                raise _Unusual  # unhashable or a date: PyYAML's way
            if value == "<<" or value == "=":
                raise _Unusual  # a merge or value key: PyYAML's way
            parent[1] = value
        else:
            container[parent[1]] = value
            parent[1] = no_key


def _compose(text: str) -> yaml.Node | None:
    """The node tree, for the data and its line numbers: the text is parsed once.

    libyaml composes when it can; on a problem the pure-Python reader reads the text again,
    so that what the operator is told (pinned by the tests) is in its words.
    """
    if _FAST_LOADER is not None:
        try:
            return yaml.compose(text, Loader=_FAST_LOADER)
        except yaml.YAMLError:
            pass
    return yaml.compose(text, Loader=yaml.SafeLoader)


_TAG = "tag:yaml.org,2002:"
_STR, _SEQ, _MAP = f"{_TAG}str", f"{_TAG}seq", f"{_TAG}map"


class _Unusual(Exception):
    """A node the short way does not build (an alias, a merge key): PyYAML's way does."""


def _construct(root: yaml.Node | None) -> Any:
    """What ``yaml.safe_load`` makes of the text ``root`` was composed from.

    Text, lists and mappings are built here, three times faster than PyYAML's constructor
    (the bulk of a file of subscribers); every other scalar is its constructor's. A tree
    with an alias or a merge key is left to it whole.
    """
    if root is None:
        return None
    pyyaml = yaml.constructor.SafeConstructor()
    seen: set[int] = set()

    def build(node: yaml.Node) -> Any:
        tag = node.tag
        if isinstance(node, yaml.ScalarNode):
            return node.value if tag == _STR else pyyaml.construct_object(node, deep=True)
        if id(node) in seen:
            raise _Unusual
        seen.add(id(node))
        if tag == _SEQ and isinstance(node, yaml.SequenceNode):
            return [build(item) for item in node.value]
        if tag == _MAP and isinstance(node, yaml.MappingNode):
            out = {}
            for key_node, value_node in node.value:
                if key_node.tag in (f"{_TAG}merge", f"{_TAG}value"):
                    raise _Unusual
                key = build(key_node)
                if not isinstance(key, str | int | float | bool | None):
                    raise _Unusual  # unhashable, or a date: PyYAML says what it makes of it
                out[key] = build(value_node)
            return out
        return pyyaml.construct_object(node, deep=True)

    try:
        return build(root)
    except _Unusual:
        return yaml.constructor.SafeConstructor().construct_document(root)


def _too_deep(text: str) -> int:
    """The line where ``text`` is nested more than ``_MAX_DEPTH`` deep (events do not recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > _MAX_DEPTH:
                return event.start_mark.line + 1 if event.start_mark else 1
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    return 1


def _unreadable_scalars(root: yaml.Node | None) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """The scalars that YAML recognises but cannot construct, with their key paths."""
    constructor = yaml.SafeLoader("")
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())] if root else []
    while stack:
        node, loc = stack.pop()
        if isinstance(node, yaml.MappingNode):
            stack += [(value, (*loc, str(key.value))) for key, value in node.value]
            stack += [(key, (*loc, str(key.value))) for key, _ in node.value]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(item, (*loc, i)) for i, item in enumerate(node.value)]
        elif isinstance(node, yaml.ScalarNode):
            try:
                constructor.construct_object(node)
            except ValueError as e:
                if node.tag == "tag:yaml.org,2002:int":
                    yield loc, f"a number of {len(node.value)} digits is too long"
                else:
                    yield loc, f"YAML cannot read {node.value!r} ({e}); put it in quotes"


def _located(err: Any) -> tuple[tuple[Any, ...], str]:
    """Where an error is and what it says; a key YAML read as a number is named as written."""
    loc = tuple(err["loc"])
    if loc[-1:] == ("[key]",):
        key = err["input"]
        return (
            (*loc[:-2], str(key), "[key]"),
            f"YAML reads this name as {type(key).__name__} {key!r}, not text; put it in quotes",
        )
    return loc, _message(err)


#: A ``newsletter.state`` with one of these schemes is a PostgreSQL database.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def state_url_problem(value: str) -> str | None:
    """Why ``value`` is no usable state URL, or None (also for a file's path). The message
    never repeats a password the URL carries."""
    if "://" not in value:
        return None
    if not value.startswith(POSTGRES_SCHEMES):
        scheme = value.split("://", 1)[0]
        return f"{scheme!r} URLs are not supported: a postgresql:// URL or a SQLite file's path"
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018  # raises on a port that is no number
    except ValueError:
        return "the URL's port is not a number (postgresql://user@host:5432/dbname)"
    if parts.password is not None:
        return (
            "the URL carries a password: put it in the environment variable that "
            "newsletter.state_password_env names (or libpq's PGPASSWORD or ~/.pgpass)"
        )
    name = parts.path.lstrip("/")
    if not name or "/" in name:
        return "the URL names no database (postgresql://user@host:5432/dbname)"
    return None


def state_path_problem(path: Path) -> str | None:
    """Why ``path`` can be no state file, whoever runs it, or None. Every command refuses it
    rather than make a folder: a mistyped path would start an empty state, unseen."""
    if path.exists() and not path.is_file():
        return "not a file"
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        return f"its folder {folder} is not a folder"
    if not folder.is_dir():
        return f"its folder {folder} does not exist"
    return None


def _message(err: Any) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{err['msg'].lower()}, got {err['input']!r}"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {err['input']!r}"


def _semantic_problems(data: dict[str, Any]) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """Checks that span keys (topic references, duplicate subscribers).

    They run on the raw data, beside pydantic's checks, so that one pass reports everything;
    entries of the wrong shape are left to pydantic's messages.
    """
    topics = data.get("topics")
    known = {str(name) for name in topics} if isinstance(topics, dict) else set()
    yield from _topic_name_problems(topics)
    yield from _archive_slug_problems(data.get("archive"), topics)
    subscribers = data.get("subscribers")
    if not isinstance(subscribers, list):
        return
    seen: dict[str, int] = {}
    for i, sub in enumerate(subscribers):
        if not isinstance(sub, dict):
            continue
        sub_topics = sub.get("topics")
        if isinstance(sub_topics, list) and isinstance(topics, dict):
            for j, topic in enumerate(sub_topics):
                if isinstance(topic, str) and topic not in known:
                    names = ", ".join(sorted(known)) or "none defined"
                    yield (
                        ("subscribers", i, "topics", j),
                        f"unknown topic {topic!r} (known: {names})",
                    )
        email = sub.get("email")
        if isinstance(email, str):
            key = email.strip().casefold()
            if key in seen:
                yield (
                    ("subscribers", i, "email"),
                    f"duplicate subscriber {email!r} (also subscribers[{seen[key]}])",
                )
            else:
                seen[key] = i


def _topic_name_problems(topics: object) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """Two topics shown under one name would share a section heading: refuse it."""
    if not isinstance(topics, dict):
        return
    reserved = (models.TRENDING_SECTION, models.RISING_SECTION, models.PERSONAL_SECTION)
    named: dict[str, str] = {}  # slug -> its name, for the topics that have one
    slugs: dict[str, list[str]] = {}  # what prose calls a topic -> the topics called so
    for slug, topic in topics.items():
        name = topic.get("name") if isinstance(topic, dict) else None
        if isinstance(name, str) and name.strip():
            named[str(slug)] = name.strip()
        slugs.setdefault(named.get(str(slug), str(slug)), []).append(str(slug))
    for slug, name in named.items():
        others = [s for s in slugs[name] if s != slug]
        if name in reserved:
            yield ("topics", slug, "name"), f"{name!r} is a heading of its own in the digest"
        elif others:
            yield ("topics", slug, "name"), f"{name!r} is also what topic {others[0]!r} is called"


#: What a public topic's slug may be when the archive is on: it names a URL path and a file.
ARCHIVE_SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?")


def _archive_slug_problems(
    archive: object, topics: object
) -> Iterable[tuple[tuple[str | int, ...], str]]:
    """With the archive on, each public topic's key is in a URL and a file name: refuse one
    that cannot be (spaces, slashes, capitals, dots)."""
    if not (isinstance(archive, dict) and archive.get("enabled") is True):
        return
    if not isinstance(topics, dict):
        return
    for slug, topic in topics.items():
        public = topic.get("public", True) if isinstance(topic, dict) else True
        if public is not False and not ARCHIVE_SLUG_RE.fullmatch(str(slug)):
            yield (
                ("topics", str(slug), "[key]"),
                f"{str(slug)!r} names the topic's archive page and feed (/topics/<key>/): "
                "use lower-case letters, digits, - and _ (or set public: false)",
            )


def format_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # the key itself, not its value
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + ("from" if part == "from_" else str(part))
    return out or "(top level)"


def _problem(
    shown: str, root: yaml.Node | None, loc: tuple[Any, ...], message: str
) -> tuple[int, str]:
    line = _line_of(root, loc)
    return line, f"{shown}:{line}: {format_path(loc)}: {message}"


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The 1-based line of the deepest YAML node on the path ``loc``."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for i, part in enumerate(loc):
        if part == "from_":
            part = "from"
        nxt: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part) and loc[i + 1 : i + 2] == ("[key]",):
                    return int(key.start_mark.line) + 1
                if key.value == str(part):
                    # An unknown key is best shown on its own line, a value on the value's.
                    nxt = value if not isinstance(value, yaml.ScalarNode) or value.value else key
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            nxt = node.value[part]
        if nxt is None:
            break
        node = nxt
        line = node.start_mark.line + 1
    return line
