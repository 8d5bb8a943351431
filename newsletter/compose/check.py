"""``newsletter check`` for the templates: sample digests rendered through them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from newsletter.compose.composer import Composer, ComposeSpec
from newsletter.compose.masthead import Masthead
from newsletter.compose.size import HTML_LIMIT
from newsletter.compose.transactional import KINDS, LINK, transactional
from newsletter.models import Digest, PaperData, Pick, Subscriber

_SAMPLE = Masthead(
    title="Sample",
    base_url="https://example.org",
    from_header="papers@example.org",
    list_id="sample.example.org",
    subject_template="{title}: {count}",
)


def sample_digests() -> list[Digest]:
    """Digests with every optional field set and every one unset, to try templates."""
    day = dt.date(2024, 1, 2)
    paper = PaperData(
        id="2401.00001",
        title='A Sample Paper on Diffusion <Models> & "Quotes"',
        day=day,
        abstract="We study samples. They are useful. " * 20,
        authors=("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
        upvotes=42,
        comments=3,
        thumbnail="https://example.org/thumb.png",
        github_repo="https://github.com/example/sample",
        github_stars=1234,
        project_page="https://example.org/project",
        organization="Example Lab",
        ai_summary="A sample summary.",
        ai_keywords=("diffusion",),
    )
    bare = PaperData(id="2401.00002", title="A bare paper", day=day)
    pick = Pick(paper, "diffusion", "diffusion", "title", 'matched "diffusion" in title')
    reader = Subscriber(email="reader@example.org", topics=("diffusion",), name="Reader")
    anonymous = Subscriber(email="anon@example.org", topics=("diffusion", "robots"))
    return [
        Digest(reader, day, (pick, Pick(bare, "diffusion", "diffusion", "abstract", "r"))),
        Digest(anonymous, day, (Pick(bare, "robots", "robot", "abstract", "r"),)),
    ]


def check_templates(templates_dir: Path | None) -> list[str]:
    """Render sample digests through the templates; raise TemplateError naming file and line.

    Every branch of the built-in templates is taken at least once: optional fields set and
    unset, a name and none, one paper and several, summaries shown and dropped. Returns one
    warning per digest template that each recipient's email is rendered from in full
    (slower), saying why.
    """
    spec = ComposeSpec(templates_dir, _SAMPLE, b"check", dt.datetime(2024, 1, 2, tzinfo=dt.UTC))
    composer = Composer(spec)
    for digest in sample_digests():
        for limit in (HTML_LIMIT, 0):  # limit 0: the size guard drops summaries and papers
            composer.render(
                digest,
                unsubscribe_url="https://example.org/unsubscribe/x?a=1&b=2",
                manage_url="https://example.org/manage/x?a=1&b=2",
                limit=limit,
            )
    for kind in KINDS:  # a sign-up's emails, with the link's lifetime said and not
        for hours in (48, None):
            url = f"https://example.org/{LINK[kind]}/x?a=1&b=2"
            transactional(
                kind,
                "reader@example.org",
                {LINK[kind]: url},
                _SAMPLE,
                now=spec.now,
                confirm_hours=hours,
                templates_dir=templates_dir,
            )
    return [
        f"{_where(templates_dir, name)}: cannot be rendered once for many recipients, so each "
        f"one's email is rendered in full (slower): {reason}"
        for name, reason in composer.full_renders.items()
    ]


def _where(templates_dir: Path | None, name: str) -> str:
    """The operator's own file of that name, or the name of the built-in template."""
    if templates_dir is not None and (templates_dir / name).is_file():
        return str(templates_dir / name)
    return name
