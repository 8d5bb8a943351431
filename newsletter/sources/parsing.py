"""What every parser shares: an exception for unrecognised content, the guard that turns
any failure on foreign data into a ``ParseError`` naming the URL, the cleaning of the text
a source sends, and the item loop that skips a bad item instead of losing its list."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from newsletter.errors import ParseError
from newsletter.models import PaperData

T = TypeVar("T")

# C0 controls but the whitespace ones (split() turns those into spaces), DEL and C1, and the
# bidi overrides and isolates that can make a title read backwards in a mail client.
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0e-\x1b\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# What the newsletter accepts as a paper id: new style 2405.15738, old style hep-th/9901001.
_ARXIV_ID_RE = re.compile(
    r"(?:[0-9]{4}\.[0-9]{4,5}|[a-z-]+(?:\.[A-Z]{2})?/[0-9]{7})(?:v[0-9]+)?", re.ASCII
)


class Invalid(Exception):
    """What the parser did not recognise; becomes a ParseError with the URL.

    ``field`` names the key of the item at fault, when one is.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Skipped:
    """An item a parser left out of its list; the parsers make them, the sources log them."""

    index: int
    paper: str | None  # the paper id, or a short repr of a malformed one; None if it has none
    day: dt.date | None  # the list's day, when the parser knows it
    field: str | None
    problem: str


def guarded(url: str, fn: Callable[[], list[PaperData]]) -> list[PaperData]:
    try:
        return fn()
    except ParseError:
        raise
    except Invalid as e:
        raise ParseError(url, str(e)) from e
    except Exception as e:  # any surprise in foreign data is a parse failure, named
        raise ParseError(url, f"{type(e).__name__}: {e}") from e


def items(
    raw: Sequence[T],
    parse: Callable[[T], PaperData | None],
    ident: Callable[[T], object],
    day: dt.date | None,
    skipped: list[Skipped] | None,
) -> list[PaperData]:
    """Each item of ``raw`` parsed; a bad one is left out (and added to ``skipped``), and
    one ``parse`` says is not an item at all (None) is passed over.

    A list whose every item is bad is not a list of papers: that is ``Invalid``.
    """
    papers: list[PaperData] = []
    first: Skipped | None = None
    bad = 0
    for i, item in enumerate(raw):
        try:
            paper = parse(item)
        except Invalid as e:
            left_out = Skipped(i, shown_id(ident(item)), day, e.field, str(e))
            first, bad = first or left_out, bad + 1
            if skipped is not None:
                skipped.append(left_out)
            continue
        if paper is not None:
            papers.append(paper)
    if first is not None and not papers:
        others = f" (and {bad - 1} more)" if bad > 1 else ""
        raise Invalid(f"item {first.index}: {first.problem}{others}", field=first.field)
    return papers


def shown_id(value: object) -> str | None:
    """A raw id as a log line may show it: as is when well-formed, else a short repr."""
    if not isinstance(value, str):
        return None
    return value if is_arxiv_id(value) else repr(value[:40])


def is_arxiv_id(pid: str) -> bool:
    return _ARXIV_ID_RE.fullmatch(pid) is not None


def check_id(pid: str) -> str:
    """``pid`` if it is a well-formed arXiv id, else ``Invalid`` naming the field."""
    if not is_arxiv_id(pid):
        raise Invalid(f"id {pid[:40]!r} is not an arXiv id", field="id")
    return pid


def unwrap(text: str) -> str:
    """Source text as the newsletter keeps it: control characters removed, one line.

    arXiv hard-wraps titles and abstracts ("Multimodal\\n  Models"): the lines are joined.
    """
    joined = " ".join(text.split())
    if joined.isprintable():  # the usual case, and a quick test: no control character left
        return joined
    return " ".join(_CONTROLS_RE.sub("", joined).split())
