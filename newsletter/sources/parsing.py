"""What every parser shares: an exception for unrecognised content and the guard that turns
any failure on foreign data into a ``ParseError`` naming the URL."""

from __future__ import annotations

from collections.abc import Callable

from newsletter.errors import ParseError
from newsletter.models import PaperData


class Invalid(Exception):
    """What the parser did not recognise; becomes a ParseError with the URL."""


def guarded(url: str, fn: Callable[[], list[PaperData]]) -> list[PaperData]:
    try:
        return fn()
    except ParseError:
        raise
    except Invalid as e:
        raise ParseError(url, str(e)) from e
    except Exception as e:  # any surprise in foreign data is a parse failure, named
        raise ParseError(url, f"{type(e).__name__}: {e}") from e
