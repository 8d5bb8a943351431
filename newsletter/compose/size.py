"""The size guard: an email's HTML stays under Gmail's clipping limit, on the wire.

When the HTML is too big, the summaries of the lowest-ranked papers go first, then whole
papers from the bottom (logged); one paper always stays, and the email says how many did not
fit. Bytes are never cut (the HTML must stay valid): whole parts are left out, least
important first. The size falls with every step, so a binary search finds the first step
that fits; each step is rendered (and measured) by the caller.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from newsletter.models import Digest, Email

log = logging.getLogger(__name__)

#: Gmail clips a message whose HTML exceeds about 102 KB; stay clearly below. Measured as
#: the HTML part goes on the wire (quoted-printable: "=" and non-ASCII take 3 bytes, long
#: lines a soft break), which is what a receiving server counts.
HTML_LIMIT = 100_000

_P = TypeVar("_P")


@dataclass(frozen=True, slots=True)
class Fitted(Generic[_P]):
    """The step of the size guard that fits (or the last resort)."""

    context: dict[str, Any]  # what the templates saw: the papers kept, ``more`` left out
    html: str
    parts: _P  # what the renderer made the HTML from, for the message writer
    size: int  # bytes of the HTML on the wire
    summaries: int  # papers that kept their summary
    kept: int  # papers kept


def fit(
    digest: Digest,
    base: dict[str, Any],
    limit: int,
    render: Callable[[dict[str, Any], int], tuple[str, _P, int]],
) -> Fitted[_P]:
    """The email's HTML with as much as fits in ``limit`` bytes.

    ``render(context, summaries)`` gives the HTML, its parts and its size on the wire for a
    context that shows the first ``summaries`` papers with their summary.
    """
    n = len(digest.picks)

    def attempt(step: int) -> Fitted[_P]:
        """Step 0 is everything; each step drops the lowest-ranked summary left, and past
        the summaries, the lowest-ranked paper (one paper always stays)."""
        summaries = max(n - step, 0)
        kept = max(n - max(step - n, 0), min(n, 1))
        shown = digest if kept == n else dataclasses.replace(digest, picks=digest.picks[:kept])
        context = base | {"digest": shown, "picks": shown.picks, "more": n - kept}
        html, parts, size = render(context, summaries)
        return Fitted(context, html, parts, size, min(summaries, kept), kept)

    result = attempt(0)
    if result.size > limit and n > 0:
        low, high = 1, 2 * n - 1
        result = attempt(high)  # the last resort: one paper, no summary
        while low < high:
            mid = (low + high) // 2
            tried = attempt(mid)
            if tried.size <= limit:
                high, result = mid, tried
            else:
                low = mid + 1
    return result


def log_guarded(digest: Digest, email: Email, summaries: int, size: int, limit: int) -> None:
    """Say what the guard left out, and when even the last resort is too big."""
    if email.dropped_ids or summaries < len(email.paper_ids):
        log.warning(
            "render.size_guard subscriber=%s summaries_dropped=%d papers_dropped=%d "
            "dropped_ids=%s bytes=%d limit=%d",
            digest.subscriber.email,
            len(email.paper_ids) - summaries,
            len(email.dropped_ids),
            ",".join(email.dropped_ids) or "-",
            size,
            limit,
        )
    if size > limit:
        log.warning("render.over_limit subscriber=%s bytes=%d", digest.subscriber.email, size)
