"""Who a run is for: the store's readers and the config file's subscribers, merged.

    rows    = store.sync_file_subscribers(the file's subscribers, now)
              # each of the file's addresses gets a row (source ``config``) on its first run,
              # so it has an opaque id for its links; a ``config`` row follows the file
    mailed  = the file's subscribers whose row is active (or pending)   with the file's
              settings and the row's id
            + the store's active rows that are not the file's (signed up, added, imported)
    held    = the file's subscribers whose row is paused, unsubscribed, bounced, complained,
              or whose address was removed (``subscribers remove``): reported, not mailed

An address in both is the file's: its topics and settings come from the file, its status
from the row (a reader listed in the file can still pause or unsubscribe from the page). A
``config`` row whose address left the file is nobody's: not mailed. A pending row is never
mailed unless the file lists its address (the operator's word is the consent).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from newsletter.models import Subscriber
from newsletter.store import Store

log = logging.getLogger(__name__)

#: A status a file's subscriber can have that keeps them from being mailed, or ``removed``.
HELD = ("paused", "unsubscribed", "bounced", "complained")


@dataclass(frozen=True, slots=True)
class Roster:
    """Who gets mail: made by ``load``, read by the pipeline, the schedule and ``status``."""

    mailed: list[Subscriber]  # the file's first (in its order), then the store's readers
    held: list[tuple[Subscriber, str]]  # the file's, not mailed: (subscriber, status or "removed")
    file_keys: frozenset[str]  # the file's addresses, casefolded

    @property
    def keys(self) -> frozenset[str]:
        """Everyone mailed, casefolded: a frozen row of anyone else is cancelled."""
        return frozenset(s.key for s in self.mailed)


def load(
    store: Store, file_subscribers: Sequence[Subscriber], now: dt.datetime, *, write: bool = True
) -> Roster:
    """The roster now. ``write=False`` (a read-only store): the file's addresses without a
    row yet are mailed without an id, and nothing is written."""
    rows = store.sync_file_subscribers(file_subscribers, now, write=write)
    mailed: list[Subscriber] = []
    held: list[tuple[Subscriber, str]] = []
    for sub in file_subscribers:
        row = rows.get(sub.key)
        if row is None:
            held.append((sub, "removed"))
        elif row.status in HELD:
            held.append((dataclasses.replace(sub, id=row.id), row.status))
        else:
            mailed.append(dataclasses.replace(sub, id=row.id))
    file_keys = frozenset(s.key for s in file_subscribers)
    if file_keys:
        mailed += (s for s in store.readers() if s.key not in file_keys)
    else:
        mailed += store.readers()
    return Roster(mailed, held, file_keys)


def purge(store: Store, now: dt.datetime, confirm_hours: int) -> int:
    """Forget the sign-ups not confirmed within ``confirm_hours`` (never mailed a digest), and
    the sign-up counters older than a day past that; how many sign-ups went. ``serve`` runs
    it on a schedule, ``send`` and ``run`` before they send."""
    cutoff = now - dt.timedelta(hours=confirm_hours)
    purged = store.purge_pending(cutoff)
    store.forget_signup_limits(min(cutoff, now - dt.timedelta(days=1)) - dt.timedelta(days=1))
    if purged:
        log.info("signup.purged pending=%d older_than_hours=%d", purged, confirm_hours)
    return purged
