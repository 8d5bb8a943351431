"""Who the newsletter is: what every email shows, who it is from, how it is signed.

``load_masthead(config)`` is the edge of the compose stage: it reads the DKIM key file once
per run, the way the composer reads the templates. dkimpy stamps the signature's ``t=`` tag
with the current time itself; that is the one clock read in composing, and it is the library's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import TYPE_CHECKING

from newsletter.compose.headers import one_line
from newsletter.errors import ConfigError

if TYPE_CHECKING:
    from newsletter.config import Config

#: Signed into ``h=``. Headers listed twice are "oversigned": a header of that name added
#: on the way (a second From, a forged List-Unsubscribe) breaks the signature.
DKIM_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "From",
    "Subject",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
)


@dataclass(frozen=True, slots=True)
class DkimKey:
    """How messages are signed (``newsletter.dkim``); read by ``load_masthead``."""

    selector: str
    domain: str
    private_key: bytes  # PEM, as dkimpy reads it

    def sign(self, data: bytes) -> bytes:
        """Prepend a DKIM-Signature over the final bytes (relaxed/relaxed, rsa-sha256)."""
        import dkim  # here: a compose worker that does not sign starts ~50 ms sooner

        present = {
            m.group(1).lower()
            for m in re.finditer(rb"^([A-Za-z0-9-]+):", data.split(b"\r\n\r\n", 1)[0], re.M)
        }
        headers = [h.encode() for h in DKIM_HEADERS if h.lower().encode() in present]
        signature: bytes = dkim.sign(
            data,
            self.selector.encode(),
            self.domain.encode(),
            self.private_key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=headers,
            linesep=b"\r\n",
        )
        return signature + data


@dataclass(frozen=True, slots=True)
class Masthead:
    """Per-installation values every email shows and is sent with: made from the config by
    ``load_masthead``, read by the composer (templates, headers, signature)."""

    title: str  # the newsletter's name; also the List-Id phrase
    base_url: str  # where its pages live (unsubscribe links)
    from_header: str  # "Trending Papers <papers@example.org>"
    list_id: str  # "trending-papers.papers.example.org"
    subject_template: str  # "{title}: {papers} for {date}"
    #: What prose calls a topic (``topics.<slug>.name``), by slug; a topic not here: its slug.
    topic_names: Mapping[str, str] = field(default_factory=dict)
    bounce_address: str | None = None  # envelope sender (MAIL FROM); None: the From address
    dkim: DkimKey | None = None
    #: The public archive's day pages live under it (``archive.enabled``); None: no archive,
    #: and the digest links to none.
    archive_url: str | None = None
    #: The From address (also the operator's, in the footer); read per message, so kept.
    address: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", parseaddr(self.from_header)[1])

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]

    @property
    def envelope_from(self) -> str:
        return self.bounce_address or self.address

    @property
    def list_phrase(self) -> str:
        """The List-Id phrase: the title when it is plain ASCII words, else the list label."""
        name = one_line(self.title)
        if name and "=?" not in name and re.fullmatch(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]+", name):
            return name
        return self.list_id.split(".")[0]

    def topic_labels(self, topics: tuple[str, ...]) -> tuple[str, ...]:
        """The topics as the email names them (the template's ``topics``)."""
        names = self.topic_names
        return tuple([names.get(t, t) for t in topics]) if names else topics


def list_id(title: str, domain: str) -> str:
    slug = (
        "-".join("".join(c if c.isalnum() and c.isascii() else " " for c in title.lower()).split())
        or "newsletter"
    )
    return f"{slug}.{domain}"


def load_masthead(config: Config) -> Masthead:
    """The run's Masthead from the config; reads and tries the DKIM key (I/O, once per run)."""
    settings = config.newsletter
    domain = settings.from_address.rpartition("@")[2]
    key: DkimKey | None = None
    if settings.dkim is not None:
        path = config.base_dir / settings.dkim.key_file
        where = f"{config.path}: newsletter.dkim.key_file"
        try:
            pem = path.read_bytes()
        except OSError as e:
            raise ConfigError(
                str(config.path), [f"{where}: cannot read {path}: {e.strerror or e}"]
            ) from e
        key = DkimKey(settings.dkim.selector, settings.dkim.domain, pem)
        try:
            key.sign(b"From: a@b.example\r\n\r\nkey check\r\n")
        except Exception as e:  # dkimpy raises several unrelated types for a bad key
            raise ConfigError(
                str(config.path), [f"{where}: {path} is not a usable DKIM private key: {e}"]
            ) from e
    return Masthead(
        title=settings.title,
        base_url=settings.base_url,
        from_header=settings.from_,
        list_id=list_id(settings.title, domain),
        subject_template=settings.subject,
        topic_names=config.topic_names(),
        bounce_address=config.smtp.bounce_address,
        dkim=key,
        archive_url=f"{settings.base_url}/archive" if config.archive.enabled else None,
    )
