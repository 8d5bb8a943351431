"""The pipeline is the map: its docstring names what the code calls, it leaves the ledger to
``ledger``, and one run is asked for with one frozen ``RunOptions`` and a clock."""

from __future__ import annotations

import ast
import dataclasses
import datetime as dt
import email
import email.policy
import inspect
import re
from pathlib import Path

import pytest

from newsletter import ledger, pipeline
from newsletter.pipeline import RunOptions, run_once
from newsletter.store import SqliteStore
from tests.fakes import FakeSource, OutboxSender
from tests.test_catchup import DAILY, KEY, at, day, make_config, paper

SOURCE = Path(pipeline.__file__).read_text(encoding="utf-8")

# What the map may ask of the store itself: reading and fetching. The ledger's rows are
# ``ledger``'s to write.
STORE_READS = {
    "states",
    "send_lock",
    "freeze_lock",
    "last_digest_day",
    "complete_days",
    "add_papers",
    "candidates",
    "trends",
    "sent_ids",
    "skipped_ids",
}


def test_run_once_takes_options_and_a_clock() -> None:
    params = inspect.signature(run_once).parameters
    assert list(params) == ["config", "options", "source", "store", "sender", "key", "clock"]
    assert all(p.kind is p.KEYWORD_ONLY for p in list(params.values())[2:])
    options = RunOptions(day=dt.date(2026, 5, 8), only="ada@example.org")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.day = None  # type: ignore[misc]


def test_the_map_calls_the_ledger_and_writes_no_ledger_row_itself() -> None:
    called = {
        node.func.attr
        for node in ast.walk(ast.parse(SOURCE))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "store"
    }
    assert called and called <= STORE_READS, called - STORE_READS
    assert not {"logged", "silence_warning", "RunHealth"} & set(vars(pipeline))


def test_every_ledger_step_the_docstring_names_exists() -> None:
    doc = pipeline.__doc__ or ""
    steps = set(re.findall(r"\bledger\.(\w+)\(", doc))
    methods = set(re.findall(r"\brun\.(\w+)\(", doc))
    assert {"open_run", "frozen_for_test"} <= steps
    assert {"missing", "freeze", "batches", "digests", "recorder", "totals", "close"} <= methods
    assert all(hasattr(ledger, name) for name in steps), steps
    assert all(hasattr(ledger.Run, name) for name in methods), methods
    # Both paths, as the code runs them.
    assert "preview, dry run, test send" in doc and "real send" in doc


def test_now_is_the_clocks_first_reading_and_the_ledger_keeps_its_later_ones(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path, DAILY)
    readings = [at(day(0), 8) + dt.timedelta(minutes=i) for i in range(100)]
    clock = iter(readings).__next__
    sender = OutboxSender()
    with SqliteStore(cfg.state_path) as store:
        report = run_once(
            cfg,
            RunOptions(day=day(0)),
            source=FakeSource({day(0): [paper("a", day(0))]}),
            store=store,
            sender=sender,
            key=KEY,
            clock=clock,
        )
        (sent_at,) = store.db.execute("SELECT updated_at FROM ledger WHERE status = 'sent'")
    assert report.delivered == ["ada@example.org"]
    (message,) = sender.sent
    date = email.message_from_bytes(message.data, policy=email.policy.default)["Date"]
    assert date.datetime == readings[0]
    assert dt.datetime.fromisoformat(sent_at[0]) > readings[0]
