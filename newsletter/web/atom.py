"""Atom 1.0 feeds (RFC 4287) of the archive's papers, written with the standard library.

Pure: the same entries give the same bytes (no clock; ``updated`` comes from the upvote
snapshots). Each paper has one id wherever and whenever it appears, ``tag:<host>,<year>:
paper/<arXiv id>`` with the year its arXiv id names, so a reader never sees it twice. A
paper in several topics is one entry carrying each topic's reason (and a category each).
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from markupsafe import escape

from newsletter.web.archive import ArchiveEntry

ATOM = "http://www.w3.org/2005/Atom"
#: The year in the feeds' own tag ids (and in a paper's whose id names none): fixed, so ids
#: never change.
TAG_YEAR = 2026
#: Authors listed per entry: some papers have hundreds; fifty entries stay under 100 KB.
MAX_AUTHORS = 10
_NEW_ID = re.compile(r"(\d{2})(\d{2})\.\d{4,5}")
# What XML 1.0 cannot carry at all, even escaped: a source's stray control character.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def host(base_url: str) -> str:
    return (urlsplit(base_url).hostname or "localhost").lower()


def paper_id(base_url: str, arxiv_id: str) -> str:
    """The entry id of a paper: the same in every feed, on every day, in every build."""
    found = _NEW_ID.fullmatch(arxiv_id)
    year = 2000 + int(found.group(1)) if found else TAG_YEAR
    return f"tag:{host(base_url)},{year}:paper/{arxiv_id}"


def feed_id(base_url: str, name: str) -> str:
    return f"tag:{host(base_url)},{TAG_YEAR}:feed/{name}"


def stamp(when: dt.datetime) -> str:
    """RFC 3339 in UTC, to the second."""
    return when.astimezone(dt.UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _add(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", {k: clean(v) for k, v in attrs.items()})
    if text is not None:
        element.text = clean(text)
    return element


def feed(
    *,
    base_url: str,
    name: str,
    title: str,
    subtitle: str,
    self_url: str,
    page_url: str,
    entries: Sequence[Sequence[ArchiveEntry]],
    topic_names: Mapping[str, str],
    updated: dt.datetime,
) -> bytes:
    """The feed's bytes. ``entries``: one list per paper, an entry per topic it is in (the
    same paper and day), newest first; ``updated``: when the feed has no entries."""
    ET.register_namespace("", ATOM)
    root = ET.Element(f"{{{ATOM}}}feed")
    _add(root, "id", feed_id(base_url, name))
    _add(root, "title", title)
    _add(root, "subtitle", subtitle)
    newest = max((e.updated for group in entries for e in group), default=updated)
    _add(root, "updated", stamp(newest))
    _add(root, "link", rel="self", type="application/atom+xml", href=self_url)
    _add(root, "link", rel="alternate", type="text/html", href=page_url)
    # An entry without authors (a source may list none) takes the feed's.
    _add(_add(root, "author"), "name", title)
    _add(root, "generator", "papers-newsletter")
    for group in entries:
        _entry(root, base_url, group, topic_names)
    ET.indent(root, space="  ")
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


def _entry(
    root: ET.Element, base_url: str, group: Sequence[ArchiveEntry], topic_names: Mapping[str, str]
) -> None:
    paper = group[0].paper
    entry = _add(root, "entry")
    _add(entry, "id", paper_id(base_url, paper.id))
    _add(entry, "title", " ".join(paper.title.split()))
    _add(entry, "link", rel="alternate", type="text/html", href=paper.hf_url)
    _add(entry, "link", rel="related", type="text/html", href=paper.arxiv_url, title="arXiv")
    published = paper.published_at or paper.submitted_at
    if published is None:
        published = dt.datetime.combine(paper.day, dt.time(12), tzinfo=dt.UTC)
    _add(entry, "published", stamp(published))
    _add(entry, "updated", stamp(max(e.updated for e in group)))
    for author in paper.authors[:MAX_AUTHORS]:
        _add(_add(entry, "author"), "name", author)
    for e in group:
        _add(entry, "category", term=e.topic, label=topic_names.get(e.topic, e.topic))
    _add(entry, "summary", _summary(group, topic_names), type="html")


def _summary(group: Sequence[ArchiveEntry], topic_names: Mapping[str, str]) -> str:
    """Each topic's reason, then the paper's summary: HTML, escaped here and again by the
    XML writer (as Atom's ``type="html"`` wants)."""
    paper = group[0].paper
    parts = [
        f"<p><strong>{escape(topic_names.get(e.topic, e.topic))}</strong>: {escape(e.reason)}</p>"
        for e in group
    ]
    text = paper.ai_summary or textwrap.shorten(paper.abstract, width=600, placeholder=" …")
    if text:
        parts.append(f"<p>{escape(text)}</p>")
    if len(paper.authors) > MAX_AUTHORS:
        parts.append(f"<p>{len(paper.authors)} authors; the first {MAX_AUTHORS} are listed.</p>")
    return "".join(parts)
