"""``newsletter state copy``: a SQLite state into PostgreSQL and back, checked; a send from the
copy resumes a half-finished run without sending again what went out."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.models import Digest, PaperData, Pick, Subscriber
from newsletter.store import open_store
from newsletter.store.copy import TABLES, TRANSIENT, counts, ledger_checksum
from tests.servers.postgres import Database
from tests.smtpserver import SmtpServer
from tests.test_send import addresses, make_config, secret, send

pytest_plugins = ["tests.servers.fixtures"]

__all__ = ["secret"]  # the signing key in the environment, as test_send has it

EARLIER = dt.date(2026, 5, 1)
T0 = dt.datetime(2026, 5, 1, 7, tzinfo=dt.UTC)


def copy(cfg: Path, target: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["state", "copy", "-c", str(cfg), "--to", target])
    return result.exit_code, result.output


def finished_earlier_run(state: Path) -> None:
    """A run of an earlier day, every row sent, as a send leaves it."""
    paper = PaperData(id="2605.99999", title="An earlier paper", day=EARLIER, upvotes=3)
    with open_store(state) as store:
        store.add_papers([paper], T0)
        run_id = store.open_run(EARLIER, T0)
        for email in addresses(2):
            sub = Subscriber(email=email, topics=("everything",))
            store.freeze(
                run_id, [Digest(sub, EARLIER, (Pick(paper, "everything", "k", "title", "r"),))], T0
            )
            store.finish(run_id, sub.key, "sent", "250 OK", T0)
        store.close_run(run_id, T0)


def test_a_copy_to_postgresql_resumes_the_half_finished_run_without_resending(
    tmp_path: Path, postgres_db: Database
) -> None:
    with SmtpServer() as server:
        finished_earlier_run(tmp_path / "state.db")
        cfg = make_config(tmp_path, server.port, n=5, smtp="  daily_cap: 3")
        first = send(cfg)  # today's run: three sent, two left for later
        assert first.exit_code == 0, first.output
        assert len(server.received) == 3

        code, out = copy(cfg, postgres_db.url)
        assert code == 0, out
        assert "ledger checksum (sha256): " in out and "  ledger             7\n" in out
        with open_store(tmp_path / "state.db") as a, open_store(postgres_db.url) as b:
            assert counts(a) == counts(b)
            assert ledger_checksum(a) == ledger_checksum(b)
            assert b.unfinished(dt.date(2026, 5, 8)) == {addresses(5)[3], addresses(5)[4]}

        # A target that holds anything is refused, untouched: one line, exit 2.
        code, out = copy(cfg, postgres_db.url)
        assert code == 2 and out.count("\n") == 1, out
        assert "is not empty" in out and "nothing copied" in out

        cfg.write_text(
            cfg.read_text()
            .replace("  state: state.db\n", f"  state: {postgres_db.url}\n")
            .replace("  daily_cap: 3\n", "")
        )
        resumed = send(cfg)
        assert resumed.exit_code == 0, resumed.output
        assert "this process: 2 sent\n" in resumed.output
        got = server.handler.count()
    assert sorted(got) == addresses(5) and set(got.values()) == {1}  # nobody twice

    # And back: PostgreSQL into a new SQLite file, the same rows.
    back = tmp_path / "back.db"
    code, out = copy(cfg, str(back))
    assert code == 0, out
    with open_store(back) as a, open_store(postgres_db.url) as b:
        assert counts(a) == counts(b) and ledger_checksum(a) == ledger_checksum(b)
        assert a.run_counts(b.open_run(dt.date(2026, 5, 8), T0)) == {"sent": 5}


def test_every_table_is_copied_or_named_transient(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.db") as store:
        tables = {
            name
            for (name,) in store.db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        }
        for table, columns in TABLES.items():
            have = {row[1] for row in store.db.execute(f"PRAGMA table_info({table})")}
            assert set(columns) == have - {"claim_id"}, table  # a claim is a live sender's
    assert tables == set(TABLES) | TRANSIENT
