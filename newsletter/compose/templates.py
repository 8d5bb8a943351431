"""The Jinja environment, the template filters, and what the templates see.

Templates are read when the environment is made (``make_env``, then ``read``): composing
reads no file. They are autoescaped and use StrictUndefined, so a typo in a variable name
is an error, not a blank. An operator's ``newsletter.templates_dir`` is searched before the
built-in templates, file by file. Any error while rendering becomes a ``TemplateError``
naming the template file and line (``render_pieces``).
"""

from __future__ import annotations

import functools
import re
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from newsletter.compose.headers import one_line
from newsletter.compose.masthead import Masthead
from newsletter.errors import TemplateError
from newsletter.models import Digest

HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"
CARD_TEMPLATE = "_paper.html.j2"
TEXT_CARD_TEMPLATE = "_paper.txt.j2"


def builtin_templates_dir() -> Path:
    """Inside the wheel the templates sit in the package; in a checkout, at the top level."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / HTML_TEMPLATE).is_file():
            return candidate
    raise TemplateError(HTML_TEMPLATE, None, f"built-in templates not found next to {here}")


def make_env(
    templates_dir: Path | None = None, *, finalize: Callable[[Any], Any] | None = None
) -> jinja2.Environment:
    """The environment; ``templates_dir`` overrides the built-in templates file by file.

    ``finalize`` sees every printed value (the HTML skeletons' hook); no template is compiled
    until ``read``, so a finalize set on the environment before that applies to them all.
    """
    searchpath = [str(templates_dir)] if templates_dir else []
    searchpath.append(str(builtin_templates_dir()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        auto_reload=False,  # an environment lives for one run: no stat() per template use
        autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["authors_short"] = authors_short
    # The same abstracts, for every card and text block; paper lines repeat, a recipient's
    # own lines do not.
    env.filters["excerpt"] = functools.lru_cache(maxsize=2048)(excerpt)
    env.filters["wrap"] = functools.lru_cache(maxsize=4096)(wrap)
    env.filters["http_url"] = http_url
    env.filters["thousands"] = lambda n: f"{n:,}"
    return env


def read(env: jinja2.Environment) -> None:
    """Read and compile the templates now, not while composing the first digest. A broken
    one is left for rendering to report, with its file and line."""
    for name in (HTML_TEMPLATE, TEXT_TEMPLATE, CARD_TEMPLATE, TEXT_CARD_TEMPLATE):
        try:
            template = env.get_template(name)
        except jinja2.TemplateError:
            continue
        # Jinja keeps a template's globals as a ChainMap over the environment's, merged
        # into every render's context (4 us a render, a few renders a digest); nothing
        # changes the globals once the templates are read, so a plain dict sees the same.
        template.globals = dict(template.globals)


# --- filters -------------------------------------------------------------------------------


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
    head = text[:limit]
    if " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(",;:") + " …"


def wrap(text: str, width: int = 78, indent: str = "") -> str:
    """Fill to ``width``; a word longer than a line (a URL) stays whole on its own line."""
    words = text.split(" ")
    if width - len(indent) >= 1 and words == text.split():
        return _fill_words(words, width - len(indent), indent)
    return textwrap.fill(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _fill_words(words: list[str], room: int, indent: str) -> str:
    """``textwrap.fill`` (no hyphen or long-word breaks) for words between single spaces.

    The recipient's own lines (greeting, footer) miss the cache; textwrap's general
    chunking costs tens of microseconds each. Tested against textwrap.
    """
    lines: list[str] = []
    line: list[str] = []
    used = 0
    for word in words:
        if line:
            if used + 1 + len(word) <= room:
                line.append(word)
                used += 1 + len(word)
                continue
            lines.append(indent + " ".join(line))
        line, used = [word], len(word)
    if line:
        lines.append(indent + " ".join(line))
    return "\n".join(lines)


def http_url(value: str | None) -> str:
    """The URL when it is http(s), else "" (no javascript: or data: links from a source)."""
    if not value:
        return ""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return ""
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else ""


# --- what the templates see ----------------------------------------------------------------


def new_papers(count: int) -> str:
    """The subject's ``{papers}``: "1 new paper", "3 new papers"."""
    return f"{count} new paper" if count == 1 else f"{count} new papers"


def subject(masthead: Masthead, digest: Digest) -> str:
    count = len(digest.picks)
    text = masthead.subject_template.format(
        title=masthead.title, count=count, papers=new_papers(count), date=digest.day.isoformat()
    )
    # A header is one line: no CR/LF from a title or template can start another header.
    return one_line(text)


def base_context(
    digest: Digest,
    masthead: Masthead,
    recipient_name: str | None,
    unsubscribe_url: str,
    manage_url: str,
) -> dict[str, Any]:
    """What both templates see, apart from the papers (``digest``, ``picks``, ``more``)."""
    return {
        "title": masthead.title,
        "base_url": masthead.base_url,
        "operator_address": masthead.address,
        "subject": subject(masthead, digest),
        "recipient_name": recipient_name,
        "recipient_email": digest.subscriber.email,
        "unsubscribe_url": unsubscribe_url,
        "manage_url": manage_url,
        "topics": masthead.topic_labels(digest.subscriber.topics),
        "day": digest.day,
        "daily_url": f"https://huggingface.co/papers/date/{digest.day.isoformat()}",
        # The day's page in the public archive; "" when the archive is off.
        "day_url": (
            f"{masthead.archive_url}/{digest.day.isoformat()}/" if masthead.archive_url else ""
        ),
    }


# --- rendering -----------------------------------------------------------------------------


def render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return "".join(render_pieces(env, name, context))


def render_pieces(
    env: jinja2.Environment,
    name: str,
    context: dict[str, Any],
    template: jinja2.Template | None = None,
) -> list[str]:
    """What ``Template.render`` joins: each printed value is a piece of its own.

    ``template``: this one instead of the named one (a split of it, ``once``).
    """
    try:
        if template is None:
            template = env.get_template(name)
        try:
            return list(template.root_render_func(template.new_context(context)))
        except Exception:
            env.handle_exception()  # re-raises with the template's file and line
    except jinja2.TemplateSyntaxError as e:
        # An assertion error (an unknown filter) is no syntax error: its message says what.
        kind = "" if isinstance(e, jinja2.TemplateAssertionError) else "syntax error: "
        raise TemplateError(e.filename or e.name or name, e.lineno, f"{kind}{e.message}") from e
    except jinja2.TemplateNotFound as e:
        raise TemplateError(name, None, f"template not found: {e.name}") from e
    except jinja2.UndefinedError as e:
        raise TemplateError(*_template_position(e, name), f"undefined: {e.message}") from e
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as e:
        raise TemplateError(*_template_position(e, name), f"{type(e).__name__}: {e}") from e


def _template_position(exc: BaseException, default: str) -> tuple[str, int | None]:
    """The innermost template file and line in a render-time traceback.

    Jinja rewrites the traceback so that template frames carry the template's file name and
    line; those frames are marked with ``__jinja_exception__`` in their globals.
    """
    tb = exc.__traceback__
    found: tuple[str, int | None] = (default, None)
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found
