"""The send ledger's rows, the sent-history, the run log and the inbound events, held once for
both backends: ``LedgerRows``, a base of ``SqliteStore`` and ``PostgresStore``.

Written in SQLite's SQL, as ``SubscriberRows`` is, and run through the backend's ``_exec``
(PostgreSQL rewrites the placeholders, ``INSERT OR IGNORE`` and ``ORDER BY rowid``). What
the backends do differently stays in each: the locks, claiming rows (``SKIP LOCKED``, a
lease), the pace, the JSON queries, and recovering a dead sender's rows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import socket
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from newsletter.errors import ClaimLost
from newsletter.models import (
    Digest,
    InboundKind,
    LedgerRow,
    LedgerStatus,
    PaperData,
    Pick,
    RunHealth,
    Subscriber,
    digest_id,
)
from newsletter.store.paper_rows import PaperRows, _marks

#: Ledger rows a run still has to send (resumed by the next send, run or serve of the day).
UNFINISHED = ("pending", "deferred")
FREEZE_CHUNK = 2_000  # digests per transaction of a freeze
IN_FLIGHT_MAX = 10_000  # parsed digests kept between being read and their outcome


class LedgerRows(PaperRows):
    """What ``SqliteStore`` and ``PostgresStore`` do alike with the ledger, the sent-history,
    the run log and the inbound events (see the module's docstring)."""

    path: str
    # A frozen digest read to be sent, parsed, until its outcome is recorded: finish() needs
    # it again, for the sent-history (bounded: what a send has in flight).
    _in_flight: dict[tuple[int, str], Any]

    def _recording(self, what: str) -> contextlib.AbstractContextManager[None]:
        """A write a send depends on: the backend's errors become one ``StoreError``."""
        raise NotImplementedError

    def papers(self, ids: Iterable[str]) -> dict[str, PaperData]:
        raise NotImplementedError

    # -- sent-history ----------------------------------------------------------------------

    def sent_ids(self, subscriber: str) -> frozenset[str]:
        rows = self._exec(
            "SELECT paper_id FROM deliveries WHERE subscriber = ?", (subscriber.casefold(),)
        )
        return frozenset(r[0] for r in rows)

    def skipped_ids(self, subscriber: str) -> frozenset[str]:
        rows = self._exec(
            "SELECT paper_id FROM skipped WHERE subscriber = ?", (subscriber.casefold(),)
        )
        return frozenset(r[0] for r in rows)

    def last_digest_day(self, subscriber: str) -> dt.date | None:
        row = self._exec(
            "SELECT MAX(day) FROM digests WHERE subscriber = ?", (subscriber.casefold(),)
        ).fetchone()
        return dt.date.fromisoformat(row[0]) if row and row[0] else None

    def last_digest_days(self) -> dict[str, dt.date]:
        rows = self._exec("SELECT subscriber, MAX(day) FROM digests GROUP BY subscriber")
        return {key: dt.date.fromisoformat(day) for key, day in rows}

    def _record(
        self,
        who: str,
        picks: list[dict[str, Any]],
        skipped: list[str],
        digest_id: str,
        day: str,
        now: dt.datetime,
    ) -> None:
        stamp = now.isoformat()
        ids = [p["id"] for p in picks]
        self._exec_many(
            "INSERT OR IGNORE INTO deliveries(subscriber, paper_id, digest_id, delivered_at) "
            "VALUES (?, ?, ?, ?)",
            [(who, pid, digest_id, stamp) for pid in ids],
        )
        self._exec(
            "INSERT OR IGNORE INTO digests(subscriber, digest_id, day, delivered_at, papers) "
            "VALUES (?, ?, ?, ?, ?)",
            (who, digest_id, day, stamp, len(ids)),
        )
        self._exec_many(
            "DELETE FROM skipped WHERE subscriber = ? AND paper_id = ?", [(who, pid) for pid in ids]
        )
        if skipped:
            self._exec_many(
                "INSERT OR IGNORE INTO skipped(subscriber, paper_id, digest_id) VALUES (?, ?, ?)",
                [(who, pid, digest_id) for pid in skipped],
            )

    # -- claims ----------------------------------------------------------------------------

    def release_claim(self, claim_id: int) -> None:
        """The claim's rows are nobody's again (those it left unsent go to the next claim)."""
        with self._recording("the end of a batch"), self._tx():
            self._exec("UPDATE ledger SET claim_id = NULL WHERE claim_id = ?", (claim_id,))
            self._exec("DELETE FROM claims WHERE id = ?", (claim_id,))

    def claimed_unsent(self, run_id: int | None = None) -> int:
        """Rows claimed and not yet handed over (of ``run_id``, or of every run): the daily
        cap counts them as going out."""
        row = self._exec(
            "SELECT COUNT(*) FROM ledger WHERE claim_id IS NOT NULL "
            "AND status IN ('pending', 'sending') AND (CAST(? AS BIGINT) IS NULL OR run_id = ?)",
            (run_id, run_id),
        ).fetchone()
        return int(row[0]) if row else 0

    def fire_once(self, job: str, slot: str, now: dt.datetime) -> bool:
        """True for the first caller of ``job`` at ``slot`` across every instance."""
        cur = self._exec(
            "INSERT OR IGNORE INTO jobs_fired(job, slot, owner, fired_at) VALUES (?, ?, ?, ?)",
            (job, slot, owner(), now.isoformat()),
        )
        if cur.rowcount == 0:
            return False
        # Kept a week (a poll every few minutes adds hundreds a day): enough to say who fired.
        self._exec(
            "DELETE FROM jobs_fired WHERE job = ? AND fired_at < ?",
            (job, (now - dt.timedelta(days=7)).isoformat()),
        )
        return True

    # -- the send ledger -------------------------------------------------------------------

    def open_run(self, day: dt.date, now: dt.datetime) -> int:
        """The run for ``day``: created on first use, the same one on every later call."""
        self._exec(
            "INSERT OR IGNORE INTO runs(day, started_at) VALUES (?, ?)",
            (day.isoformat(), now.isoformat()),
        )
        row = self._exec("SELECT id FROM runs WHERE day = ?", (day.isoformat(),)).fetchone()
        assert row is not None  # inserted just above, and runs are never deleted
        return int(row[0])

    def frozen_row(self, day: dt.date, subscriber: str) -> LedgerRow | None:
        """The subscriber's row in the run of ``day``, if that run froze one (read only)."""
        row = self._exec(
            "SELECT l.run_id, l.subscriber, l.email, l.digest, l.status FROM ledger l "
            "JOIN runs r ON r.id = l.run_id WHERE r.day = ? AND l.subscriber = ?",
            (day.isoformat(), subscriber.casefold()),
        ).fetchone()
        return None if row is None else LedgerRow(*row)

    def run_recipients(self, run_id: int) -> set[str]:
        rows = self._exec("SELECT subscriber FROM ledger WHERE run_id = ?", (run_id,))
        return {r[0] for r in rows}

    def unfinished(self, day: dt.date) -> set[str]:
        """Recipients the run of ``day`` has still to send (or left in flight): resume them."""
        statuses = (*UNFINISHED, "sending")
        rows = self._exec(
            f"SELECT l.subscriber FROM ledger l JOIN runs r ON r.id = l.run_id "
            f"WHERE r.day = ? AND l.status IN ({_marks(statuses)})",
            (day.isoformat(), *statuses),
        )
        return {r[0] for r in rows}

    def freeze(
        self, run_id: int, digests: Iterable[Digest], now: dt.datetime, *, send_empty: bool = False
    ) -> int:
        """Add recipients to a run with their digests; rows already there are never changed.

        A digest without papers is recorded as ``empty`` (nothing new), unless ``send_empty``.
        ``digests`` is read lazily, ``FREEZE_CHUNK`` at a time, each chunk in a transaction of
        its own: neither the digests nor their JSON are all in memory at once, and the write
        lock is not held while the next ones are selected (other senders of a shared run wait
        on ``freeze_lock``). Rows frozen before a failure stay: the run's recipients without
        a row are selected again when it resumes.
        """
        source = iter(digests)
        added = 0
        while chunk := list(itertools.islice(source, FREEZE_CHUNK)):
            rows = _frozen_rows(run_id, chunk, now, send_empty=send_empty)
            del chunk
            with self._tx():
                # In order: the order a run sends its rows in (rowid, seq).
                added += self._exec_many(
                    "INSERT OR IGNORE INTO ledger(run_id, subscriber, email, digest, papers, "
                    "status, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
        return added

    def pending(self, run_id: int, *, retry_unknown: bool = False) -> list[LedgerRow]:
        """Rows to send: pending and deferred ones (and unknown ones with ``retry_unknown``)."""
        statuses = (*UNFINISHED, "unknown") if retry_unknown else UNFINISHED
        # Without the digests' JSON (~1.5 KB each): frozen_digest reads each when it is sent.
        rows = self._exec(
            f"SELECT subscriber, email, '', status, deferrals FROM ledger "
            f"WHERE run_id = ? AND status IN ({_marks(statuses)}) ORDER BY rowid",
            (run_id, *statuses),
        )
        return [LedgerRow(run_id, *row) for row in rows]

    def frozen_digest(
        self, row: LedgerRow, subscriber: Subscriber, cache: dict[str, PaperData] | None = None
    ) -> Digest:
        """Rebuild a frozen digest; paper data comes from the store.

        ``cache``, kept for a whole run, holds the papers already read: recipients share
        papers, so each is read and decoded once per run, not once per recipient. A row
        claimed to be sent carries no JSON (``claim``, ``pending``): it is read now and kept
        parsed until ``finish`` records its outcome.
        """
        data = row.digest
        if not data:
            found = self._exec(
                "SELECT digest FROM ledger WHERE run_id = ? AND subscriber = ?",
                (row.run_id, row.subscriber),
            ).fetchone()
            if found is None:
                raise KeyError(row.subscriber)
            data = found[0]
        frozen = json.loads(data)
        if not row.digest:  # being sent: finish() reads it from here, not again
            if len(self._in_flight) >= IN_FLIGHT_MAX:  # outcomes never recorded: a bug
                self._in_flight.clear()
            self._in_flight[row.run_id, row.subscriber] = frozen
        ids = [p["id"] for p in frozen["picks"]]
        papers = {} if cache is None else cache
        papers.update(self.papers(pid for pid in ids if pid not in papers))
        picks = tuple(
            Pick(
                paper=papers[p["id"]],
                topic=p["topic"],
                keyword=p["keyword"],
                field=p["field"],
                reason=p["reason"],
                score=p["score"],
                section=p["section"],
                rising=p["rising"],
            )
            for p in frozen["picks"]
            if p["id"] in papers
        )
        return Digest(
            subscriber,
            dt.date.fromisoformat(frozen["day"]),
            picks,
            skipped_ids=tuple(frozen["skipped"]),
        )

    def delivered_since(self, since: dt.datetime) -> int:
        """Messages handed to the server since ``since`` (for the daily cap)."""
        row = self._exec(
            "SELECT COUNT(*) FROM ledger WHERE status IN ('sent', 'unknown') AND updated_at >= ?",
            (since.isoformat(),),
        ).fetchone()
        return int(row[0]) if row else 0

    def mark_sending(
        self,
        run_id: int,
        subscriber: str,
        message_id: str,
        now: dt.datetime,
        *,
        claim: int | None = None,
    ) -> None:
        """The message is being handed over; ``claim``: only while the row is still in it."""
        with self._recording(f"that a message to {subscriber} is being sent"):
            cur = self._exec(
                "UPDATE ledger SET status = 'sending', attempts = attempts + 1, message_id = ?, "
                "updated_at = ? WHERE run_id = ? AND subscriber = ? "
                "AND (CAST(? AS BIGINT) IS NULL OR claim_id = ?)",
                (message_id, now.isoformat(), run_id, subscriber, claim, claim),
            )
        if cur.rowcount == 0 and claim is not None:
            raise ClaimLost(self.path, f"the claim on {subscriber} lapsed; another sender has it")

    def finish(
        self,
        run_id: int,
        subscriber: str,
        status: LedgerStatus,
        detail: str,
        now: dt.datetime,
        *,
        paper_ids: Sequence[str] | None = None,
    ) -> None:
        """A recipient's outcome; ``sent`` and ``unknown`` write the sent-history in the same commit.

        ``paper_ids``: the papers the message carried, when fewer than the frozen digest's.
        """
        frozen = self._in_flight.pop((run_id, subscriber), None)
        if frozen is None:
            row = self._exec(
                "SELECT digest FROM ledger WHERE run_id = ? AND subscriber = ?",
                (run_id, subscriber),
            ).fetchone()
            if row is None:
                raise KeyError(subscriber)
            frozen = row[0]
        with self._recording(f"the outcome for {subscriber} ({status})"), self._tx():
            self._finish(run_id, subscriber, status, detail, now, frozen, paper_ids)

    def _finish(
        self,
        run_id: int,
        key: str,
        status: LedgerStatus,
        detail: str,
        now: dt.datetime,
        digest: str | dict[str, Any],
        paper_ids: Sequence[str] | None = None,
    ) -> None:
        """``digest``: the frozen digest's JSON, or what it parses to."""
        self._exec(
            "UPDATE ledger SET status = ?, detail = ?, updated_at = ?, "
            "deferrals = deferrals + (CASE WHEN ? = 'deferred' THEN 1 ELSE 0 END) "
            "WHERE run_id = ? AND subscriber = ?",
            (status, detail or None, now.isoformat(), status, run_id, key),
        )
        if status in ("sent", "unknown"):
            self._record(key, *_carried(digest, paper_ids), now)

    def run_counts(self, run_id: int) -> Counter[str]:
        rows = self._exec(
            "SELECT status, COUNT(*) FROM ledger WHERE run_id = ? GROUP BY status", (run_id,)
        )
        return Counter({status: n for status, n in rows})

    def run_rows(self, run_id: int, status: LedgerStatus) -> list[tuple[str, str]]:
        """(email, detail) of the run's rows in ``status``."""
        rows = self._exec(
            "SELECT email, COALESCE(detail, '') FROM ledger WHERE run_id = ? AND status = ? "
            "ORDER BY rowid",
            (run_id, status),
        )
        return [(e, d) for e, d in rows]

    def close_run(self, run_id: int, now: dt.datetime) -> None:
        statuses = (*UNFINISHED, "sending")
        with self._recording("the end of the run"):
            self._exec(
                f"UPDATE runs SET finished_at = ? WHERE id = ? AND NOT EXISTS "
                f"(SELECT 1 FROM ledger WHERE run_id = ? AND status IN ({_marks(statuses)}))",
                (now.isoformat(), run_id, run_id, *statuses),
            )

    # -- run health ------------------------------------------------------------------------

    def log_run_start(self, kind: str, now: dt.datetime) -> int:
        row = self._exec(
            "INSERT INTO run_log(kind, started_at) VALUES (?, ?) RETURNING id",
            (kind, now.isoformat()),
        ).fetchone()
        return int(row[0]) if row else 0

    def log_run_end(self, log_id: int, now: dt.datetime, health: RunHealth) -> None:
        with self._recording("the end of the run"):
            self._exec(
                "UPDATE run_log SET finished_at = ?, day = ?, papers = ?, sent = ?, failed = ?, "
                "unknown = ?, nothing_new = ?, error = ? WHERE id = ?",
                (
                    now.isoformat(),
                    health.day.isoformat() if health.day else None,
                    health.papers,
                    health.sent,
                    health.failed,
                    health.unknown,
                    health.nothing_new,
                    health.error,
                    log_id,
                ),
            )

    def last_runs(self, limit: int = 10) -> list[RunHealth]:
        rows = self._exec(
            "SELECT kind, day, started_at, finished_at, papers, sent, failed, unknown, "
            "nothing_new, error FROM run_log ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [_run_health(row) for row in rows]

    def first_run_at(self) -> dt.datetime | None:
        row = self._exec("SELECT MIN(started_at) FROM run_log").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row and row[0] else None

    def last_delivery_at(self) -> dt.datetime | None:
        row = self._exec("SELECT MAX(updated_at) FROM ledger WHERE status = 'sent'").fetchone()
        return dt.datetime.fromisoformat(row[0]) if row and row[0] else None

    # -- inbound: bounces, complaints, mailto unsubscribes ---------------------------------

    def record_inbound(
        self,
        subscriber_id: str,
        kind: InboundKind,
        now: dt.datetime,
        *,
        status: str | None = None,
        detail: str = "",
        run_id: int | None = None,
    ) -> None:
        with self._recording(f"a {kind} for subscriber {subscriber_id}"):
            self._exec(
                "INSERT INTO inbound_events(subscriber, kind, status, detail, run_id, at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (subscriber_id, kind, status, detail, run_id, now.isoformat()),
            )

    def inbound_count(
        self, subscriber_id: str, kinds: Sequence[InboundKind], since: dt.datetime
    ) -> int:
        """Events of these kinds for one subscriber since ``since``, resubscribes cleared."""
        row = self._exec(
            f"SELECT COUNT(*) FROM inbound_events WHERE subscriber = ? "
            f"AND kind IN ({_marks(kinds)}) AND at >= ? AND cleared = 0",
            (subscriber_id, *kinds, since.isoformat()),
        ).fetchone()
        return int(row[0]) if row else 0

    def inbound_counts(self) -> dict[str, Counter[str]]:
        """Subscriber id -> how many of each kind of event since their last resubscribe."""
        counts: dict[str, Counter[str]] = {}
        rows = self._exec(
            "SELECT subscriber, kind, COUNT(*) FROM inbound_events WHERE cleared = 0 "
            "GROUP BY subscriber, kind"
        )
        for subscriber, kind, n in rows:
            counts.setdefault(subscriber, Counter())[kind] = n
        return counts

    def clear_inbound(self, subscriber_id: str) -> int:
        """Reset a subscriber's counts (a resubscribe); the events stay for the rates."""
        cur = self._exec(
            "UPDATE inbound_events SET cleared = 1 WHERE subscriber = ? AND cleared = 0",
            (subscriber_id,),
        )
        return cur.rowcount

    def inbound_since(self, since: dt.datetime) -> Counter[str]:
        """Events of each kind since ``since``, cleared or not (for the rates)."""
        rows = self._exec(
            "SELECT kind, COUNT(*) FROM inbound_events WHERE at >= ? GROUP BY kind",
            (since.isoformat(),),
        )
        return Counter({kind: n for kind, n in rows})

    def sent_since(self, since: dt.datetime) -> int:
        """Messages the server took since ``since`` (the rates' denominator)."""
        row = self._exec(
            "SELECT COUNT(*) FROM ledger WHERE status = 'sent' AND updated_at >= ?",
            (since.isoformat(),),
        ).fetchone()
        return int(row[0]) if row else 0


def owner() -> str:
    """Who claims: this host and process, for an operator reading the claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _frozen_rows(
    run_id: int, digests: Iterable[Digest], now: dt.datetime, *, send_empty: bool
) -> list[tuple[Any, ...]]:
    """The ledger rows that freeze ``digests``: (run_id, subscriber, email, digest, papers,
    status, updated_at); a digest without papers is ``empty`` unless ``send_empty``."""
    stamp = now.isoformat()
    return [
        (
            run_id,
            d.subscriber.key,
            d.subscriber.email,
            _digest_json(d),
            len(d.picks),
            "pending" if d.picks or send_empty else "empty",
            stamp,
        )
        for d in digests
    ]


def _carried(
    digest: str | dict[str, Any], paper_ids: Sequence[str] | None
) -> tuple[list[dict[str, Any]], list[str], str, str]:
    """What a sent (or maybe sent) frozen digest writes to the sent-history: (picks carried,
    skipped ids, digest id, day). ``digest``: its JSON, or what that parses to.
    ``paper_ids``: the papers the message carried, when the size guard left some out (those
    are not sent)."""
    frozen = json.loads(digest) if isinstance(digest, str) else digest
    picks = frozen["picks"]
    if paper_ids is not None:
        carried = set(paper_ids)
        picks = [p for p in picks if p["id"] in carried]
    return picks, frozen["skipped"], frozen["digest_id"], frozen["day"]


def _run_health(row: Sequence[Any]) -> RunHealth:
    """A run_log row (kind, day, started_at, finished_at, papers, sent, failed, unknown,
    nothing_new, error) as ``RunHealth``."""
    kind, day, started, finished, papers, sent, failed, unknown, nothing_new, error = row
    return RunHealth(
        kind=kind,
        day=dt.date.fromisoformat(day) if day else None,
        started_at=dt.datetime.fromisoformat(started),
        finished_at=dt.datetime.fromisoformat(finished) if finished else None,
        papers=papers or 0,
        sent=sent or 0,
        failed=failed or 0,
        unknown=unknown or 0,
        nothing_new=nothing_new or 0,
        error=error,
    )


def _digest_json(digest: Digest) -> str:
    return json.dumps(
        {
            "day": digest.day.isoformat(),
            "digest_id": digest_id(digest),
            "picks": [
                {
                    "id": p.paper.id,
                    "topic": p.topic,
                    "keyword": p.keyword,
                    "field": p.field,
                    "reason": p.reason,
                    "score": p.score,
                    "section": p.section,
                    "rising": p.rising,
                }
                for p in digest.picks
            ],
            "skipped": list(digest.skipped_ids),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
