"""Hugging Face Daily Papers: URL constants and pure parsers.

``parse(body, url)`` reads the JSON API (``/api/daily_papers``); ``parse_page(body, url)``
reads a papers page through the JSON in its ``data-target="DailyPapers"`` hydration element.
Both return ``list[PaperData]`` or raise ``ParseError`` naming the URL: a well-formed empty
list is "no papers that day", anything unrecognised is an error, never a silent empty list.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from typing import Any

from bs4 import BeautifulSoup
from bs4.filter import SoupStrainer

from newsletter.errors import ParseError
from newsletter.models import PaperData

API_PATH = "/api/daily_papers"
DAILY_PAGE_PATH = "/papers/date/{day}"

_VERSION_RE = re.compile(r"v\d+$")


def api_url(base_url: str) -> str:
    return base_url.rstrip("/") + API_PATH


def parse(body: bytes | str, url: str, *, day: dt.date | None = None) -> list[PaperData]:
    """Parse a ``/api/daily_papers`` response. ``day`` is the list's date when the URL named one."""
    return _guarded(url, lambda: _parse_api(body, day))


def parse_page(body: bytes | str, url: str) -> list[PaperData]:
    """Parse a Hugging Face papers page through its hydration JSON."""
    return _guarded(url, lambda: _parse_page(body))


def parse_any(body: bytes | str, url: str) -> list[PaperData]:
    """A saved capture of either kind, told apart by its first character."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if text.lstrip()[:1] in ("[", "{"):
        return parse(text, url)
    return parse_page(text, url)


class _Invalid(Exception):
    """What the parser did not recognise; becomes a ParseError with the URL."""


def _guarded(url: str, fn: Callable[[], list[PaperData]]) -> list[PaperData]:
    try:
        return fn()
    except ParseError:
        raise
    except _Invalid as e:
        raise ParseError(url, str(e)) from e
    except Exception as e:  # any surprise in foreign data is a parse failure, named
        raise ParseError(url, f"{type(e).__name__}: {e}") from e


def _parse_api(body: bytes | str, day: dt.date | None) -> list[PaperData]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Invalid(f"not JSON ({e})") from e
    if not isinstance(data, list):
        raise _Invalid(f"expected a JSON list of papers, got {type(data).__name__}")
    return _items(data, day)


def _parse_page(body: bytes | str) -> list[PaperData]:
    # Only the hydration elements are built into a tree: the page is ~200 KB of markup.
    strainer = SoupStrainer(attrs={"data-target": "DailyPapers"})
    soup = BeautifulSoup(body, "lxml", parse_only=strainer)
    node = soup.find(None, {"data-target": "DailyPapers"})
    if node is None:
        raise _Invalid('no element with data-target="DailyPapers" (not a papers page?)')
    raw = node.get("data-props")
    if not isinstance(raw, str):
        raise _Invalid("the DailyPapers element has no data-props")
    try:
        props = json.loads(raw)
    except json.JSONDecodeError as e:
        raise _Invalid(f"data-props is not JSON ({e})") from e
    if not isinstance(props, dict) or not isinstance(props.get("dailyPapers"), list):
        raise _Invalid("data-props has no dailyPapers list")
    day = _date(props.get("date"))
    return _items(props["dailyPapers"], day.date() if day else None)


def _items(items: list[Any], day: dt.date | None) -> list[PaperData]:
    papers: dict[str, PaperData] = {}
    for i, item in enumerate(items):
        try:
            paper = _item(item, day)
        except _Invalid as e:
            raise _Invalid(f"item {i}: {e}") from e
        papers.setdefault(paper.id, paper)
    return list(papers.values())


def _item(item: Any, day: dt.date | None) -> PaperData:
    if not isinstance(item, dict):
        raise _Invalid(f"expected an object, got {type(item).__name__}")
    paper = item.get("paper")
    if not isinstance(paper, dict):
        raise _Invalid("no 'paper' object")
    pid = _str(paper, "id")
    if not pid:
        raise _Invalid("paper has no id")
    title = _str(item, "title") or _str(paper, "title")
    if not title:
        raise _Invalid(f"paper {pid} has no title")

    submitted = _date(paper.get("submittedOnDailyAt"))
    if submitted is None and "submittedOnDailyAt" not in paper:
        # Before submittedOnDailyAt existed (2024), the item's publishedAt was the submission.
        submitted = _date(item.get("publishedAt"))
    paper_day = day or (submitted.date() if submitted else None)
    if paper_day is None:
        raise _Invalid(f"paper {pid} has no date")

    org = paper.get("organization") or item.get("organization")
    authors = paper.get("authors") or []
    if not isinstance(authors, list):
        raise _Invalid(f"paper {pid}: authors is not a list")
    keywords = paper.get("ai_keywords") or []
    if not isinstance(keywords, list):
        raise _Invalid(f"paper {pid}: ai_keywords is not a list")
    return PaperData(
        id=_VERSION_RE.sub("", pid.strip()),
        title=_unwrap(title),
        day=paper_day,
        abstract=_unwrap(_str(paper, "summary") or _str(item, "summary") or ""),
        authors=tuple(
            _unwrap(a["name"])
            for a in authors
            if isinstance(a, dict) and isinstance(a.get("name"), str)
        ),
        upvotes=_int(paper, "upvotes"),
        comments=_int(item, "numComments"),
        published_at=_date(paper.get("publishedAt")),
        submitted_at=submitted,
        thumbnail=_url(item.get("thumbnail")),
        github_repo=_url(paper.get("githubRepo")),
        github_stars=_int(paper, "githubStars") if paper.get("githubStars") is not None else None,
        project_page=_url(paper.get("projectPage")),
        organization=_org(org),
        ai_summary=_unwrap(_str(paper, "ai_summary") or "") or None,
        ai_keywords=tuple(_unwrap(k) for k in keywords if isinstance(k, str)),
        source="huggingface",
    )


def _unwrap(text: str) -> str:
    """arXiv hard-wraps titles and abstracts ("Multimodal\\n  Models"): join the lines."""
    return " ".join(text.split())


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Invalid(f"{key!r} should be a string, got {type(value).__name__}")
    return value


def _int(obj: dict[str, Any], key: str) -> int:
    value = obj.get(key)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"{key!r} should be an integer, got {type(value).__name__}")
    return value


def _url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def _org(value: Any) -> str | None:
    if isinstance(value, dict):
        name = value.get("fullname") or value.get("name")
        return name if isinstance(name, str) and name else None
    return None


def _date(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise _Invalid(f"bad timestamp {value!r}") from e
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)
