"""Digest -> Email: the Jinja environment, the templates, CSS inlining.

Pure apart from reading templates once when the environment is built. Templates are
autoescaped and use StrictUndefined, so a typo in a variable name is an error, not a blank.
An operator's ``newsletter.templates_dir`` is searched before the built-in templates, file
by file.
"""

from __future__ import annotations

import logging
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import premailer

from newsletter.errors import TemplateError
from newsletter.models import Digest, Email

log = logging.getLogger(__name__)

HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"


def builtin_templates_dir() -> Path:
    """Inside the wheel the templates sit in the package; in a checkout, at the top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / HTML_TEMPLATE).is_file():
            return candidate
    raise TemplateError(HTML_TEMPLATE, None, f"built-in templates not found next to {here}")


def make_env(templates_dir: Path | None = None) -> jinja2.Environment:
    searchpath = [str(templates_dir)] if templates_dir else []
    searchpath.append(str(builtin_templates_dir()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["authors_short"] = authors_short
    env.filters["excerpt"] = excerpt
    env.filters["wrap"] = wrap
    env.filters["thousands"] = lambda n: f"{n:,}"
    return env


@dataclass(frozen=True, slots=True)
class Identity:
    """Per-installation values every email shows."""

    title: str
    base_url: str
    operator_address: str
    subject_template: str


def authors_short(authors: Sequence[str], first: int = 3) -> str:
    if len(authors) <= first:
        return ", ".join(authors)
    return ", ".join(authors[:first]) + " et al."


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def excerpt(text: str, limit: int = 400) -> str:
    """Cut at the last sentence boundary before ``limit``; at a word with an ellipsis if none."""
    if len(text) <= limit:
        return text
    cut = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > limit:
            break
        cut = m.start()
    if cut >= limit // 3:
        return text[:cut]
    return text[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def wrap(text: str, width: int = 78, indent: str = "") -> str:
    return textwrap.fill(
        text, width=width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
    )


def subject(identity: Identity, digest: Digest) -> str:
    text = identity.subject_template.format(
        title=identity.title, count=len(digest.picks), date=digest.day.isoformat()
    )
    # A header is one line: no CR/LF from a title or template can start another header.
    return " ".join(text.split())


def render(
    digest: Digest,
    env: jinja2.Environment,
    identity: Identity,
    *,
    recipient_name: str | None,
    unsubscribe_url: str,
) -> Email:
    subject_line = subject(identity, digest)
    context = {
        "title": identity.title,
        "digest": digest,
        "picks": digest.picks,
        "day": digest.day,
        "recipient_name": recipient_name,
        "unsubscribe_url": unsubscribe_url,
        "base_url": identity.base_url,
        "operator_address": identity.operator_address,
        "topics": digest.subscriber.topics,
        "subject": subject_line,
    }
    html = _render(env, HTML_TEMPLATE, context)
    text = _render(env, TEXT_TEMPLATE, context)
    return Email(
        to=digest.subscriber.email,
        to_name=recipient_name,
        subject=subject_line,
        html=inline_css(html),
        text=text,
        paper_ids=digest.paper_ids,
    )


def _render(env: jinja2.Environment, name: str, context: dict[str, object]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(
            e.filename or e.name or name, e.lineno, f"syntax error: {e.message}"
        ) from e
    except jinja2.TemplateNotFound as e:
        raise TemplateError(name, None, f"template not found: {e.name}") from e
    except jinja2.UndefinedError as e:
        raise TemplateError(*_template_position(e, name), f"undefined: {e.message}") from e
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as e:
        raise TemplateError(*_template_position(e, name), f"{type(e).__name__}: {e}") from e


def _template_position(exc: BaseException, default: str) -> tuple[str, int | None]:
    """The template file and line from a render-time traceback."""
    tb = exc.__traceback__
    found: tuple[str, int | None] = (default, None)
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes; media queries stay in <style>."""
    return str(
        premailer.Premailer(
            html,
            allow_network=False,
            strip_important=False,
            keep_style_tags=True,
            remove_classes=False,
            cssutils_logging_level=logging.CRITICAL,
            disable_validation=True,
        ).transform()
    )


def sample_digest() -> Digest:
    """A digest with every optional field set, to try templates before a run."""
    import datetime as dt

    from newsletter.models import PaperData, Pick, Subscriber

    paper = PaperData(
        id="2401.00001",
        title='A Sample Paper on Diffusion <Models> & "Quotes"',
        day=dt.date(2024, 1, 2),
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
    subscriber = Subscriber(email="reader@example.org", topics=("diffusion",), name="Reader")
    pick = Pick(
        paper, "diffusion", "diffusion", "title", 'matched "diffusion" in title · 42 upvotes'
    )
    bare = PaperData(id="2401.00002", title="A bare paper", day=paper.day)
    return Digest(
        subscriber, paper.day, (pick, Pick(bare, "diffusion", "diffusion", "abstract", "r"))
    )


def check_templates(templates_dir: Path | None) -> None:
    """Render the sample digest through the templates; raise TemplateError naming file and line."""
    identity = Identity("Sample", "https://example.org", "papers@example.org", "{title}: {count}")
    render(
        sample_digest(),
        make_env(templates_dir),
        identity,
        recipient_name="Reader",
        unsubscribe_url="https://example.org/unsubscribe/x",
    )
