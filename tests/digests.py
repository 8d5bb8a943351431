"""Digests for the render, message and browser tests: hand-written, real and hostile."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from newsletter import render
from newsletter.models import Digest, PaperData, Pick, Subscriber
from newsletter.sources import huggingface
from tests.conftest import DATA, fixture_path

IDENTITY = render.Identity(
    title="Trending Papers",
    base_url="https://papers.example.org",
    operator_address="papers@example.org",
    subject_template="{title}: {count} new papers for {date}",
)
# An & in the URL shows that it is escaped in the HTML (as &amp;) and verbatim in the text.
UNSUBSCRIBE_URL = "https://papers.example.org/unsubscribe/YWRh.c2ln?x=1&y=2"


def paper(**fields: Any) -> PaperData:
    fields["day"] = dt.date.fromisoformat(fields["day"])
    for key in ("authors", "ai_keywords"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return PaperData(**fields)


def load_digest(path: Path = DATA / "golden_digest.json") -> Digest:
    data = json.loads(path.read_text(encoding="utf-8"))
    sub = data["subscriber"]
    subscriber = Subscriber(email=sub["email"], name=sub.get("name"), topics=tuple(sub["topics"]))
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
    return Digest(Subscriber(email=email, topics=("ml",), name="Reader"), papers[0].day, picks)


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
        email="eve@example.org", topics=("diffusion", "<b>topic</b>"), name=HOSTILE_NAME
    )
    return Digest(subscriber, day, picks)
