"""Windows and catch-up across runs: fake source, fake outbox, a real SQLite file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from newsletter import config as config_mod
from newsletter.models import PaperData
from newsletter.pipeline import RunOptions, RunReport, run_once
from newsletter.store import SqliteStore
from tests.fakes import FakeSource, OutboxSender

MON = dt.date(2026, 5, 4)
KEY = b"k" * 32


def day(n: int) -> dt.date:
    return MON + dt.timedelta(days=n)


def at(d: dt.date, hour: int = 8) -> dt.datetime:
    return dt.datetime.combine(d, dt.time(hour), tzinfo=dt.UTC)


def paper(pid: str, d: dt.date, upvotes: int = 10, title: str = "Diffusion") -> PaperData:
    return PaperData(id=pid, title=f"{title} {pid}", day=d, upvotes=upvotes)


def make_config(tmp_path: Path, subscribers: str, selection: str = "") -> config_mod.Config:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"""\
newsletter:
  state: state.db
{selection}
topics:
  diffusion:
    keywords: [diffusion]
subscribers:
{subscribers}""",
        encoding="utf-8",
    )
    return config_mod.load(path)


DAILY = "  - email: ada@example.org\n    topics: [diffusion]\n"


def run(
    cfg: config_mod.Config, source: FakeSource, sender: OutboxSender, d: dt.date, hour: int = 8
) -> RunReport:
    with SqliteStore(cfg.state_path) as store:
        return run_once(
            cfg,
            RunOptions(day=d),
            source=source,
            store=store,
            sender=sender,
            key=KEY,
            clock=lambda: at(d, hour),
        )


def test_a_weekend_is_caught_up_on_monday_and_nothing_repeats(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY)
    source = FakeSource({day(4): [paper("fri", day(4))], day(7): [paper("mon", day(7))]})
    sender = OutboxSender()
    run(cfg, source, sender, day(4))  # Friday
    # Saturday and Sunday have no papers: no email.
    run(cfg, source, sender, day(5))
    run(cfg, source, sender, day(6))
    run(cfg, source, sender, day(7))
    assert sender.ids_for("ada@example.org") == [["fri"], ["mon"]]


def test_papers_added_to_a_list_after_its_digest_come_the_next_day(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY)
    source = FakeSource({day(0): [paper("early", day(0))]})
    sender = OutboxSender()
    run(cfg, source, sender, day(0), hour=8)
    source.lists[day(0)].append(paper("late", day(0)))
    run(cfg, source, sender, day(1), hour=8)
    run(cfg, source, sender, day(2), hour=8)
    assert sender.ids_for("ada@example.org") == [["early"], ["late"]]


def test_failed_runs_are_caught_up_by_the_next_one(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY)
    source = FakeSource({day(i): [paper(f"p{i}", day(i))] for i in range(5)})
    sender = OutboxSender()
    run(cfg, source, sender, day(0))
    source.down = {day(1), day(2)}
    for i in (1, 2):
        report = run(cfg, source, sender, day(i))
        assert report.fetch_failed and not report.ok  # nothing sent, and the run says so
    source.down = set()
    run(cfg, source, sender, day(3))
    assert [sorted(ids) for ids in sender.ids_for("ada@example.org")] == [
        ["p0"],
        ["p1", "p2", "p3"],
    ]


def test_first_digest_covers_max_age_days(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY, "selection:\n  max_age_days: 3\n")
    source = FakeSource({day(i): [paper(f"p{i}", day(i))] for i in range(6)})
    sender = OutboxSender()
    run(cfg, source, sender, day(5))
    assert sorted(sender.ids_for("ada@example.org")[0]) == ["p3", "p4", "p5"]
    assert sorted(source.requests) == [day(3), day(4), day(5)]


def test_days_fetched_after_they_ended_are_not_fetched_again(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY, "selection:\n  max_age_days: 3\n")
    source = FakeSource({day(i): [paper(f"p{i}", day(i))] for i in range(6)})
    run(cfg, source, OutboxSender(), day(4))
    source.requests.clear()
    run(cfg, source, OutboxSender(), day(5))
    # day(4) was fetched during day(4) (08:00), so it may have grown: fetched again.
    assert source.requests == [day(4), day(5)]


def test_weekly_subscriber_gets_the_last_seven_days(tmp_path: Path) -> None:
    subs = "  - email: wes@example.org\n    topics: [diffusion]\n    cadence: weekly\n"
    cfg = make_config(tmp_path, subs, "selection:\n  max_age_days: 2\n")
    source = FakeSource({day(i): [paper(f"p{i}", day(i))] for i in range(9)})
    sender = OutboxSender()
    run(cfg, source, sender, day(8))
    assert sorted(sender.ids_for("wes@example.org")[0]) == [f"p{i}" for i in range(2, 9)]


def test_preview_sender_never_moves_the_window(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY)
    source = FakeSource({day(0): [paper("p0", day(0))]})
    preview = OutboxSender()
    preview.records_deliveries = False
    run(cfg, source, preview, day(0))
    real = OutboxSender()
    run(cfg, source, real, day(1))
    assert real.ids_for("ada@example.org") == [["p0"]]


def test_rising_paper_comes_back_once(tmp_path: Path) -> None:
    subs = "  - email: ada@example.org\n    topics: [diffusion]\n    min_upvotes: 20\n    sections: true\n"
    cfg = make_config(tmp_path, subs, "selection:\n  max_age_days: 7\n")
    source = FakeSource({day(0): [paper("hot", day(0), 50), paper("slow", day(0), 5)]})
    sender = OutboxSender()
    run(cfg, source, sender, day(0))
    # "slow" gains upvotes; the next digests come from later days' windows.
    source.lists[day(0)] = [paper("hot", day(0), 60), paper("slow", day(0), 25)]
    source.lists[day(2)] = [paper("new", day(2), 30)]
    run(cfg, source, sender, day(2))
    run(cfg, source, sender, day(3))
    assert sender.ids_for("ada@example.org") == [["hot"], ["new", "slow"]]
    html = sender.html(1)
    assert "Rising" in html


def test_send_empty_sends_a_digest_without_papers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, DAILY, "selection:\n  send_empty: true\n")
    sender = OutboxSender()
    run(cfg, FakeSource({}), sender, day(0))
    assert sender.ids_for("ada@example.org") == [[]]
