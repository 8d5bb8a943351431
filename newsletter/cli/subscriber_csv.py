"""The operator's list of readers as CSV (``subscribers import``) and the export. Pure.

    rows, problems = parse(path, text, topics)    # every bad row: "FILE:LINE: message"
    text = export_csv(records) | export_json(records)

A file to import has the header ``email,name,topics,cadence`` (in any order; ``email`` and
``topics`` are required), topics separated by ``;``. The export's own columns are accepted
too, so an export imports back: ``status`` keeps an opt-out (paused, unsubscribed, bounced,
complained) as it is, while active and pending rows are imported by the command's rule
(active with ``--confirmed``, else pending with a confirmation email); ``source`` and the
times are the export's record and are not imported (an imported row's are its own).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from newsletter.config import _check_email, _header_text
from newsletter.models import SUBSCRIBER_STATUSES, Cadence, SubscriberRecord, SubscriberStatus

REQUIRED = ("email", "topics")
IMPORTED = ("email", "name", "topics", "cadence")
#: The export's columns: the imported ones, then the record's status, source and times.
EXPORTED = (*IMPORTED, "status", "source", "created_at", "confirmed_at", "updated_at")
#: Opt-outs an import keeps; any other status is decided by ``--confirmed``.
KEPT: tuple[SubscriberStatus, ...] = ("paused", "unsubscribed", "bounced", "complained")


@dataclass(frozen=True, slots=True)
class Row:
    """One reader of the file, checked: made by ``parse``, added by ``subscribers import``."""

    line: int
    email: str
    name: str | None
    topics: tuple[str, ...]
    cadence: Cadence
    status: SubscriberStatus | None  # an opt-out to keep; None: the command decides


def parse(path: Path | str, data: bytes, topics: Iterable[str]) -> tuple[list[Row], list[str]]:
    """The rows of the file's bytes, and one ``FILE:LINE: message`` per problem (the rows are
    only for use when there is none). Addresses are checked against each other here; against
    the store and the config file by the caller."""
    known = sorted(topics)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return [], [f"{path}:{line}: not UTF-8 text (byte {e.start + 1})"]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    problems: list[str] = []
    try:
        header = next(reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(reader, None)  # blank lines before the header
    except csv.Error as e:
        return [], [f"{path}:{reader.line_num}: {e}"]
    if header is None:
        return [], [f"{path}:1: no header (expected {','.join(IMPORTED)})"]
    columns = [cell.strip().lower() for cell in header]
    where = f"{path}:{reader.line_num}"
    for name in columns:
        if name not in EXPORTED:
            problems.append(f"{where}: unknown column {name!r} (expected {','.join(IMPORTED)})")
        elif columns.count(name) > 1:
            problems.append(f"{where}: column {name!r} is there twice")
    for name in REQUIRED:
        if name not in columns:
            problems.append(f"{where}: no {name!r} column (expected {','.join(IMPORTED)})")
    if problems:
        return [], list(dict.fromkeys(problems))
    rows: list[Row] = []
    seen: dict[str, int] = {}
    while True:
        try:
            cells = next(reader, None)
        except csv.Error as e:
            problems.append(f"{path}:{reader.line_num}: {e}")
            break
        if cells is None:
            break
        if not any(cell.strip() for cell in cells):
            continue
        line = reader.line_num
        if len(cells) != len(columns):
            problems.append(f"{path}:{line}: {len(cells)} fields, the header has {len(columns)}")
            continue
        row, errors = check(line, dict(zip(columns, cells, strict=True)), known)
        problems += [f"{path}:{line}: {error}" for error in errors]
        if row is None:
            continue
        first = seen.setdefault(row.email.casefold(), line)
        if first != line:
            problems.append(f"{path}:{line}: email: {row.email} is on line {first} already")
            continue
        rows.append(row)
    return rows, problems


def check(line: int, cells: dict[str, str], known: Sequence[str]) -> tuple[Row | None, list[str]]:
    """One reader's cells (``email`` and ``topics`` required), checked: the row, or what is
    wrong, each as ``column: message``."""
    errors: list[str] = []
    email = cells["email"].strip()
    try:
        email = _check_email(email)
    except ValueError as e:
        errors.append(f"email: {e}")
    name = cells.get("name", "").strip() or None
    if name is not None:
        try:
            _header_text(name)
        except ValueError as e:
            errors.append(f"name: {e}")
    topics = tuple(dict.fromkeys(t.strip() for t in cells["topics"].split(";") if t.strip()))
    if not topics:
        errors.append("topics: none given (topics are separated by ';')")
    for topic in topics:
        if topic not in known:
            errors.append(f"topics: unknown topic {topic!r} (known: {', '.join(known)})")
    cadence = cells.get("cadence", "").strip().lower() or "daily"
    if cadence not in ("daily", "weekly"):
        errors.append(f"cadence: {cadence!r} is neither daily nor weekly")
    status_text = cells.get("status", "").strip().lower()
    status: SubscriberStatus | None = None
    if status_text:
        if status_text not in SUBSCRIBER_STATUSES:
            errors.append(f"status: {status_text!r} is not one of {', '.join(SUBSCRIBER_STATUSES)}")
        elif status_text in KEPT:
            status = next(s for s in KEPT if s == status_text)
    if errors:
        return None, errors
    kind: Cadence = "weekly" if cadence == "weekly" else "daily"
    return Row(line, email, name, topics, kind, status), []


def _fields(record: SubscriberRecord) -> dict[str, Any]:
    return {
        "email": record.email,
        "name": record.name,
        "topics": list(record.topics),
        "cadence": record.cadence,
        "status": record.status,
        "source": record.source,
        "created_at": record.created_at.isoformat() if record.created_at else None,
        "confirmed_at": record.confirmed_at.isoformat() if record.confirmed_at else None,
        "updated_at": record.updated_at.isoformat() if record.updated_at else None,
    }


def export_csv(records: Iterable[SubscriberRecord]) -> str:
    """The records as CSV with the ``EXPORTED`` columns (topics joined by ``;``)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORTED)
    for record in records:
        fields = _fields(record)
        fields["topics"] = ";".join(fields["topics"])
        writer.writerow(["" if fields[c] is None else fields[c] for c in EXPORTED])
    return out.getvalue()


def export_json(records: Iterable[SubscriberRecord]) -> str:
    """The records as a JSON list of objects with the ``EXPORTED`` keys (topics a list)."""
    return json.dumps([_fields(r) for r in records], ensure_ascii=False, indent=2) + "\n"
