"""The archive as documents, by path: what ``newsletter serve`` answers and what
``newsletter archive build --out DIR`` writes.

    site  = ArchiveSite.from_config(config)
    doc   = site.document(store, "archive/2026-05-08/index.html")  -> Document | None
    docs  = site.build(store)                         every file of a static build, by path
    reply = respond(doc, If-None-Match, If-Modified-Since)          200 or 304, ETag, Last-Modified

The files: ``archive/index.html`` (the days, newest first), ``archive/<day>/index.html``,
``topics/<slug>/index.html``, ``topics/<slug>.atom``, ``feed.atom`` and the stylesheet
``archive/style.css``. Pages link to each other with relative paths ending in
``index.html``, so a build works from file:// and under any path of any web server; a
server answers ``/archive/2026-05-08/`` with that day's ``index.html``. A document is its
bytes: the same store gives the same bytes (``updated`` and Last-Modified come from the
upvote snapshots, never the clock), and the ETag is a hash of them. Only public topics
(``topics.<slug>.public``) appear; no subscriber's data is read.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import logging
import re
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import jinja2

from newsletter.errors import NewsletterError, TemplateError
from newsletter.models import PaperData, Topic, Weights
from newsletter.store import Store
from newsletter.web import atom
from newsletter.web.archive import (
    Archive,
    ArchiveDay,
    ArchiveEntry,
    Listed,
    end_of,
    topic_entries,
)

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from newsletter.config import Config

log = logging.getLogger(__name__)

STYLESHEET = "archive/style.css"
_STYLESHEET_TEMPLATE = "archive.css"
WEB = "web"  # the pages' templates: templates/web/, or templates_dir/web/
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_DAY_PAGE = re.compile(r"archive/(\d{4}-\d{2}-\d{2})/index\.html")
_TOPIC_PAGE = re.compile(r"topics/([^/]+)/index\.html")
_TOPIC_FEED = re.compile(r"topics/([^/]+)\.atom")
HTML = "text/html; charset=utf-8"
ATOM = "application/atom+xml; charset=utf-8"
CSS = "text/css; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Document:
    """One file of the archive: made by ``ArchiveSite``, written by a build or sent by ``respond``."""

    body: bytes
    content_type: str
    updated: dt.datetime | None = None  # from the data: Last-Modified

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'


@dataclass(frozen=True, slots=True)
class Reply:
    """What to answer a GET of a document: made by ``respond``, sent by the web app."""

    status: int
    headers: dict[str, str]
    body: bytes = b""


def file_path(url_path: str) -> str:
    """The document a URL path names: ``/archive/`` -> ``archive/index.html``."""
    path = url_path.lstrip("/")
    return path + "index.html" if path.endswith("/") or not path else path


@dataclass
class ArchiveSite:
    """The archive of one configuration: its public topics, names and settings."""

    title: str
    base_url: str
    topics: Mapping[str, Topic]
    feed_entries: int = 50
    weights: Weights = field(default_factory=Weights)
    templates_dir: Path | None = None
    archive: Archive = field(init=False)
    env: jinja2.Environment = field(init=False)

    def __post_init__(self) -> None:
        self.archive = Archive(self.topics, self.weights)
        self.env = make_env(self.templates_dir)

    @classmethod
    def from_config(cls, config: Config) -> ArchiveSite:
        return cls(
            title=config.newsletter.title,
            base_url=config.newsletter.base_url,
            topics=config.public_topics(),
            feed_entries=config.archive.feed_entries,
            weights=config.selection.weights_model(),
            templates_dir=config.templates_path,
        )

    @property
    def names(self) -> dict[str, str]:
        return {slug: t.display_name or slug for slug, t in self.topics.items()}

    def paths(self, listed: Sequence[Listed]) -> list[str]:
        """Every file of a static build of the listed days."""
        return [
            "archive/index.html",
            STYLESHEET,
            *(f"archive/{day.isoformat()}/index.html" for day, _, _ in listed),
            *(f"topics/{slug}/index.html" for slug in self.topics),
            *(f"topics/{slug}.atom" for slug in self.topics),
            "feed.atom",
        ]

    def build(self, store: Store) -> dict[str, Document]:
        """Every file of a static build, by path."""
        listed = self._listed(store)
        out: dict[str, Document] = {}
        for path in self.paths(listed):
            doc = self._document(store, path, listed)
            if doc is not None:
                out[path] = doc
        return out

    def document(self, store: Store, path: str) -> Document | None:
        """The document at ``path`` (a file path, as ``file_path`` makes it), or None."""
        return self._document(store, path, self._listed(store))

    def _listed(self, store: Store) -> list[Listed]:
        listed = store.listed_days()
        self.archive.forget(day for day, _, _ in listed)
        return listed

    def _document(self, store: Store, path: str, listed: Sequence[Listed]) -> Document | None:
        """The document; its ``updated`` (Last-Modified) is when its day's papers were last
        fetched, for a day's page, else when any were: a gap filled late changes the feeds
        and the index too, and a client that revalidates by date must not miss it."""
        changed = max((at for _, _, at in listed), default=None)
        if path == STYLESHEET:
            return Document(self._stylesheet(), CSS)
        if path == "archive/index.html":
            return self._index(store, listed, changed)
        if path == "feed.atom":
            return self._feed(store, listed, None, changed)
        if found := _DAY_PAGE.fullmatch(path):
            days = [day.isoformat() for day, _, _ in listed]
            if found.group(1) not in days:
                return None
            return self._day(store, listed, days.index(found.group(1)))
        if (found := _TOPIC_PAGE.fullmatch(path)) and found.group(1) in self.topics:
            return self._topic(store, listed, found.group(1), changed)
        if (found := _TOPIC_FEED.fullmatch(path)) and found.group(1) in self.topics:
            return self._feed(store, listed, found.group(1), changed)
        return None

    def check_templates(self) -> None:
        """Render every page and the stylesheet once with a sample paper: a broken page
        template (an operator's) raises ``TemplateError`` naming its file and line."""
        day = dt.date(2026, 5, 8)
        paper = PaperData(
            id="2605.00001",
            title="A sample paper",
            day=day,
            abstract="What it found.",
            authors=("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
            github_repo="https://github.com/example/sample",
            project_page="https://example.org/sample",
        )
        when = end_of(day)
        sample = [
            ArchiveEntry(paper, slug, 'matched "sample" in title · 1 upvote', 1.0, when)
            for slug in self.topics
        ]
        scored = ArchiveDay(day, tuple((e.topic, (e,)) for e in sample))
        self._stylesheet()
        self._page("archive.html.j2", "../", days=[(day, 1)])
        self._page(
            "archive_day.html.j2",
            "../../",
            day=scored,
            count=1,
            newer=day,
            older=day,
            day_link=False,
        )
        for slug in self.topics:
            self._page(
                "topic.html.j2", "../../", slug=slug, name=self.names[slug], entries=[sample[:1]]
            )

    # -- the documents ---------------------------------------------------------------------

    def _page(self, template: str, root: str, **context: Any) -> bytes:
        context |= {
            "root": root,
            "site_title": self.title,
            "topic_links": list(self.names.items()),
            "names": self.names,
        }
        try:
            return self.env.get_template(template).render(context).encode()
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(e.filename or template, e.lineno, e.message or str(e)) from e
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"{WEB}/{template}", None, f"template not found: {e.name}") from e
        except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as e:
            # Jinja's traceback frames carry the template's file and line: the innermost.
            where: tuple[str, int | None] = (f"{WEB}/{template}", None)
            tb = e.__traceback__
            while tb is not None:
                if "__jinja_exception__" in tb.tb_frame.f_globals:
                    where = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
                tb = tb.tb_next
            raise TemplateError(*where, f"{type(e).__name__}: {e}") from e

    def _stylesheet(self) -> bytes:
        try:
            source, _, _ = self.env.loader.get_source(self.env, _STYLESHEET_TEMPLATE)  # type: ignore[union-attr]
        except jinja2.TemplateNotFound as e:
            raise TemplateError(_STYLESHEET_TEMPLATE, None, "template not found") from e
        return source.encode()

    def _index(
        self, store: Store, listed: Sequence[Listed], changed: dt.datetime | None
    ) -> Document:
        rows = [(d.day, len(d.paper_ids)) for d in self.archive.days(store, listed)]
        return Document(self._page("archive.html.j2", "../", days=rows), HTML, changed)

    def _day(self, store: Store, listed: Sequence[Listed], at: int) -> Document:
        scored = self.archive.day(store, listed[at])
        body = self._page(
            "archive_day.html.j2",
            "../../",
            day=scored,
            count=len(scored.paper_ids),
            newer=listed[at - 1][0] if at > 0 else None,
            older=listed[at + 1][0] if at + 1 < len(listed) else None,
            day_link=False,
        )
        return Document(body, HTML, listed[at][2])

    def _topic(
        self, store: Store, listed: Sequence[Listed], slug: str, changed: dt.datetime | None
    ) -> Document:
        groups = topic_entries(self.archive.days(store, listed), slug, self.feed_entries)
        body = self._page(
            "topic.html.j2", "../../", slug=slug, name=self.names[slug], entries=groups
        )
        return Document(body, HTML, changed)

    def _feed(
        self,
        store: Store,
        listed: Sequence[Listed],
        slug: str | None,
        changed: dt.datetime | None,
    ) -> Document:
        groups = topic_entries(self.archive.days(store, listed), slug, self.feed_entries)
        if slug is None:
            name, title, page = "all", self.title, f"{self.base_url}/archive/"
            subtitle = f"Trending papers on {', '.join(self.names.values())}"
            self_url = f"{self.base_url}/feed.atom"
        else:
            name, title = f"topics/{slug}", f"{self.title}: {self.names[slug]}"
            page, self_url = (
                f"{self.base_url}/topics/{slug}/",
                f"{self.base_url}/topics/{slug}.atom",
            )
            subtitle = f"Trending papers on {self.names[slug]}"
        # Without entries the feed's <updated> is the end of the newest day (or 1970).
        empty = end_of(listed[0][0]) if listed else _EPOCH
        body = atom.feed(
            base_url=self.base_url,
            name=name,
            title=title,
            subtitle=subtitle,
            self_url=self_url,
            page_url=page,
            entries=groups,
            topic_names=self.names,
            updated=empty,
        )
        return Document(body, ATOM, changed)


def builtin_templates_dir() -> Path:
    """Inside the wheel the templates sit in the package; in a checkout, at the top level.
    (Not compose's finder: web must not import compose, which imports web's tokens.)"""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / WEB / "archive.html.j2").is_file():
            return candidate
    raise TemplateError("archive.html.j2", None, f"built-in templates not found next to {here}")


def make_env(templates_dir: Path | None) -> jinja2.Environment:
    """The pages' environment: ``templates_dir/web/...`` overrides a built-in page file by
    file, as for the emails; autoescaped."""
    searchpath = [str(templates_dir / WEB)] if templates_dir else []
    searchpath.append(str(builtin_templates_dir() / WEB))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["authors_short"] = authors_short
    env.filters["shorten"] = shorten
    env.filters["http_url"] = http_url
    return env


def authors_short(authors: Sequence[str], first: int = 3) -> str:
    return ", ".join(authors) if len(authors) <= first else ", ".join(authors[:first]) + " et al."


def shorten(text: str, width: int = 300) -> str:
    """The text on one line, cut at a word to at most ``width`` characters."""
    return textwrap.shorten(text, width=width, placeholder=" …")


def http_url(value: str | None) -> str:
    """The URL when it is http(s), else "" (no javascript: or data: link from a source)."""
    try:
        parts = urlsplit((value or "").strip())
    except ValueError:
        return ""
    return parts.geturl() if parts.scheme in ("http", "https") and parts.netloc else ""


# -- HTTP: conditional GET -------------------------------------------------------------------


def respond(doc: Document, if_none_match: str | None, if_modified_since: str | None) -> Reply:
    """200 with the document, or 304 when the client's copy is current (RFC 9110: a
    matching ``If-None-Match`` wins; ``If-Modified-Since`` counts only without one)."""
    # no-cache: a client asks each time, and a 304 is cheap. nosniff: a feed stays a feed.
    headers = {"ETag": doc.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if doc.updated is not None:
        headers["Last-Modified"] = email.utils.format_datetime(
            doc.updated.astimezone(dt.UTC), usegmt=True
        )
    if if_none_match is not None:
        fresh = _etag_matches(if_none_match, doc.etag)
    else:
        fresh = _not_modified_since(if_modified_since, doc.updated)
    if fresh:
        return Reply(304, headers)
    headers["Content-Type"] = doc.content_type
    return Reply(200, headers, doc.body)


def _etag_matches(header: str, etag: str) -> bool:
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in [t.removeprefix("W/") for t in tags]


def _not_modified_since(header: str | None, updated: dt.datetime | None) -> bool:
    if header is None or updated is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # a date we cannot read: send the document
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return updated.replace(microsecond=0) <= since


class ArchiveServer:
    """The ``ArchiveSite`` of the current configuration (a reload makes a new one), and the reply
    to a GET of an archive path: what a web server calls."""

    def __init__(self, current: Callable[[], Config]) -> None:
        self.current = current
        self._site: tuple[Config, ArchiveSite] | None = None

    def site(self, config: Config) -> ArchiveSite | None:
        if not config.archive.enabled:
            return None
        held = self._site
        if held is None or held[0] is not config:
            held = self._site = (config, ArchiveSite.from_config(config))
        return held[1]

    @staticmethod
    def serves(url_path: str) -> bool:
        """Whether a URL path is the archive's (when it is on)."""
        return url_path in ("/archive", "/feed.atom") or url_path.startswith(
            ("/archive/", "/topics/")
        )

    def get(self, url_path: str, headers: Mapping[str, str]) -> Reply:
        """The reply to ``GET url_path`` with the request's ``headers`` (lower-case names)."""
        from newsletter import wiring

        config = self.current()
        site = self.site(config)
        if site is None:
            return _text(404, "not found")
        if url_path == "/archive":
            return Reply(301, {"Location": "/archive/"})
        try:
            # A connection per request, read-only: the server's threads never share one.
            with wiring.open_state(config, read_only=True) as store:
                doc = site.document(store, file_path(url_path))
        except NewsletterError as e:  # a broken page template, an unreadable state file
            log.error("archive.failed path=%s error=%s", url_path, e)
            return _text(500, "the archive cannot be shown now; the operator's log says why")
        if doc is None:
            return _text(404, "not found")
        return respond(doc, headers.get("if-none-match"), headers.get("if-modified-since"))


def _text(status: int, line: str) -> Reply:
    return Reply(status, {"Content-Type": "text/plain; charset=utf-8"}, f"{line}\n".encode())


def archive_routes(current: Callable[[], Config]) -> list[BaseRoute]:
    """Starlette routes for the archive, for the web app to mount: ``current`` gives the
    configuration in force (the daemon's, reloaded on SIGHUP)."""
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    sites = ArchiveServer(current)

    def endpoint(request: Request) -> Response:
        # Starlette's headers look up names case-insensitively.
        reply = sites.get(request.url.path, request.headers)
        return Response(reply.body, reply.status, reply.headers)

    return [
        Route("/archive", endpoint),
        Route("/archive/{rest:path}", endpoint),
        Route("/topics/{rest:path}", endpoint),
        Route("/feed.atom", endpoint),
    ]
