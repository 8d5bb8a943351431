"""Digests for the compose and browser tests (hand-written, real and hostile), and the
masthead, spec and composers they are composed with."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

from bs4 import BeautifulSoup

from newsletter import compose
from newsletter.models import Digest, Email, PaperData, Pick, Subscriber
from newsletter.sources import huggingface
from tests.conftest import DATA, fixture_path

MASTHEAD = compose.Masthead(
    title="Trending Papers",
    base_url="https://papers.example.org",
    from_header="Trending Papers <papers@example.org>",
    list_id="trending-papers.example.org",
    subject_template="{title}: {count} new papers for {date}",
)
NOW = dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.UTC)
# An & in the URL shows that it is escaped in the HTML (as &amp;) and verbatim in the text.
UNSUBSCRIBE_URL = "https://papers.example.org/unsubscribe/YWRh.c2ln?x=1&y=2"
MANAGE_URL = "https://papers.example.org/manage/bWFu.c2ln?x=1&y=2"


def spec(templates_dir: Path | None = None, **changes: Any) -> compose.ComposeSpec:
    base = compose.ComposeSpec(templates_dir, MASTHEAD, b"k" * 32, NOW)
    return dataclasses.replace(base, **changes)


def named(digest: Digest, name: str | None) -> Digest:
    """The digest for a subscriber of that name."""
    return dataclasses.replace(digest, subscriber=dataclasses.replace(digest.subscriber, name=name))


def render_email(
    digest: Digest,
    composer: compose.Composer | None = None,
    *,
    url: str = UNSUBSCRIBE_URL,
    manage_url: str = MANAGE_URL,
    limit: int | None = None,
) -> Email:
    """The email the composer (a fresh fast one by default) makes of the digest."""
    return (composer or compose.Composer(spec())).email(
        digest, unsubscribe_url=url, manage_url=manage_url, limit=limit
    )


def elements(html: str) -> list[tuple[str, dict[str, str], str]]:
    """Every element with its attributes (styles normalized) and its own text: the same for
    the fast path's HTML and the reference's (premailer writes a quote in text as it is,
    the fast path escapes it)."""
    soup = BeautifulSoup(html, "html.parser")
    out = []
    for tag in soup.find_all(True):
        attrs = {k: " ".join(v) if isinstance(v, list) else v for k, v in tag.attrs.items()}
        if "style" in attrs:
            attrs["style"] = "; ".join(sorted(p.strip() for p in attrs["style"].split(";")))
        own = " ".join(t.strip() for t in tag.find_all(string=True, recursive=False))
        out.append((tag.name, attrs, " ".join(own.split())))
    return out


def assert_same_email(fast: Email, reference: Email) -> None:
    """The fast path's email is the reference's: the same fields, text and HTML elements."""
    assert dataclasses.replace(fast, html="") == dataclasses.replace(reference, html="")
    assert elements(fast.html) == elements(reference.html)


def paper(**fields: Any) -> PaperData:
    fields["day"] = dt.date.fromisoformat(fields["day"])
    for key in ("authors", "ai_keywords"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return PaperData(**fields)


def load_digest(path: Path = DATA / "golden_digest.json") -> Digest:
    data = json.loads(path.read_text(encoding="utf-8"))
    sub = data["subscriber"]
    subscriber = Subscriber(
        email=sub["email"], name=sub.get("name"), topics=tuple(sub["topics"]), id="golden0001"
    )
    picks = tuple(
        Pick(paper(**p["paper"]), p["topic"], p["keyword"], p["field"], p["reason"])
        for p in data["picks"]
    )
    return Digest(subscriber, dt.date.fromisoformat(data["day"]), picks)


def fixture_digest(name: str, *, email: str = "reader@example.org", limit: int = 100) -> Digest:
    """Every paper of a real captured Hugging Face response, ranked by upvotes."""
    body = fixture_path(name).read_bytes()
    papers = huggingface.parse(body, f"fixture:{name}")
    papers.sort(key=lambda p: (-p.upvotes, p.id))
    picks = tuple(
        Pick(p, "ml", "model", "abstract", f'matched "model" in abstract · {p.upvotes} upvotes')
        for p in papers[:limit]
    )
    reader = Subscriber(email=email, topics=("ml",), name="Reader", id="reader0001")
    return Digest(reader, papers[0].day, picks)


HOSTILE_TITLE = (
    '<script>alert("x")</script> "Quoted" & \'single\' \r\nBcc: evil@example.com\r\n'
    "نماذج الانتشار للصور \u202eevil\u202c "
    "Pneumonoultramicroscopicsilicovolcanoconiosis" * 3
)
HOSTILE_NAME = 'Eve "the <b>bold</b>"\r\nBcc: evil@example.com'


def hostile_digest() -> Digest:
    day = dt.date(2026, 11, 23)
    long_abstract = ("Attention " * 1100).strip()  # 10 KB without a sentence boundary
    long_summary = "This is a sentence about <b>models</b>. " * 260  # 10 KB of sentences
    first = PaperData(
        id="2601.00001",
        title=HOSTILE_TITLE,
        day=day,
        abstract=long_abstract,
        authors=("</p><script>alert(1)</script>", "עדה לאבלייס", "Ada\r\nLovelace", "Fourth"),
        upvotes=7,
        comments=1,
        thumbnail="javascript:alert(1)",
        github_repo="javascript:alert(1)",
        github_stars=5,
        project_page="data:text/html,<script>alert(1)</script>",
        organization='<img src=x onerror="alert(1)">',
    )
    second = PaperData(
        id="2601.00002",
        title="مقالة باللغة العربية عن نماذج اللغة الكبيرة",
        day=day,
        ai_summary=long_summary,
        authors=("مؤلف أول",),
        thumbnail="https://example.org/thumb.png",
        github_repo="https://github.com/example/" + "x" * 120,
    )
    picks = (
        Pick(first, "diffusion", "diffusion", "title", 'matched "diffusion"\r\nX-Evil: 1'),
        Pick(second, "diffusion", "diffusion", "abstract", "matched in abstract"),
    )
    subscriber = Subscriber(
        email="eve@example.org",
        topics=("diffusion", "<b>topic</b>"),
        name=HOSTILE_NAME,
        id="hostile01",
    )
    return Digest(subscriber, day, picks)
