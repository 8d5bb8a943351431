"""The state: the ``Store`` protocol, ``SqliteStore`` (one SQLite file) and ``PostgresStore``
(a PostgreSQL database, ``postgres``) behind it; ``open_store`` picks one by the location.

The store keeps data, not rules: papers and their upvote snapshots, fetched days and raw
responses, sent-history, subscribers (their status, preferences and consent record; the keyed
hashes of removed addresses; the sign-up limits' counters), the send ledger's rows and the run log. What a
row means (when a run is frozen, what is resumed, cancelled or capped) is ``ledger``'s.
Everything that uses a store (``pipeline``, ``ledger``, ``health``, ``web``, ``cli``,
``sources``) asks only for what is here, so a second backend is one more class that has it;
opening one (``open_store(location)``, ``scratch_store(location)``) picks the backend: a
``postgresql://`` URL is PostgreSQL (psycopg loads only then), anything else a SQLite file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from newsletter.errors import StoreError
from newsletter.models import (
    Cadence,
    Digest,
    InboundKind,
    LedgerRow,
    LedgerStatus,
    PaperData,
    Response,
    RunHealth,
    Subscriber,
    SubscriberRecord,
    SubscriberSource,
    SubscriberStatus,
    Trend,
)
from newsletter.store.location import is_url, shown_url
from newsletter.store.sqlite import SqliteStore
from newsletter.store.subscribers import UNSET, Unset

if TYPE_CHECKING:
    from newsletter.store.postgres import PostgresStore


class Store(Protocol):
    """What the stages need of the state. The tests use ``SqliteStore`` on a real file rather
    than a fake: the ledger's guarantees are SQL."""

    def close(self) -> None: ...

    # papers, fetched days and raw responses (``sources`` writes them as it fetches)
    def add_papers(self, papers: Iterable[PaperData], now: dt.datetime) -> int: ...
    def mark_fetched(
        self,
        source: str,
        day: dt.date,
        papers: int,
        now: dt.datetime,
        *,
        error: str | None = None,
    ) -> None: ...
    def failed_days(self, source: str, since: dt.date) -> list[dt.date]: ...
    def complete_days(self, source: str, days: Iterable[dt.date]) -> set[dt.date]: ...
    def save_response(self, response: Response, now: dt.datetime) -> None: ...
    def load_response(self, url: str) -> Response | None: ...
    def candidates(self, days: Iterable[dt.date]) -> list[PaperData]: ...
    def papers(self, ids: Iterable[str]) -> dict[str, PaperData]: ...
    def trends(
        self, paper_ids: Iterable[str], *, until: dt.datetime | None = None
    ) -> dict[str, Trend]: ...

    # the archive (``web.archive``): past days as they stood when they ended
    def upvotes_at(
        self, paper_ids: Iterable[str], until: dt.datetime
    ) -> dict[str, tuple[int, dt.datetime]]: ...
    def listed_days(self) -> list[tuple[dt.date, int, dt.datetime]]: ...

    # sent-history
    def sent_ids(self, subscriber: str) -> frozenset[str]: ...
    def skipped_ids(self, subscriber: str) -> frozenset[str]: ...
    def last_digest_day(self, subscriber: str) -> dt.date | None: ...
    def last_digest_days(self) -> dict[str, dt.date]: ...

    # subscribers: readers who signed up, the operator's, the file's (``roster`` merges them)
    def subscriber_by_id(self, subscriber_id: str) -> SubscriberRecord | None: ...
    def subscriber_by_email(self, email: str) -> SubscriberRecord | None: ...
    def subscribers(
        self, statuses: Collection[SubscriberStatus] | None = None
    ) -> Iterator[SubscriberRecord]: ...
    def add_subscriber(
        self, record: SubscriberRecord, *, now: dt.datetime | None = None, again: bool = False
    ) -> SubscriberRecord: ...
    def add_subscribers(
        self, records: Sequence[SubscriberRecord], *, now: dt.datetime
    ) -> list[SubscriberRecord]: ...
    def set_subscriber_status(
        self, subscriber_id: str, status: SubscriberStatus, reason: str, now: dt.datetime
    ) -> bool: ...
    def update_preferences(
        self,
        subscriber_id: str,
        *,
        now: dt.datetime,
        topics: Sequence[str] | None = None,
        cadence: Cadence | None = None,
        max_papers: int | None = None,
        min_upvotes: int | None = None,
        timezone: str | None = None,
        send_at: dt.time | Unset | None = UNSET,
        keywords: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        sections: bool | None = None,
        name: str | Unset | None = UNSET,
    ) -> SubscriberRecord | None: ...
    def confirm_subscriber(
        self, subscriber_id: str, now: dt.datetime, client: str | None
    ) -> SubscriberRecord | None: ...
    def remove_subscriber(self, email: str, now: dt.datetime | None = None) -> bool: ...
    def is_removed(self, email: str) -> bool: ...
    def purge_pending(self, older_than: dt.datetime) -> int: ...
    def sync_file_subscribers(
        self, subscribers: Iterable[Subscriber], now: dt.datetime, *, write: bool = True
    ) -> dict[str, SubscriberRecord]: ...
    def readers(self) -> Iterator[Subscriber]: ...
    def subscriber_statuses(self) -> Iterator[tuple[str, SubscriberSource, SubscriberStatus]]: ...
    def roster_version(self) -> tuple[int, str]: ...
    def count_pending(self) -> int: ...
    def address_hash(self, email: str) -> str: ...

    # the sign-up limits, kept in the store so that every process shares them
    def record_signup_mail(self, address_key: str, now: dt.datetime) -> None: ...
    def signup_mail_since(self, address_key: str, since: dt.datetime) -> int: ...
    def record_signup_attempt(self, client: str, now: dt.datetime) -> None: ...
    def signup_attempts_since(self, client: str, since: dt.datetime) -> int: ...
    def forget_signup_limits(self, before: dt.datetime) -> int: ...
    def signup_lock(self) -> contextlib.AbstractContextManager[None]: ...

    # the send ledger: one run per day, one row per recipient
    def send_lock(self, wait: float = 0.0) -> contextlib.AbstractContextManager[None]: ...
    def open_run(self, day: dt.date, now: dt.datetime) -> int: ...
    def supersede_before(self, day: dt.date, now: dt.datetime) -> list[str]: ...
    def recover_in_flight(self, run_id: int, now: dt.datetime) -> list[str]: ...
    def frozen_row(self, day: dt.date, subscriber: str) -> LedgerRow | None: ...
    def run_recipients(self, run_id: int) -> set[str]: ...
    def unfinished(self, day: dt.date) -> set[str]: ...
    def freeze(
        self, run_id: int, digests: Iterable[Digest], now: dt.datetime, *, send_empty: bool = False
    ) -> int: ...
    def pending(self, run_id: int, *, retry_unknown: bool = False) -> list[LedgerRow]: ...
    def frozen_digest(
        self, row: LedgerRow, subscriber: Subscriber, cache: dict[str, PaperData] | None = None
    ) -> Digest: ...
    def run_papers(self, run_id: int) -> dict[str, PaperData]: ...
    def delivered_since(self, since: dt.datetime) -> int: ...
    def mark_sending(
        self,
        run_id: int,
        subscriber: str,
        message_id: str,
        now: dt.datetime,
        *,
        claim: int | None = None,
    ) -> None: ...
    def finish(
        self,
        run_id: int,
        subscriber: str,
        status: LedgerStatus,
        detail: str,
        now: dt.datetime,
        *,
        paper_ids: Sequence[str] | None = None,
    ) -> None: ...
    def run_rows(self, run_id: int, status: LedgerStatus) -> list[tuple[str, str]]: ...
    def run_counts(self, run_id: int) -> Counter[str]: ...
    def close_run(self, run_id: int, now: dt.datetime) -> None: ...

    # inbound: bounces (hard, soft), complaints and mailto unsubscribes, by subscriber id
    def record_inbound(
        self,
        subscriber_id: str,
        kind: InboundKind,
        now: dt.datetime,
        *,
        status: str | None = None,
        detail: str = "",
        run_id: int | None = None,
    ) -> None: ...
    def inbound_count(
        self, subscriber_id: str, kinds: Sequence[InboundKind], since: dt.datetime
    ) -> int: ...
    def inbound_counts(self) -> dict[str, Counter[str]]: ...
    def clear_inbound(self, subscriber_id: str) -> int: ...
    def inbound_since(self, since: dt.datetime) -> Counter[str]: ...
    def sent_since(self, since: dt.datetime) -> int: ...

    # sharing a run between senders: claims on rows with a lease, a shared pace, once-only
    # jobs. SQLite has one sender at a time (``send_lock``); its claims never lapse.
    shared: bool  # several senders may work at once (PostgreSQL)

    def freeze_lock(self, day: dt.date, wait: float) -> contextlib.AbstractContextManager[None]: ...
    def expire_claims(self, now: dt.datetime) -> list[str]: ...
    def claim(
        self,
        run_id: int,
        keys: Collection[str],
        *,
        again: Sequence[LedgerStatus],
        since: dt.datetime,
        limit: int | None,
        lease_seconds: float,
        now: dt.datetime,
    ) -> tuple[int, list[LedgerRow]]: ...
    def renew_claim(self, claim_id: int, lease_seconds: float, now: dt.datetime) -> bool: ...
    def release_claim(self, claim_id: int) -> None: ...
    def claimed_unsent(self, run_id: int | None = None) -> int: ...
    def cap_lock(self) -> contextlib.AbstractContextManager[None]: ...
    def pace(self, interval: float) -> float: ...
    def fire_once(self, job: str, slot: str, now: dt.datetime) -> bool: ...

    # the run log
    def log_run_start(self, kind: str, now: dt.datetime) -> int: ...
    def log_run_end(self, log_id: int, now: dt.datetime, health: RunHealth) -> None: ...
    def last_runs(self, limit: int = 10) -> list[RunHealth]: ...
    def first_run_at(self) -> dt.datetime | None: ...
    def last_delivery_at(self) -> dt.datetime | None: ...


def open_store(
    location: str | Path, *, read_only: bool = False, password: str | None = None
) -> SqliteStore | PostgresStore:
    """The state at ``location``: a ``postgresql://`` URL (``password``: given, else libpq's
    own) or a SQLite file's path."""
    if not is_url(location):
        return SqliteStore(location, read_only=read_only)
    backend = _postgres(str(location))
    try:
        return backend(str(location), read_only=read_only, password=password)
    except StoreError as e:
        from newsletter.store.postgres import EmptyDatabase

        if not isinstance(e, EmptyDatabase):
            raise
        # As a SQLite file that is not there: an empty state, in memory.
        return SqliteStore(":memory:")


def scratch_store(location: str | Path, *, password: str | None = None) -> SqliteStore:
    """A copy in memory of the state at ``location``, for a preview, a dry run or a test send:
    whatever it does, the state is left as it was."""
    if not is_url(location):
        return SqliteStore.scratch(location)
    from newsletter.store.copy import copy_state

    scratch = SqliteStore(":memory:")
    with open_store(location, read_only=True, password=password) as source:
        if source is not scratch and not isinstance(source, SqliteStore):
            copy_state(source, scratch)
    return scratch


def _postgres(location: str) -> type[PostgresStore]:
    try:
        from newsletter.store.postgres import PostgresStore
    except ImportError as e:  # psycopg is the extra ``postgres``
        raise StoreError(
            shown_url(location),
            f"a PostgreSQL state needs psycopg: pip install 'papers-newsletter[postgres]' ({e})",
        ) from e
    return PostgresStore


__all__ = [
    "UNSET",
    "SqliteStore",
    "Store",
    "Unset",
    "is_url",
    "open_store",
    "scratch_store",
    "shown_url",
]
