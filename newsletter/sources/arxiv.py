"""arXiv: URL constants and pure parsers for the Atom API and the RSS feeds.

``parse(body, url)`` reads either, told apart by the root element:

- the Atom API (``export.arxiv.org/api/query``), both the pre-2025 format and the current
  one. An error feed (one entry whose id is ``.../api/errors#...``, served with HTTP 400) is
  a ``ParseError`` carrying arXiv's message; a feed without entries is "no papers".
- the RSS 2.0 feeds (``rss.arxiv.org/rss/<category>``), one per announcement day; weekend
  feeds are empty, which is normal. ``announce_types`` keeps only some kinds of entry.

Each paper's ``day`` is its announcement date: the feed's date for RSS; for the API (which
reports only the submission time) the date of the listing the submission went out in, by
arXiv's schedule (see ``announcement_day``).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re
import xml.etree.ElementTree as ET
import zoneinfo
from collections.abc import Callable, Collection

from newsletter.errors import ParseError
from newsletter.models import PaperData
from newsletter.sources.parsing import Invalid, Skipped, guarded, is_arxiv_id, items
from newsletter.sources.parsing import unwrap as _unwrap

API_URL = "https://export.arxiv.org/api/query"
RSS_URL = "https://rss.arxiv.org/rss"

ANNOUNCE_TYPES = ("new", "cross", "replace")
# What each configurable type keeps of the feed's arxiv:announce_type values.
_ANNOUNCE_MATCHES = {
    "new": frozenset({"new"}),
    "cross": frozenset({"cross"}),
    "replace": frozenset({"replace", "replace-cross"}),
}

_ATOM = "{http://www.w3.org/2005/Atom}"
_ARXIV = "{http://arxiv.org/schemas/atom}"
_DC = "{http://purl.org/dc/elements/1.1/}"

_ID_RE = re.compile(r"(?:abs/|oai:arXiv\.org:|arXiv:)([\w.\-]+(?:/\d{7})?(?:v\d+)?)")
_VERSION_RE = re.compile(r"v\d+$")
_ANNOUNCE_RE = re.compile(r"Announce Type:\s*([\w-]+)")

# arXiv's day: submissions received by 14:00 US Eastern on a weekday go out in that
# evening's mailing, which is the listing dated the next weekday. Holidays are not modelled.
EASTERN = zoneinfo.ZoneInfo("America/New_York")
CUTOFF_HOUR = 14


def parse(
    body: bytes | str,
    url: str,
    *,
    announce_types: Collection[str] | None = None,
    skipped: list[Skipped] | None = None,
) -> list[PaperData]:
    """Papers in an Atom API response or an RSS feed; ``announce_types`` filters RSS entries.

    A malformed entry is left out and added to ``skipped``; a feed of nothing else is an error.
    """
    return guarded(url, lambda: _parse(body, announce_types, skipped))


def parse_feed(
    body: bytes | str,
    url: str,
    *,
    announce_types: Collection[str] | None = None,
    skipped: list[Skipped] | None = None,
) -> tuple[dt.date | None, list[PaperData]]:
    """An RSS feed's listing date (None if it names none) and its papers."""
    papers = parse(body, url, announce_types=announce_types, skipped=skipped)
    return _guarded_day(url, lambda: _feed_day(body)), papers


def strip_version(pid: str) -> str:
    """2405.15738v2 -> 2405.15738 (an id names the paper, whatever its version)."""
    return _VERSION_RE.sub("", pid.strip())


def announcement_day(submitted: dt.datetime) -> dt.date:
    """The date of the arXiv listing a submission made at ``submitted`` appears in."""
    local = submitted.astimezone(EASTERN)
    day = local.date()
    if local.hour >= CUTOFF_HOUR:
        day += dt.timedelta(days=1)
    while day.weekday() >= 5:  # submitted over the weekend: Monday's batch
        day += dt.timedelta(days=1)
    return _next_weekday(day)


def submission_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The UTC interval [start, end) of submissions announced in the listing dated ``day``."""
    batch = _previous_weekday(day)
    start_day = _previous_weekday(batch)
    start = dt.datetime.combine(start_day, dt.time(CUTOFF_HOUR), EASTERN)
    end = dt.datetime.combine(batch, dt.time(CUTOFF_HOUR), EASTERN)
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def is_listing_day(day: dt.date) -> bool:
    return day.weekday() < 5


def _next_weekday(day: dt.date) -> dt.date:
    day += dt.timedelta(days=1)
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _previous_weekday(day: dt.date) -> dt.date:
    day -= dt.timedelta(days=1)
    while day.weekday() >= 5:
        day -= dt.timedelta(days=1)
    return day


def _guarded_day(url: str, fn: Callable[[], dt.date | None]) -> dt.date | None:
    try:
        return fn()
    except Exception as e:  # parse() has read the same body: this is for the day alone
        raise ParseError(url, f"{type(e).__name__}: {e}") from e


def _feed_day(body: bytes | str) -> dt.date | None:
    channel = ET.fromstring(body).find("channel")
    when = _rfc822(_text(channel, "pubDate"), "pubDate") if channel is not None else None
    return when.date() if when else None


def _parse(
    body: bytes | str, announce_types: Collection[str] | None, skipped: list[Skipped] | None
) -> list[PaperData]:
    # xml.etree never fetches external entities, and expat refuses entity-expansion bombs.
    try:
        root = ET.fromstring(body)
    except ET.ParseError as e:
        raise Invalid(f"not XML ({e})") from e
    if root.tag == f"{_ATOM}feed":
        entries = list(root.iter(f"{_ATOM}entry"))
        for entry in entries:
            raw_id = _text(entry, f"{_ATOM}id")
            if "/api/errors" in raw_id:  # the whole answer is an error, not one bad entry
                message = _text(entry, f"{_ATOM}summary") or raw_id.rpartition("#")[2]
                raise Invalid(f"arXiv API error: {message}")
        return _dedupe(items(entries, _entry, _entry_id, None, skipped))
    if root.tag == "rss":
        return _parse_rss(root, announce_types, skipped)
    raise Invalid(f"expected an Atom <feed> or an RSS <rss>, got <{root.tag}>")


def _entry(entry: ET.Element) -> PaperData:
    raw_id = _text(entry, f"{_ATOM}id")
    pid = _arxiv_id(raw_id)
    if pid is None:
        raise Invalid(f"entry id {raw_id[:80]!r} is not an arXiv abstract URL", field="id")
    title = _unwrap(_text(entry, f"{_ATOM}title"))
    if not title:
        raise Invalid(f"entry {pid} has no title", field="title")
    published = _iso(_text(entry, f"{_ATOM}published"), "published")
    if published is None:
        raise Invalid(f"entry {pid} has no <published> date", field="published")
    primary = entry.find(f"{_ARXIV}primary_category")
    categories = [primary.get("term", "")] if primary is not None else []
    categories += [c.get("term", "") for c in entry.iter(f"{_ATOM}category")]
    comment = _unwrap(_text(entry, f"{_ARXIV}comment")) or None
    return PaperData(
        id=pid,
        title=title,
        day=announcement_day(published),
        abstract=_unwrap(_text(entry, f"{_ATOM}summary")),
        authors=tuple(
            name
            for a in entry.iter(f"{_ATOM}author")
            if (name := _unwrap(_text(a, f"{_ATOM}name")))
        ),
        published_at=published,
        categories=_unique(categories),
        arxiv_comment=comment,
        source="arxiv",
    )


def _entry_id(entry: ET.Element) -> str:
    return _raw_id(_text(entry, f"{_ATOM}id"))


def _parse_rss(
    root: ET.Element, announce_types: Collection[str] | None, skipped: list[Skipped] | None
) -> list[PaperData]:
    channel = root.find("channel")
    if channel is None:
        raise Invalid("RSS feed has no <channel>")
    channel_day = _rfc822(_text(channel, "pubDate"), "pubDate")
    keep: frozenset[str] | None = None
    if announce_types is not None:
        keep = frozenset().union(*(_ANNOUNCE_MATCHES.get(t, {t}) for t in announce_types))
    kept = []
    for item in channel.iter("item"):
        description = _text(item, "description")
        kind = _text(item, f"{_ARXIV}announce_type")
        if not kind:
            m = _ANNOUNCE_RE.search(description)
            kind = m.group(1) if m else "new"
        if keep is not None and kind.strip() not in keep:
            continue
        kept.append((item, description))
    day = channel_day.date() if channel_day else None
    papers = items(
        kept,
        lambda pair: _item(*pair, channel_day),
        lambda pair: _raw_id(_text(pair[0], "guid") or _text(pair[0], "link")),
        day,
        skipped,
    )
    return _dedupe(papers)


def _item(item: ET.Element, description: str, channel_day: dt.datetime | None) -> PaperData:
    raw_id = _text(item, "guid") or _text(item, "link")
    pid = _arxiv_id(raw_id) or _arxiv_id(description)
    if pid is None:
        raise Invalid(f"item {raw_id[:80]!r} names no arXiv id", field="guid")
    title = _unwrap(_text(item, "title"))
    if not title:
        raise Invalid(f"item {pid} has no title", field="title")
    announced = _rfc822(_text(item, "pubDate"), "pubDate") or channel_day
    if announced is None:
        raise Invalid(f"item {pid} has no pubDate, nor has the channel", field="pubDate")
    _, sep, abstract = description.partition("Abstract:")
    creators = _text(item, f"{_DC}creator")
    return PaperData(
        id=pid,
        title=title,
        # The feed's own date, in its own offset (US Eastern): the listing's date.
        day=announced.date(),
        abstract=_unwrap(abstract if sep else description),
        authors=tuple(a for a in (_unwrap(x) for x in creators.split(",")) if a),
        categories=_unique([_unwrap(c.text or "") for c in item.iter("category")]),
        source="arxiv",
    )


def _arxiv_id(text: str) -> str | None:
    """The well-formed arXiv id ``text`` names (version stripped), or None."""
    m = _ID_RE.search(text)
    return _VERSION_RE.sub("", m.group(1)) if m and is_arxiv_id(m.group(1)) else None


def _raw_id(text: str) -> str:
    """What an entry gives as its id, well-formed or not (for the line saying it was skipped)."""
    m = _ID_RE.search(text)
    return m.group(1) if m else text


def _dedupe(papers: list[PaperData]) -> list[PaperData]:
    seen: dict[str, PaperData] = {}
    for p in papers:
        seen.setdefault(p.id, p)
    return list(seen.values())


def _unique(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _text(node: ET.Element, tag: str) -> str:
    child = node.find(tag)
    return "".join(child.itertext()) if child is not None else ""


def _iso(value: str, field: str) -> dt.datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise Invalid(f"bad timestamp {value[:40]!r}", field=field) from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _rfc822(value: str, field: str) -> dt.datetime | None:
    value = value.strip()
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError) as e:
        raise Invalid(f"bad date {value[:40]!r}", field=field) from e
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
