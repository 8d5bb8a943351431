"""Hugging Face Daily Papers: URL constants and pure parsers.

``parse(body, url)`` reads the JSON API (``/api/daily_papers``); ``parse_page(body, url)``
reads a papers page (daily, weekly, monthly, trending) through the JSON in the
``data-props`` attribute of its ``data-target="DailyPapers"`` hydration element, falling
back to the server-rendered ``article`` cards when that JSON is missing. A single paper's
page (``data-target="PaperContent"``) gives that one paper. All return ``list[PaperData]``
or raise ``ParseError`` naming the URL: a well-formed empty list is "no papers", anything
unrecognised is an error, never a silent empty list.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag, XMLParsedAsHTMLWarning

from newsletter.models import PaperData
from newsletter.sources.parsing import Invalid, Skipped, check_id, guarded, items
from newsletter.sources.parsing import unwrap as _unwrap

API_PATH = "/api/daily_papers"
DAILY_PAGE_PATH = "/papers/date/{value}"
OLD_DAILY_PAGE_PATH = "/papers"  # ?date=YYYY-MM-DD
WEEKLY_PAGE_PATH = "/papers/week/{value}"
MONTHLY_PAGE_PATH = "/papers/month/{value}"
TRENDING_PAGE_PATH = "/papers/trending"

PeriodKind = Literal["date", "week", "month", "trending"]

_VERSION_RE = re.compile(r"v\d+$")
_WEEK_RE = re.compile(r"^(\d{4})-W(0[1-9]|[1-4]\d|5[0-3])$")
_MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
# A daily page names its day in the path (/papers/date/D) or, on older pages, the query.
_URL_DAY_RE = re.compile(r"/papers/date/(\d{4}-\d{2}-\d{2})")
_PAPER_HREF_RE = re.compile(r"^/papers/([^/?#]+)$")
_COUNT_RE = re.compile(r"(\d[\d,]*)")
# Whitespace, controls, a backslash (a browser reads it as "/"): no URL of ours has them.
_UNSAFE_URL_RE = re.compile(r"[\x00-\x20\x7f\\\u202a-\u202e\u2066-\u2069]")
# Thumbnails are shown in emails: only over https from huggingface.co or a subdomain (no
# user, no other port; _url has refused whitespace, controls and backslashes already).
_THUMBNAIL_RE = re.compile(r"https://(?:[a-z0-9-]+\.)*huggingface\.co(?::443)?(?:/.*)?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Period:
    """Which list: one day, an ISO week (2025-W40), a month (2025-10) or trending now."""

    kind: PeriodKind
    value: str = ""

    @classmethod
    def day(cls, day: dt.date) -> Period:
        return cls("date", day.isoformat())

    @classmethod
    def parse(cls, kind: PeriodKind, value: str = "") -> Period:
        """Validate ``value`` for ``kind``; ValueError names what was expected."""
        if kind == "date":
            dt.date.fromisoformat(value)
        elif kind == "week" and not _WEEK_RE.match(value):
            raise ValueError(f"expected an ISO week like 2025-W40, got {value!r}")
        elif kind == "month" and not _MONTH_RE.match(value):
            raise ValueError(f"expected a month like 2025-10, got {value!r}")
        period = cls(kind, value)
        try:
            period.days()
        except ValueError:  # 2026-W53: a year with 52 ISO weeks
            raise ValueError(f"{value!r} is not a {kind} of the calendar") from None
        return period

    def days(self) -> list[dt.date]:
        """The calendar days the period covers (none for trending)."""
        if self.kind == "date":
            return [dt.date.fromisoformat(self.value)]
        if self.kind == "week":
            iso_year, iso_week = self.value.split("-W")
            monday = dt.date.fromisocalendar(int(iso_year), int(iso_week), 1)
            return [monday + dt.timedelta(days=i) for i in range(7)]
        if self.kind == "month":
            year, month = (int(x) for x in self.value.split("-"))
            first = dt.date(year, month, 1)
            nxt = dt.date(year + month // 12, month % 12 + 1, 1)
            return [first + dt.timedelta(days=i) for i in range((nxt - first).days)]
        return []

    def __str__(self) -> str:
        return self.kind if self.kind == "trending" else self.value


def api_url(base_url: str) -> str:
    return base_url.rstrip("/") + API_PATH


def api_params(period: Period) -> dict[str, str | int]:
    if period.kind == "trending":
        return {"sort": "trending"}
    return {period.kind: period.value}


def page_url(base_url: str, period: Period) -> str:
    path = {
        "date": DAILY_PAGE_PATH,
        "week": WEEKLY_PAGE_PATH,
        "month": MONTHLY_PAGE_PATH,
        "trending": TRENDING_PAGE_PATH,
    }[period.kind]
    return base_url.rstrip("/") + path.format(value=period.value)


def old_daily_page_url(base_url: str, day: dt.date) -> str:
    return f"{base_url.rstrip('/')}{OLD_DAILY_PAGE_PATH}?date={day.isoformat()}"


def parse(
    body: bytes | str,
    url: str,
    *,
    day: dt.date | None = None,
    skipped: list[Skipped] | None = None,
) -> list[PaperData]:
    """Parse a ``/api/daily_papers`` response. ``day`` is the list's date when the URL named one.

    A malformed item is left out and added to ``skipped``; a list of nothing else is an error.
    """
    return guarded(url, lambda: _parse_api(body, day, skipped))


def parse_page(
    body: bytes | str,
    url: str,
    *,
    day: dt.date | None = None,
    skipped: list[Skipped] | None = None,
) -> list[PaperData]:
    """Parse a Hugging Face papers page. ``day``: the daily list's date, if known."""
    return guarded(url, lambda: _parse_page(body, day or _url_day(url), skipped))


def parse_any(
    body: bytes | str, url: str, *, skipped: list[Skipped] | None = None
) -> list[PaperData]:
    """A saved capture of either kind, told apart by its first character."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if text.lstrip()[:1] in ("[", "{"):
        return parse(text, url, skipped=skipped)
    return parse_page(text, url, skipped=skipped)


def _url_day(url: str) -> dt.date | None:
    m = _URL_DAY_RE.search(url)
    value = m.group(1) if m else parse_qs(urlsplit(url).query).get("date", [""])[-1]
    try:
        return dt.date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _parse_api(
    body: bytes | str, day: dt.date | None, skipped: list[Skipped] | None
) -> list[PaperData]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Invalid(f"not JSON ({e})") from e
    if not isinstance(data, list):
        raise Invalid(f"expected a JSON list of papers, got {type(data).__name__}")
    return _items(data, day, skipped)


def _parse_page(
    body: bytes | str, day: dt.date | None, skipped: list[Skipped] | None
) -> list[PaperData]:
    with warnings.catch_warnings():
        # Whatever the body looks like (XML, a bare URL), it is judged below, not warned about.
        warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        soup = BeautifulSoup(body, "lxml")
    try:
        props = _props(soup, "DailyPapers")
    except Invalid as e:
        missing = str(e)
    else:
        papers = props.get("dailyPapers")
        if not isinstance(papers, list):
            raise Invalid("the DailyPapers data-props has no dailyPapers list")
        # The page's own date is a last resort: a weekly page's items carry their own days.
        return _items(papers, day, skipped, fallback_day=_date(props.get("date"), "date"))
    try:
        single = _props(soup, "PaperContent")
    except Invalid:
        pass
    else:
        return [_paper_page(single, day)]
    cards = [a for a in soup.find_all("article") if isinstance(a, Tag)]
    papers_from_cards = items(cards, lambda a: _card(a, day), _card_id, day, skipped)
    if not papers_from_cards:
        raise Invalid(f"{missing}, and no paper cards (article elements linking to /papers/<id>)")
    return _dedupe(papers_from_cards)


def _props(soup: BeautifulSoup, target: str) -> dict[str, Any]:
    # The HTML parser decodes the attribute whatever its quoting and entity escaping.
    node = soup.find(None, {"data-target": target})
    if not isinstance(node, Tag):
        raise Invalid(f'no element with data-target="{target}"')
    raw = node.get("data-props")
    if not isinstance(raw, str):
        raise Invalid(f"the {target} element has no data-props")
    try:
        props = json.loads(raw)
    except json.JSONDecodeError as e:
        raise Invalid(f"the {target} data-props is not JSON ({e})") from e
    if not isinstance(props, dict):
        raise Invalid(f"the {target} data-props is not an object")
    return props


def _paper_page(props: dict[str, Any], day: dt.date | None) -> PaperData:
    comments = props.get("comments")
    item = {
        "paper": props.get("paper"),
        "numComments": len(comments) if isinstance(comments, list) else 0,
    }
    return _item(item, day, None)


def _card(article: Tag, day: dt.date | None) -> PaperData | None:
    """One server-rendered paper card; None for an article that is not one."""
    heading = article.find("h3")
    link = heading.find("a", href=_PAPER_HREF_RE) if isinstance(heading, Tag) else None
    if not isinstance(link, Tag):
        return None
    m = _PAPER_HREF_RE.match(str(link.get("href", "")))
    title = _unwrap(link.get_text(" "))
    if m is None or not title:
        return None
    pid = m.group(1)
    if day is None:
        raise Invalid(f"paper card {pid}: the cards carry no date and the URL names none")
    return PaperData(
        id=_VERSION_RE.sub("", check_id(pid)),
        title=title,
        day=day,
        upvotes=_card_upvotes(article),
        comments=_card_count(article.find("a", href=re.compile(r"#community$"))),
        thumbnail=_card_thumbnail(article),
        source="huggingface",
    )


def _card_id(article: Tag) -> str | None:
    link = article.find("a", href=_PAPER_HREF_RE)
    m = _PAPER_HREF_RE.match(str(link.get("href", ""))) if isinstance(link, Tag) else None
    return m.group(1) if m else None


def _card_upvotes(article: Tag) -> int:
    # The vote box is the element around the (disabled) upvote checkbox.
    box = article.find("input", attrs={"type": "checkbox"})
    if isinstance(box, Tag) and isinstance(box.parent, Tag):
        return _card_count(box.parent)
    return 0


def _card_count(node: object) -> int:
    if not isinstance(node, Tag):
        return 0
    m = _COUNT_RE.search(node.get_text(" "))
    return int(m.group(1).replace(",", "")) if m else 0


def _card_thumbnail(article: Tag) -> str | None:
    # The card opens with its picture link; some cards show a video there instead.
    first = article.find("a")
    img = first.find("img", recursive=False) if isinstance(first, Tag) else None
    return _thumbnail(img.get("src")) if isinstance(img, Tag) else None


def _items(
    raw: list[Any],
    day: dt.date | None,
    skipped: list[Skipped] | None,
    fallback_day: dt.datetime | None = None,
) -> list[PaperData]:
    list_day = day or (fallback_day.date() if fallback_day else None)
    papers = items(raw, lambda item: _item(item, day, fallback_day), _item_id, list_day, skipped)
    return _dedupe(papers)


def _item_id(item: Any) -> object:
    paper = item.get("paper") if isinstance(item, dict) else None
    return paper.get("id") if isinstance(paper, dict) else None


def _dedupe(papers: list[PaperData]) -> list[PaperData]:
    seen: dict[str, PaperData] = {}
    for p in papers:
        seen.setdefault(p.id, p)
    return list(seen.values())


def _item(item: Any, day: dt.date | None, fallback_day: dt.datetime | None) -> PaperData:
    if not isinstance(item, dict):
        raise Invalid(f"expected an object, got {type(item).__name__}")
    paper = item.get("paper")
    if not isinstance(paper, dict):
        raise Invalid("no 'paper' object", field="paper")
    pid = _str(paper, "id")
    if not pid or not pid.strip():
        raise Invalid("paper has no id", field="id")
    pid = check_id(pid.strip())
    # A blank item title (seen: " ") falls back to the paper's own.
    title = _unwrap(_str(item, "title") or "") or _unwrap(_str(paper, "title") or "")
    if not title:
        raise Invalid(f"paper {pid} has no title", field="title")

    submitted = _date(paper.get("submittedOnDailyAt"), "submittedOnDailyAt")
    if submitted is None and "submittedOnDailyAt" not in paper:
        # Before submittedOnDailyAt existed (2024), the item's publishedAt was the submission.
        submitted = _date(item.get("publishedAt"), "publishedAt")
    when = submitted or fallback_day
    paper_day = day or (when.date() if when else None)
    if paper_day is None:
        raise Invalid(f"paper {pid} has no date", field="submittedOnDailyAt")

    org = paper.get("organization") or item.get("organization")
    authors = paper.get("authors") or []
    if not isinstance(authors, list):
        raise Invalid(f"paper {pid}: authors is not a list", field="authors")
    keywords = paper.get("ai_keywords") or []
    if not isinstance(keywords, list):
        raise Invalid(f"paper {pid}: ai_keywords is not a list", field="ai_keywords")
    return PaperData(
        id=_VERSION_RE.sub("", pid),
        title=title,
        day=paper_day,
        abstract=_unwrap(_str(paper, "summary") or _str(item, "summary") or ""),
        authors=tuple(
            _unwrap(a["name"])
            for a in authors
            if isinstance(a, dict) and isinstance(a.get("name"), str)
        ),
        upvotes=_int(paper, "upvotes"),
        comments=_int(item, "numComments"),
        published_at=_date(paper.get("publishedAt"), "publishedAt"),
        submitted_at=submitted,
        thumbnail=_thumbnail(item.get("thumbnail")),
        github_repo=_url(paper.get("githubRepo")),
        github_stars=_int(paper, "githubStars") if paper.get("githubStars") is not None else None,
        project_page=_url(paper.get("projectPage")),
        organization=_org(org),
        ai_summary=_unwrap(_str(paper, "ai_summary") or "") or None,
        ai_keywords=tuple(_unwrap(k) for k in keywords if isinstance(k, str)),
        source="huggingface",
    )


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Invalid(f"{key!r} should be a string, got {type(value).__name__}", field=key)
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid(f"{key!r} should be an integer, got {type(value).__name__}", field=key)
    return value


def _url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        return None
    return None if _UNSAFE_URL_RE.search(value) else value


def _thumbnail(value: Any) -> str | None:
    """An https URL on huggingface.co or one of its subdomains; anything else is dropped."""
    url = _url(value)
    return url if url is not None and _THUMBNAIL_RE.fullmatch(url) else None


def _org(value: Any) -> str | None:
    if isinstance(value, dict):
        name = value.get("fullname") or value.get("name")
        return (_unwrap(name) or None) if isinstance(name, str) else None
    return None


def _date(value: Any, field: str) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise Invalid(f"bad timestamp {value[:40]!r}", field=field) from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
