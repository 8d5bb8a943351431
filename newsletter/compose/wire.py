"""What crosses between the compose pool's parent and its workers: plain values.

Plain tuples pickle (and unpickle) in a fraction of the time of the dataclasses, and on a
machine with as many cores as workers each microsecond the parent spends per digest is one
a worker lacks. A digest refers to the run's papers by number (each worker got them once);
a request carries only the run's papers of a subscriber's history; a message comes back
without its HTML and text when the caller does not want them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import operator
import pickle
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from newsletter.models import Digest, Email, Outgoing, PaperData, Pick, Subscriber

if TYPE_CHECKING:
    from newsletter.selection import Request


# A digest goes out as plain values, which pickle (and unpickle) in a fraction of the time
# of the dataclasses: the Subscriber's fields, the day, each Pick's fields with its paper
# as a number in the run's table (or whole, if not in it), the skipped ids.
DIGEST_FIELDS = ("subscriber", "day", "picks", "skipped_ids")  # what a packed digest carries
_subscriber_values = operator.attrgetter(*(f.name for f in dataclasses.fields(Subscriber)))
_pick_values = operator.attrgetter(*(f.name for f in dataclasses.fields(Pick)))  # paper first
_LeanDigest = tuple[tuple[Any, ...], dt.date, tuple[tuple[Any, ...], ...], tuple[str, ...]]


def _lean_digest(d: Digest, papers: Sequence[PaperData], numbers: dict[int, int]) -> _LeanDigest:
    picks = []
    for pick in d.picks:
        values = _pick_values(pick)
        i = numbers.get(id(pick.paper))
        if i is not None and papers[i] is pick.paper:  # the table keeps the ids alive
            values = (i, *values[1:])
        picks.append(values)
    return _subscriber_values(d.subscriber), d.day, tuple(picks), d.skipped_ids


def _digest(lean: _LeanDigest, papers: Sequence[PaperData]) -> Digest:
    subscriber, day, picks, skipped = lean
    return Digest(
        Subscriber(*subscriber),
        day,
        tuple(Pick(papers[v[0]] if type(v[0]) is int else v[0], *v[1:]) for v in picks),
        skipped,
    )


def pack_digests(
    batch: Sequence[Digest], papers: Sequence[PaperData], numbers: dict[int, int]
) -> bytes:
    """Digests as a worker gets them: papers of ``papers`` (``numbers``: by ``id()``) by number."""
    lean = [_lean_digest(d, papers, numbers) for d in batch]
    return pickle.dumps(lean, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_digests(payload: bytes, papers: Sequence[PaperData]) -> list[Digest]:
    """``pack_digests``' digests back, in a worker that got ``papers`` at start."""
    return [_digest(lean, papers) for lean in pickle.loads(payload)]


#: A Request as plain values: the Subscriber's fields, since, sent_ids, skipped.
_LeanRequest = tuple[tuple[Any, ...], dt.date | None, frozenset[str], frozenset[str]]


def pack_requests(batch: Sequence[Request], known: frozenset[str]) -> bytes:
    """Requests as a worker gets them, their histories cut to the run's papers (``known``)."""
    # ``select`` only asks whether a paper of the run is in sent_ids or skipped: the rest
    # of a long sent-history need not cross (& walks the smaller of the two sets).
    lean: list[_LeanRequest] = [
        (_subscriber_values(r.subscriber), r.since, r.sent_ids & known, r.skipped & known)
        for r in batch
    ]
    return pickle.dumps(lean, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_requests(
    payload: bytes,
) -> Iterator[tuple[Subscriber, dt.date | None, frozenset[str], frozenset[str]]]:
    """``pack_requests``' requests back: subscriber, since, sent_ids, skipped."""
    lean: list[_LeanRequest] = pickle.loads(payload)
    for subscriber, since, sent_ids, skipped in lean:
        yield Subscriber(*subscriber), since, sent_ids, skipped


#: An Outgoing as plain values, which pickle in a fraction of the time of the dataclasses:
#: recipient, envelope_from, message_id, data, then the Email's fields in order.
Wire = tuple[str, str, str, bytes, str, str | None, str, str, str, tuple[str, ...], tuple[str, ...]]


def to_wire(m: Outgoing, bodies: bool) -> Wire:
    e = m.email
    return (
        m.recipient,
        m.envelope_from,
        m.message_id,
        m.data,
        e.to,
        e.to_name,
        e.subject,
        e.html if bodies else "",  # most of what would cross back, and decoding it
        e.text if bodies else "",
        e.paper_ids,
        e.dropped_ids,
    )


def from_wire(w: Wire) -> Outgoing:
    return Outgoing(w[0], w[1], w[2], w[3], Email(*w[4:]))
