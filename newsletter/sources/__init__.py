"""Where papers come from: the ``Source`` protocol, the sources, and fetching from several.

A source answers "which papers were on the list of this day?" (``fetch_day``) and, for
the ``fetch`` command, of a week, a month or trending now (``fetch_period``). The Hugging
Face source reads the JSON API or the papers pages (one falls back to the other); the
arXiv source reads the RSS feed of the current listing and the Atom API for earlier days;
``FileSource`` reads a saved capture (``--from FILE``), so a preview works offline.
Parsers are pure and live beside their URL constants; HTTP lives in ``http.py``.

Several sources are fetched with ``fetch_all``: papers are merged by arXiv id (Hugging Face
fields win, arXiv adds categories and comments). Failures stay as small as they are: a
malformed paper is skipped with a warning (the parsers leave it out), a day that fails is
reported and fetched again by later runs while the source's other days go on, and a source
that fails or times out is reported and skipped. The run decides what is fatal.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from newsletter.errors import FetchError, NewsletterError
from newsletter.models import PaperData, Response, merge_papers
from newsletter.sources import arxiv, huggingface
from newsletter.sources.http import (
    Deadline,
    Fetcher,
    HttpClient,
    ReplayClient,
    ResponseStore,
)
from newsletter.sources.huggingface import Period
from newsletter.sources.parsing import Skipped

if TYPE_CHECKING:
    from newsletter.config import Sources as SourcesSettings

__all__ = [
    "ArxivSource",
    "FetchLog",
    "FetchReport",
    "FileSource",
    "HttpClient",
    "HuggingFace",
    "HuggingFaceApi",
    "Period",
    "Source",
    "SourceStatus",
    "fetch",
    "fetch_all",
    "fetch_period",
    "latest_day",
    "merge",
    "open_sources",
]

log = logging.getLogger(__name__)

RETRY_FAILED_DAYS = 7  # how far back a failed day is fetched again by later runs


class Source(Protocol):
    name: str
    #: A live source's past days settle, so the store need not fetch them again; a file's
    #: content is what the operator asked for and is always read.
    live: bool

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        """The papers on ``day``'s daily list; [] for a day without papers."""
        ...

    def latest_day(self, today: dt.date) -> dt.date | None:
        """The most recent day up to ``today`` that has papers, or None."""
        ...


class HuggingFace:
    """Hugging Face Daily Papers, from the JSON API or the papers pages.

    ``mode="api"`` asks ``/api/daily_papers`` and falls back to the page when the API
    fails; ``mode="page"`` reads the pages only. The API is paged: ``limit`` papers a
    page, ``p`` counting from 0, until a page comes back short.
    """

    name = "huggingface"
    live = True
    LOOKBACK_DAYS = 7  # weekends and holidays leave days empty
    MAX_PAGES = 50  # a server that ignores ``p`` must not keep us paging forever

    def __init__(
        self,
        base_url: str,
        client: Fetcher,
        *,
        mode: str = "api",
        page_size: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.url = huggingface.api_url(base_url)
        self.client = client
        self.mode = mode
        self.page_size = page_size
        self._warned: set[Skipped] = set()  # latest_day and the fetch may read a day twice

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        papers = self.fetch_period(Period.day(day))
        log.info("fetch.day source=%s day=%s papers=%d", self.name, day, len(papers))
        return papers

    def fetch_period(self, period: Period) -> list[PaperData]:
        if self.mode == "page":
            return _by_upvotes(self._page(period))
        try:
            return _by_upvotes(self._api(period))
        except NewsletterError as api_error:
            if _timed_out(api_error):
                raise  # the same host serves the page; the run's time is not spent twice
            log.warning("fetch.fallback source=%s error=%s", self.name, api_error)
            try:
                return _by_upvotes(self._page(period))
            except NewsletterError as page_error:
                raise FetchError(
                    api_error.url if isinstance(api_error, FetchError) else self.url,
                    f"{_reason(api_error)}; the page fallback failed too: {page_error}",
                    timed_out=_timed_out(page_error),
                ) from page_error

    def latest_day(self, today: dt.date) -> dt.date | None:
        for back in range(self.LOOKBACK_DAYS + 1):
            day = today - dt.timedelta(days=back)
            if self.fetch_day(day):
                return day
        return None

    def _api(self, period: Period) -> list[PaperData]:
        day = dt.date.fromisoformat(period.value) if period.kind == "date" else None
        papers: dict[str, PaperData] = {}
        for page in range(self.MAX_PAGES):
            params = {**huggingface.api_params(period), "limit": self.page_size, "p": page}
            response = self.client.get(self.url, params=params)
            skipped: list[Skipped] = []
            batch = huggingface.parse(response.body, response.url, day=day, skipped=skipped)
            _warn_skipped(self.name, day, skipped, self._warned)
            new = [p for p in batch if p.id not in papers]
            papers.update((p.id, p) for p in new)
            if len(batch) + len(skipped) < self.page_size or not new:
                break
        return list(papers.values())

    def _page(self, period: Period) -> list[PaperData]:
        day = dt.date.fromisoformat(period.value) if period.kind == "date" else None
        try:
            response = self.client.get(huggingface.page_url(self.base_url, period))
        except FetchError as e:
            if day is None or e.status != 404:
                raise
            # Older deployments only know /papers?date=D.
            response = self.client.get(huggingface.old_daily_page_url(self.base_url, day))
        skipped: list[Skipped] = []
        papers = huggingface.parse_page(response.body, response.url, day=day, skipped=skipped)
        _warn_skipped(self.name, day, skipped, self._warned)
        return papers


HuggingFaceApi = HuggingFace  # the name the first version had


class ArxivSource:
    """arXiv listings of some categories, by announcement day.

    The RSS feed of each category gives the current listing, with its announce types
    (new, cross, replace); an earlier day is asked of the Atom API by its submission window
    (new submissions and cross-lists only: the API does not report replacements).
    arXiv asks for ``delay_seconds`` between requests.
    """

    name = "arxiv"
    live = True
    PAGE_SIZE = 500

    def __init__(
        self,
        client: Fetcher,
        categories: Sequence[str],
        *,
        announce_types: Collection[str] = ("new", "cross"),
        api_url: str = arxiv.API_URL,
        rss_url: str = arxiv.RSS_URL,
        delay_seconds: float = 3.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.categories = list(categories)
        self.announce_types = frozenset(announce_types)
        self.api_url = api_url
        self.rss_url = rss_url.rstrip("/")
        self.delay_seconds = delay_seconds
        self._sleep = sleep
        self._requests = 0
        self._feeds: dict[str, tuple[dt.date | None, list[PaperData]]] = {}
        self._warned: set[Skipped] = set()

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        try:
            feeds = [self._feed(c) for c in self.categories]
        except NewsletterError as e:
            # The API can still answer for the day, unless it is down too.
            log.warning("fetch.rss_failed source=%s error=%s", self.name, e)
            feeds = []
        if feeds and all(feed_day == day for feed_day, _ in feeds):
            papers = [p for _, items in feeds for p in items]
        elif not arxiv.is_listing_day(day):
            papers = []  # arXiv announces nothing on weekends
        else:
            papers = self._api_day(day)
        papers = merge(papers)
        log.info("fetch.day source=%s day=%s papers=%d", self.name, day, len(papers))
        return papers

    def fetch_period(self, period: Period) -> list[PaperData] | None:
        if period.kind == "trending":
            return None
        return merge(p for day in period.days() for p in self.fetch_day(day))

    def latest_day(self, today: dt.date) -> dt.date | None:
        days = [d for d, _ in (self._feed(c) for c in self.categories) if d and d <= today]
        day = max(days, default=today)
        while not arxiv.is_listing_day(day):
            day -= dt.timedelta(days=1)
        return day

    def _get(self, url: str, params: dict[str, str | int] | None = None) -> Response:
        if self._requests and self.delay_seconds:
            self._sleep(self.delay_seconds)  # arXiv's rule: one request every 3 seconds
        self._requests += 1
        # arXiv answers a bad query with HTTP 400 and an error feed: the parser names it.
        return self.client.get(url, params=params, accept=(400,))

    def _feed(self, category: str) -> tuple[dt.date | None, list[PaperData]]:
        if category not in self._feeds:
            response = self._get(f"{self.rss_url}/{category}")
            skipped: list[Skipped] = []
            self._feeds[category] = arxiv.parse_feed(
                response.body, response.url, announce_types=self.announce_types, skipped=skipped
            )
            _warn_skipped(self.name, self._feeds[category][0], skipped, self._warned)
        return self._feeds[category]

    def _api_day(self, day: dt.date) -> list[PaperData]:
        start, end = arxiv.submission_window(day)
        cats = " OR ".join(f"cat:{c}" for c in self.categories)
        window = f"[{start:%Y%m%d%H%M} TO {(end - dt.timedelta(minutes=1)):%Y%m%d%H%M}]"
        query = f"({cats}) AND submittedDate:{window}"
        papers: list[PaperData] = []
        offset = 0
        while True:
            params: dict[str, str | int] = {
                "search_query": query,
                "sortBy": "submittedDate",
                "sortOrder": "ascending",
                "start": offset,
                "max_results": self.PAGE_SIZE,
            }
            response = self._get(self.api_url, params)
            skipped: list[Skipped] = []
            batch = arxiv.parse(response.body, response.url, skipped=skipped)
            _warn_skipped(self.name, day, skipped, self._warned)
            papers.extend(p for p in batch if self._keep(p))
            offset += len(batch) + len(skipped)
            if len(batch) + len(skipped) < self.PAGE_SIZE:
                return papers

    def _keep(self, paper: PaperData) -> bool:
        primary = paper.categories[0] if paper.categories else None
        kind = "new" if primary in self.categories else "cross"
        return kind in self.announce_types


class FileSource:
    """A saved API response or papers page, read instead of the network."""

    name = "file"
    live = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            body = path.read_bytes()
        except OSError as e:
            raise FetchError(str(path), f"cannot read: {e.strerror or e}") from e
        skipped: list[Skipped] = []
        self.papers = huggingface.parse_any(body, str(path), skipped=skipped)
        _warn_skipped(self.name, None, skipped, set())

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        return [p for p in self.papers if p.day == day]

    def fetch_period(self, period: Period) -> list[PaperData] | None:
        if period.kind == "trending":
            return _by_upvotes(self.papers)
        days = set(period.days())
        return _by_upvotes([p for p in self.papers if p.day in days])

    def latest_day(self, today: dt.date) -> dt.date | None:
        # A capture is a moment in the past: its own newest day is "the most recent".
        return max((p.day for p in self.papers), default=None)


def fetch(source: Source, days: Iterable[dt.date]) -> list[PaperData]:
    """Every paper of ``days`` from one source; one request per day; errors propagate."""
    papers: list[PaperData] = []
    for day in sorted(set(days)):
        papers.extend(source.fetch_day(day))
    return papers


def merge(papers: Iterable[PaperData]) -> list[PaperData]:
    """One record per arXiv id (version stripped), in first-seen order; see merge_papers."""
    merged: dict[str, PaperData] = {}
    for p in papers:
        key = arxiv.strip_version(p.id)
        merged[key] = merge_papers(merged[key], p) if key in merged else p
    return list(merged.values())


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """How one source's fetch went: the line the operator reads."""

    name: str
    papers: int = 0
    what: str = ""  # the days or the period fetched
    error: str | None = None
    skipped: str | None = None
    # Days that failed while others were fetched: one line each, without the source's name.
    day_errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None

    def line(self) -> str:
        if self.error is not None:
            return f"{self.name}: failed: {self.error}"
        if self.skipped is not None:
            return f"{self.name}: skipped: {self.skipped}"
        return f"{self.name}: ok: {self.papers} papers" + (f" for {self.what}" if self.what else "")


@dataclass(slots=True)
class FetchReport:
    papers: list[PaperData] = field(default_factory=list)
    statuses: list[SourceStatus] = field(default_factory=list)
    days: set[dt.date] = field(default_factory=set)  # fetched from at least one source

    @property
    def ok(self) -> bool:
        """Every source answered."""
        return all(s.ok for s in self.statuses)

    @property
    def any_ok(self) -> bool:
        """At least one source answered: the run can go on with what it has."""
        return any(s.ok for s in self.statuses)

    @property
    def errors(self) -> list[str]:
        """One line per source that failed."""
        return [s.line() for s in self.statuses if not s.ok]

    @property
    def day_errors(self) -> list[str]:
        """One line per day a source could not fetch while its other days were fetched."""
        return [f"{s.name}: {line}" for s in self.statuses for line in s.day_errors]


class FetchLog(Protocol):
    """Which days each source fetched or failed; ``store.SqliteStore`` is one."""

    def mark_fetched(
        self,
        source: str,
        day: dt.date,
        papers: int,
        now: dt.datetime,
        *,
        error: str | None = None,
    ) -> None: ...

    def failed_days(self, source: str, since: dt.date) -> list[dt.date]: ...


def fetch_all(
    sources: Sequence[Source],
    days: Iterable[dt.date],
    *,
    log_to: FetchLog | None = None,
    now: dt.datetime,
) -> FetchReport:
    """``days`` from every source, plus each source's recently failed days, merged.

    A day that fails (after its retries) is marked failed in ``log_to``, so later runs fetch
    it again, and reported in its source's ``day_errors``; the source's other days go on. A
    source fails as a whole (its status's ``error``) when none of its days could be fetched,
    or when it timed out: its remaining days are then not tried in this run (marked failed).
    """
    wanted = sorted(set(days))
    report = FetchReport()
    collected: list[PaperData] = []
    for source in sources:
        todo = set(wanted)
        if log_to is not None and wanted:
            since = wanted[0] - dt.timedelta(days=RETRY_FAILED_DAYS)
            todo.update(log_to.failed_days(source.name, since))
        count = 0
        error: str | None = None
        done: list[dt.date] = []
        failed: list[str] = []  # one line per day that failed
        ordered = sorted(todo)
        for i, day in enumerate(ordered):
            try:
                papers = source.fetch_day(day)
            except NewsletterError as e:
                log.warning("fetch.failed source=%s day=%s error=%s", source.name, day, e)
                failed.append(f"{day} not fetched (tried again by later runs): {e}")
                if log_to is not None:
                    log_to.mark_fetched(source.name, day, 0, now, error=str(e))
                if _timed_out(e):
                    error = str(e) + _not_tried(source, ordered[i + 1 :], log_to, now)
                    break
                if not done and i == len(ordered) - 1:
                    error = str(e)  # not one day of it answered
                continue
            if log_to is not None:
                log_to.mark_fetched(source.name, day, len(papers), now)
            collected.extend(papers)
            count += len(papers)
            done.append(day)
        what = ", ".join(d.isoformat() for d in done)
        day_errors = tuple(failed) if error is None else ()
        report.statuses.append(SourceStatus(source.name, count, what, error, None, day_errors))
        report.days.update(done)
    report.papers = merge(collected)
    return report


def _not_tried(
    source: Source, days: Sequence[dt.date], log_to: FetchLog | None, now: dt.datetime
) -> str:
    """Mark the days a timed-out source skips as failed (later runs fetch them); say so."""
    if not days:
        return ""
    log.info("fetch.not_tried source=%s days=%s", source.name, ",".join(map(str, days)))
    for day in days:
        if log_to is not None:
            log_to.mark_fetched(source.name, day, 0, now, error="not tried: the source timed out")
    return f" ({len(days)} more day{'s' if len(days) > 1 else ''} not tried in this run)"


def fetch_period(sources: Sequence[Source], period: Period) -> FetchReport:
    """A day, a week, a month or trending from every source, merged (``newsletter fetch``)."""
    report = FetchReport()
    collected: list[PaperData] = []
    for source in sources:
        try:
            if period.kind == "date":
                papers: list[PaperData] | None = source.fetch_day(
                    dt.date.fromisoformat(period.value)
                )
            elif isinstance(source, HuggingFace | ArxivSource | FileSource):
                papers = source.fetch_period(period)
            else:
                papers = None
        except NewsletterError as e:
            log.error("fetch.failed source=%s period=%s error=%s", source.name, period, e)
            report.statuses.append(SourceStatus(source.name, error=str(e)))
            continue
        if papers is None:
            report.statuses.append(SourceStatus(source.name, skipped=f"no {period.kind} list"))
            continue
        collected.extend(papers)
        report.statuses.append(SourceStatus(source.name, len(papers), str(period)))
    report.papers = _by_upvotes(merge(collected))
    return report


def latest_day(sources: Sequence[Source], today: dt.date) -> dt.date | None:
    """The most recent day with papers by the first source that answers."""
    errors = []
    for source in sources:
        try:
            return source.latest_day(today)
        except NewsletterError as e:
            log.error("fetch.failed source=%s error=%s", source.name, e)
            errors.append(e)
    if errors:
        raise errors[0]
    return None


def _by_upvotes(papers: list[PaperData]) -> list[PaperData]:
    # Server order is not reliable (the API's differs by endpoint and over time).
    return sorted(papers, key=lambda p: (-p.upvotes, -p.comments, p.id))


def _reason(error: NewsletterError) -> str:
    return error.message if isinstance(error, FetchError) else str(error)


def _timed_out(error: NewsletterError) -> bool:
    return isinstance(error, FetchError) and error.timed_out


def _warn_skipped(
    source: str, day: dt.date | None, skipped: list[Skipped], warned: set[Skipped]
) -> None:
    """One warning per item a parser left out, naming the day, the paper and the field."""
    for item in skipped:
        if item in warned:
            continue
        warned.add(item)
        log.warning(
            "fetch.item_skipped source=%s day=%s paper=%s field=%s problem=%s",
            source,
            item.day or day or "?",
            item.paper or f"(item {item.index}, no id)",
            item.field or "-",
            item.problem,
        )


@contextmanager
def open_sources(
    settings: SourcesSettings,
    *,
    store: ResponseStore | None = None,
    replay: bool = False,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[list[Source]]:
    """The enabled sources of the config, Hugging Face first; their clients closed after.

    With ``store`` every response is kept raw; with ``replay`` nothing goes to the network
    and the stored responses are parsed again.
    """
    # One deadline for the run's fetching, shared by every source's client.
    deadline = Deadline(settings.fetch_deadline_seconds)
    with ExitStack() as stack:

        def client(name: str, timeout: float, retries: int, max_bytes: int) -> Fetcher:
            if replay:
                if store is None:
                    raise ValueError("replay needs a store")
                return ReplayClient(store)
            return stack.enter_context(
                HttpClient(
                    timeout=timeout,
                    retries=retries,
                    sleep=sleep,
                    store=store,
                    max_response_bytes=max_bytes,
                    cap_setting=f"sources.{name}.max_response_bytes",
                    deadline=deadline,
                )
            )

        found: list[Source] = []
        hf = settings.huggingface
        if hf.enabled:
            hf_client = client("huggingface", hf.timeout, hf.retries, hf.max_response_bytes)
            found.append(HuggingFace(hf.base_url, hf_client, mode=hf.mode))
        ax = settings.arxiv
        if ax.enabled:
            found.append(
                ArxivSource(
                    client("arxiv", ax.timeout, ax.retries, ax.max_response_bytes),
                    ax.categories,
                    announce_types=ax.announce_types,
                    api_url=ax.api_url,
                    rss_url=ax.rss_url,
                    delay_seconds=0 if replay else ax.delay_seconds,
                    sleep=sleep,
                )
            )
        yield found
