"""Subscribers in SQLite: the ``subscribers`` table, removed addresses, the sign-up counters.

A mixin of ``SqliteStore`` (it works on the store's connection). Data, not rules: which
subscribers a run mails, and how the file's subscribers merge with these rows, is
``roster``'s. Removing a subscriber erases their row and their sent-history and keeps a
keyed hash of the address (the key is random, kept in the file), so an old list imported
again cannot add them back by mistake. The sign-up counters keep keyed hashes too, never
an address.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import Any, Final, Protocol

from newsletter.errors import SubscriberExistsError, SubscriberRemovedError
from newsletter.models import (
    Cadence,
    Subscriber,
    SubscriberRecord,
    SubscriberSource,
    SubscriberStatus,
)
from newsletter.store.migrations import new_subscriber_id


class Unset(enum.Enum):
    """The type of ``UNSET``."""

    UNSET = enum.auto()


#: ``update_preferences``: leave this setting as it is (``None`` is a value for some).
UNSET: Final = Unset.UNSET

_COLUMNS = (
    "id, email, name, topics, cadence, max_papers, min_upvotes, timezone, send_at, keywords, "
    "exclude, sections, status, source, reason, created_at, confirmed_at, signup_client, "
    "confirm_client, updated_at"
)


class Cursor(Protocol):
    """What ``SubscriberRows`` reads of a statement's cursor, on either backend."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def __iter__(self) -> Iterator[Any]: ...


class SubscriberRows:
    """The subscriber methods of ``SqliteStore`` and ``PostgresStore``: SQLite's SQL, which
    ``PostgresStore`` rewrites where PostgreSQL's differs (``_exec``)."""

    db: Any  # the backend's connection
    _tx: Callable[[], contextlib.AbstractContextManager[Any]]  # the backend's transaction
    _hash_key: bytes | None = None

    def _exec(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement on the store's connection; its cursor."""
        cursor: Cursor = self.db.execute(sql, params)
        return cursor

    def _exec_many(self, sql: str, rows: Iterable[Sequence[Any]]) -> int:
        """Run one statement once a row; the rows it changed, summed."""
        return int(self.db.executemany(sql, rows).rowcount)

    # -- reading -----------------------------------------------------------------------------

    def subscriber_by_id(self, subscriber_id: str) -> SubscriberRecord | None:
        row = self._exec(
            f"SELECT {_COLUMNS} FROM subscribers WHERE id = ?", (subscriber_id,)
        ).fetchone()
        return None if row is None else _Reader().record(row)

    def subscriber_by_email(self, email: str) -> SubscriberRecord | None:
        row = self._exec(
            f"SELECT {_COLUMNS} FROM subscribers WHERE key = ?", (email.strip().casefold(),)
        ).fetchone()
        return None if row is None else _Reader().record(row)

    def subscribers(
        self, statuses: Collection[SubscriberStatus] | None = None
    ) -> Iterator[SubscriberRecord]:
        """Every subscriber (with ``statuses``: those in one of them), oldest first."""
        where, args = "", tuple[str, ...]()
        if statuses is not None:
            wanted = tuple(statuses)
            if not wanted:
                return iter(())
            where, args = f" WHERE status IN ({','.join('?' * len(wanted))})", wanted
        reader = _Reader()
        cursor = self._exec(f"SELECT {_COLUMNS} FROM subscribers{where} ORDER BY rowid", args)
        return (reader.record(row) for row in cursor)

    def readers(self) -> Iterator[Subscriber]:
        """The active subscribers who are not the file's (``source`` is not ``config``), as a
        run mails them, oldest first: only the columns a run needs, decoded straight into
        ``Subscriber`` (a send reads 100,000 of them)."""
        reader = _Reader()
        lists, times = reader.list_of, reader.time_of
        cursor = self._exec(
            "SELECT email, topics, name, cadence, max_papers, min_upvotes, timezone, keywords, "
            "exclude, sections, send_at, id FROM subscribers "
            "WHERE status = 'active' AND source != 'config' ORDER BY rowid"
        )
        for email, topics, name, cadence, most, least, tz, kw, ex, sections, at, sid in cursor:
            yield Subscriber(
                email,
                lists(topics),
                name,
                cadence,
                most,
                least,
                tz,
                lists(kw),
                lists(ex),
                bool(sections),
                times(at) if at else None,
                sid,
            )

    def subscriber_statuses(self) -> Iterator[tuple[str, SubscriberSource, SubscriberStatus]]:
        """(key, source, status) of every row: what ``status`` counts (100,000 rows are
        read in well under a second; no record is decoded)."""
        return iter(self._exec("SELECT key, source, status FROM subscribers"))

    def roster_version(self) -> tuple[int, str]:
        """(rows, latest ``updated_at``): changes whenever a subscriber is added, changed or
        deleted (every change stamps the time of the clock, which moves on). ``serve`` asks
        every minute whether to regroup its jobs: two columns, no row decoded."""
        rows, latest = self._exec(
            "SELECT COUNT(*), COALESCE(MAX(updated_at), '') FROM subscribers"
        ).fetchone()
        return int(rows), str(latest)

    def count_pending(self) -> int:
        return int(
            self._exec("SELECT COUNT(*) FROM subscribers WHERE status = 'pending'").fetchone()[0]
        )

    # -- writing -----------------------------------------------------------------------------

    def add_subscriber(
        self, record: SubscriberRecord, *, now: dt.datetime | None = None, again: bool = False
    ) -> SubscriberRecord:
        """Add ``record`` and return it as stored (with its new id when it had none).

        Its ``created_at`` (or ``now``) is the sign-up's time. An address already here raises
        ``SubscriberExistsError``; one removed before raises ``SubscriberRemovedError`` unless
        ``again`` (the operator adds it back on purpose, which forgets the removal).
        """
        with self._tx():
            return self._insert(record, now, again)

    def add_subscribers(
        self, records: Sequence[SubscriberRecord], *, now: dt.datetime
    ) -> list[SubscriberRecord]:
        """``add_subscriber`` for each record, all or none (``subscribers import``): the
        first address already here, or removed before, raises and nothing is added."""
        with self._tx():
            return [self._insert(record, now, False) for record in records]

    def _insert(
        self, record: SubscriberRecord, now: dt.datetime | None, again: bool
    ) -> SubscriberRecord:
        stamp = record.created_at or now
        if stamp is None:
            raise ValueError("add_subscriber needs the record's created_at or now")
        key = record.key
        existing = self._exec("SELECT status FROM subscribers WHERE key = ?", (key,)).fetchone()
        if existing is not None:
            raise SubscriberExistsError(record.email, existing[0])
        hashed = self.address_hash(key)
        removed = self._exec(
            "SELECT 1 FROM removed_subscribers WHERE address_hash = ?", (hashed,)
        ).fetchone()
        if removed is not None:
            if not again:
                raise SubscriberRemovedError(record.email)
            self._exec("DELETE FROM removed_subscribers WHERE address_hash = ?", (hashed,))
        stored = _replace(
            record,
            id=record.id or new_subscriber_id(),
            created_at=stamp,
            updated_at=record.updated_at or stamp,
        )
        # Another process may have added the address since the SELECT above (PostgreSQL lets
        # both read before either writes): it is then already here. Any other violation raises.
        added = self._exec(
            f"INSERT INTO subscribers({_COLUMNS}, key) VALUES ({','.join('?' * 21)}) "
            "ON CONFLICT (key) DO NOTHING",
            (*_row(stored), key),
        )
        if added.rowcount == 0:
            row = self._exec("SELECT status FROM subscribers WHERE key = ?", (key,)).fetchone()
            raise SubscriberExistsError(record.email, row[0] if row else "added meanwhile")
        return stored

    def set_subscriber_status(
        self, subscriber_id: str, status: SubscriberStatus, reason: str, now: dt.datetime
    ) -> bool:
        """Change the status (and say why); False when there is no such subscriber."""
        cur = self._exec(
            "UPDATE subscribers SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
            (status, reason, now.isoformat(), subscriber_id),
        )
        return cur.rowcount > 0

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
    ) -> SubscriberRecord | None:
        """Change the settings given (``None``, or ``UNSET`` for ``send_at`` and ``name``,
        leaves one as it is); the record as it is now, or None when there is no such one.
        Effective from the next digest: a run's frozen digests stay as they were."""
        changes: dict[str, Any] = {}
        for column, value in (
            ("topics", topics),
            ("keywords", keywords),
            ("exclude", exclude),
        ):
            if value is not None:
                changes[column] = json.dumps(list(value), ensure_ascii=False)
        for column, plain in (
            ("cadence", cadence),
            ("max_papers", max_papers),
            ("min_upvotes", min_upvotes),
            ("timezone", timezone),
        ):
            if plain is not None:
                changes[column] = plain
        if sections is not None:
            changes["sections"] = int(sections)
        if not isinstance(send_at, Unset):
            changes["send_at"] = send_at.isoformat() if send_at else None
        if not isinstance(name, Unset):
            changes["name"] = name
        changes["updated_at"] = now.isoformat()
        assignments = ", ".join(f"{column} = ?" for column in changes)
        cur = self._exec(
            f"UPDATE subscribers SET {assignments} WHERE id = ?", (*changes.values(), subscriber_id)
        )
        return self.subscriber_by_id(subscriber_id) if cur.rowcount else None

    def confirm_subscriber(
        self, subscriber_id: str, now: dt.datetime, client: str | None
    ) -> SubscriberRecord | None:
        """A pending subscriber becomes active, with the time and client of the confirmation;
        any other is left as it is. The record as it is now, or None when there is none."""
        self._exec(
            "UPDATE subscribers SET status = 'active', reason = 'confirmed', confirmed_at = ?, "
            "confirm_client = ?, updated_at = ? WHERE id = ? AND status = 'pending'",
            (now.isoformat(), client, now.isoformat(), subscriber_id),
        )
        return self.subscriber_by_id(subscriber_id)

    def remove_subscriber(self, email: str, now: dt.datetime | None = None) -> bool:
        """Erase the subscriber's row and sent-history, and name them in past runs' ledger
        rows by a keyed hash only; keep that hash so they are not added again by mistake.
        False when the address is unknown here (its hash is kept all the same)."""
        key = email.strip().casefold()
        hashed = self.address_hash(key)
        with self._tx():
            found = self._exec("DELETE FROM subscribers WHERE key = ?", (key,)).rowcount > 0
            for table in ("deliveries", "digests", "skipped"):
                found |= (
                    self._exec(f"DELETE FROM {table} WHERE subscriber = ?", (key,)).rowcount > 0
                )
            found |= (
                self._exec(
                    "UPDATE ledger SET subscriber = ?, email = '(removed)', "
                    "digest = json_set(digest, '$.picks', json('[]')), detail = NULL "
                    "WHERE subscriber = ?",
                    (f"removed:{hashed}", key),
                ).rowcount
                > 0
            )
            self._exec(
                "INSERT OR IGNORE INTO removed_subscribers(address_hash, removed_at) VALUES (?, ?)",
                (hashed, (now or dt.datetime.now(dt.UTC)).isoformat()),
            )
        return found

    def is_removed(self, email: str) -> bool:
        """Whether the address was removed (``remove_subscriber``) and not added back since."""
        row = self._exec(
            "SELECT 1 FROM removed_subscribers WHERE address_hash = ?",
            (self.address_hash(email),),
        ).fetchone()
        return row is not None

    def purge_pending(self, older_than: dt.datetime) -> int:
        """Delete the sign-ups still pending that were made before ``older_than``: never
        confirmed, never mailed a digest. How many went."""
        cur = self._exec(
            "DELETE FROM subscribers WHERE status = 'pending' AND created_at < ?",
            (older_than.isoformat(),),
        )
        return cur.rowcount

    def sync_file_subscribers(
        self, subscribers: Iterable[Subscriber], now: dt.datetime, *, write: bool = True
    ) -> dict[str, SubscriberRecord]:
        """The rows of the config file's subscribers, by key: an address without one gets
        one (source ``config``, active), and a ``config`` row takes the file's settings. An
        address removed before gets none (it is not in the result). ``write=False``: the
        rows as they would be, with no id for the new ones, and nothing written."""
        wanted = {s.key: s for s in subscribers}
        if not wanted:
            return {}
        have = self._rows_by_key(list(wanted))
        removed = {r[0] for r in self._exec("SELECT address_hash FROM removed_subscribers")}
        stamp = now.isoformat()
        added: list[SubscriberRecord] = []
        changed: list[SubscriberRecord] = []
        for key, sub in wanted.items():
            old = have.get(key)
            if old is None:
                if removed and self.address_hash(key) in removed:
                    continue
                record = SubscriberRecord.of(sub, status="active", source="config")
                record = _replace(
                    record,
                    id=new_subscriber_id() if write else "",
                    reason="in the config file",
                    created_at=now,
                    confirmed_at=now,
                    updated_at=now,
                )
                added.append(record)
                have[key] = record
            elif old.source == "config" and _settings(old) != _settings(sub):
                have[key] = _replace(
                    SubscriberRecord.of(sub, status=old.status, source="config"),
                    id=old.id,
                    reason=old.reason,
                    created_at=old.created_at,
                    confirmed_at=old.confirmed_at,
                    updated_at=now,
                )
                changed.append(have[key])
        if write and (added or changed):
            with self._tx():
                # Two processes starting together (a send and the one waiting for its lock)
                # may both add the file's new subscribers: the first row stands.
                # The rows made one at a time as they are written: a list of 100,000 rows
                # of text was ~60 MB at once.
                self._exec_many(
                    f"INSERT INTO subscribers({_COLUMNS}, key) "
                    f"VALUES ({','.join('?' * 21)}) ON CONFLICT (key) DO NOTHING",
                    ((*_row(r), r.key) for r in added),
                )
                self._exec_many(
                    "UPDATE subscribers SET email = ?, name = ?, topics = ?, cadence = ?, "
                    "max_papers = ?, min_upvotes = ?, timezone = ?, send_at = ?, keywords = ?, "
                    "exclude = ?, sections = ?, updated_at = ? WHERE id = ?",
                    ((*_row(r)[1:12], stamp, r.id) for r in changed),
                )
            # What was written, as written: another process's row (and id) where it won.
            # Only the ids are read back to find those rows: 100,000 records read again
            # beside the ones made here were ~70 MB more at once.
            ids = self._ids_by_key([r.key for r in added])
            lost = [r.key for r in added if ids.get(r.key) != r.id]
            del added, changed, ids
            self._rows_by_key(lost, into=have)
        return have

    def _ids_by_key(self, keys: list[str]) -> dict[str, str]:
        return {row[-1]: row[0] for row in self._with_keys("id", keys)}

    def _rows_by_key(
        self, keys: list[str], into: dict[str, SubscriberRecord] | None = None
    ) -> dict[str, SubscriberRecord]:
        reader = _Reader()
        rows: dict[str, SubscriberRecord] = {} if into is None else into
        for row in self._with_keys(_COLUMNS, keys):
            rows[row[-1]] = reader.record(row[:-1])
        return rows

    def _with_keys(self, columns: str, keys: list[str]) -> Iterator[Sequence[Any]]:
        """``columns`` and the key of the subscribers with these keys, 500 keys a query."""
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            yield from self._exec(
                f"SELECT {columns}, key FROM subscribers WHERE key IN ({','.join('?' * len(chunk))})",
                chunk,
            )

    # -- the sign-up limits (shared by every process on the file) ----------------------------

    def record_signup_mail(self, address_key: str, now: dt.datetime) -> None:
        """A mail went to this address because of a sign-up (stored as a keyed hash)."""
        self._exec(
            "INSERT INTO signup_mail(address_hash, sent_at) VALUES (?, ?)",
            (self.address_hash(address_key), now.isoformat()),
        )

    def signup_mail_since(self, address_key: str, since: dt.datetime) -> int:
        row = self._exec(
            "SELECT COUNT(*) FROM signup_mail WHERE address_hash = ? AND sent_at >= ?",
            (self.address_hash(address_key), since.isoformat()),
        ).fetchone()
        return int(row[0])

    def record_signup_attempt(self, client: str, now: dt.datetime) -> None:
        """A sign-up was posted from this client address (stored as a keyed hash)."""
        self._exec(
            "INSERT INTO signup_attempts(client_hash, at) VALUES (?, ?)",
            (self._hash("client", client), now.isoformat()),
        )

    def signup_attempts_since(self, client: str, since: dt.datetime) -> int:
        row = self._exec(
            "SELECT COUNT(*) FROM signup_attempts WHERE client_hash = ? AND at >= ?",
            (self._hash("client", client), since.isoformat()),
        ).fetchone()
        return int(row[0])

    def forget_signup_limits(self, before: dt.datetime) -> int:
        """Drop the sign-up counters' entries made before ``before``; how many went."""
        stamp = before.isoformat()
        with self._tx():
            mail = self._exec("DELETE FROM signup_mail WHERE sent_at < ?", (stamp,))
            tries = self._exec("DELETE FROM signup_attempts WHERE at < ?", (stamp,))
        return mail.rowcount + tries.rowcount

    # -- keyed hashes ----------------------------------------------------------------------

    def address_hash(self, email: str) -> str:
        """The keyed hash of an address (case-blind) that the store keeps instead of it."""
        return self._hash("address", email.strip().casefold())

    def _hash(self, kind: str, value: str) -> str:
        key = self._hash_key
        if key is None:
            row = self._exec("SELECT value FROM store_meta WHERE name = 'hash_key'").fetchone()
            key = self._hash_key = bytes(row[0])
        return hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]


def _replace(record: SubscriberRecord, **changes: Any) -> SubscriberRecord:
    return dataclasses.replace(record, **changes)


def _settings(sub: Subscriber | SubscriberRecord) -> tuple[Any, ...]:
    """What the file decides for its subscribers."""
    return (
        sub.email,
        sub.name,
        tuple(sub.topics),
        sub.cadence,
        sub.max_papers,
        sub.min_upvotes,
        sub.timezone,
        sub.send_at,
        tuple(sub.keywords),
        tuple(sub.exclude),
        sub.sections,
    )


def _stamp(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _row(r: SubscriberRecord) -> tuple[Any, ...]:
    """The record in ``_COLUMNS``' order."""
    return (
        r.id,
        r.email,
        r.name,
        json.dumps(list(r.topics), ensure_ascii=False),
        r.cadence,
        r.max_papers,
        r.min_upvotes,
        r.timezone,
        r.send_at.isoformat() if r.send_at else None,
        json.dumps(list(r.keywords), ensure_ascii=False),
        json.dumps(list(r.exclude), ensure_ascii=False),
        int(r.sections),
        r.status,
        r.source,
        r.reason,
        _stamp(r.created_at),
        _stamp(r.confirmed_at),
        r.signup_client,
        r.confirm_client,
        _stamp(r.updated_at),
    )


class _Reader:
    """Rows -> records; the lists and times many rows share are decoded once."""

    def __init__(self) -> None:
        self.lists: dict[str, tuple[str, ...]] = {}
        self.times: dict[str, dt.time] = {}

    def list_of(self, text: str) -> tuple[str, ...]:
        found = self.lists.get(text)
        if found is None:
            found = self.lists[text] = tuple(json.loads(text))
        return found

    def time_of(self, text: str) -> dt.time:
        found = self.times.get(text)
        if found is None:
            found = self.times[text] = dt.time.fromisoformat(text)
        return found

    def record(self, row: Sequence[Any]) -> SubscriberRecord:
        (sid, email, name, topics, cadence, max_papers, min_upvotes, timezone, send_at,
         keywords, exclude, sections, status, source, reason, created, confirmed,
         signup_client, confirm_client, updated) = row  # fmt: skip
        return SubscriberRecord(
            email=email,
            topics=self.list_of(topics),
            id=sid,
            name=name,
            cadence=cadence,
            max_papers=max_papers,
            min_upvotes=min_upvotes,
            timezone=timezone,
            send_at=self.time_of(send_at) if send_at else None,
            keywords=self.list_of(keywords),
            exclude=self.list_of(exclude),
            sections=bool(sections),
            status=status,
            source=source,
            reason=reason,
            created_at=dt.datetime.fromisoformat(created),
            confirmed_at=dt.datetime.fromisoformat(confirmed) if confirmed else None,
            signup_client=signup_client,
            confirm_client=confirm_client,
            updated_at=dt.datetime.fromisoformat(updated),
        )
