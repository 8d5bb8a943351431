"""Merging across sources, fetching from several with failures, and the retry of failed days."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
from pathlib import Path

from newsletter import sources
from newsletter.errors import FetchError
from newsletter.models import PaperData
from newsletter.store import SqliteStore, migrations

NOW = dt.datetime(2026, 4, 28, 6, tzinfo=dt.UTC)
D1, D2 = dt.date(2026, 4, 27), dt.date(2026, 4, 28)

HF = PaperData(
    id="2604.22002",
    title="When Cow Urine Cures Constipation on YouTube",
    day=D2,
    upvotes=12,
    comments=3,
    ai_summary="A study of health misinformation.",
)
AX = PaperData(
    id="2604.22002v1",
    title="When Cow Urine Cures Constipation on YouTube (arXiv)",
    day=D1,
    categories=("cs.CL", "cs.AI"),
    arxiv_comment="9 pages",
    source="arxiv",
)


class FakeSource:
    """Answers from a dict of day -> papers; a day in ``failing`` raises like a dead site."""

    def __init__(
        self,
        name: str,
        papers: dict[dt.date, list[PaperData]],
        failing: frozenset[dt.date] = frozenset(),
    ) -> None:
        self.name = name
        self.papers = papers
        self.failing = set(failing)
        self.asked: list[dt.date] = []

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        self.asked.append(day)
        if day in self.failing:
            raise FetchError(f"https://{self.name}.example/{day}", "HTTP 503 (after 4 attempts)")
        return self.papers.get(day, [])

    def latest_day(self, today: dt.date) -> dt.date | None:
        return max(self.papers, default=None)


def test_merge_hf_fields_win_arxiv_adds_categories_and_comment() -> None:
    for order in ([HF, AX], [AX, HF]):
        [merged] = sources.merge(order)
        assert merged.id == "2604.22002"
        assert (merged.title, merged.upvotes, merged.comments) == (HF.title, 12, 3)
        assert merged.ai_summary == HF.ai_summary
        assert merged.categories == ("cs.CL", "cs.AI")
        assert merged.arxiv_comment == "9 pages"
        assert merged.day == D2 and merged.source == "huggingface"


def test_merge_keeps_distinct_papers() -> None:
    other = dataclasses.replace(AX, id="2604.22027")
    assert [p.id for p in sources.merge([HF, AX, other])] == ["2604.22002", "2604.22027"]


def test_store_keeps_hf_fields_when_arxiv_reports_the_paper_later() -> None:
    with SqliteStore(":memory:") as store:
        store.add_papers([HF], NOW)
        store.add_papers([dataclasses.replace(AX, id="2604.22002")], NOW + dt.timedelta(days=1))
        [stored] = store.candidates([D1, D2])
    assert (stored.upvotes, stored.ai_summary) == (12, HF.ai_summary)
    assert stored.categories == ("cs.CL", "cs.AI")
    assert stored.arxiv_comment == "9 pages"


def test_one_source_down_the_others_go_on() -> None:
    hf = FakeSource("huggingface", {D2: [HF]}, failing={D2})
    ax = FakeSource("arxiv", {D2: [AX]})
    report = sources.fetch_all([hf, ax], [D2], now=NOW)
    assert report.any_ok and not report.ok
    assert [p.id for p in report.papers] == ["2604.22002v1"]
    assert report.errors == [
        "huggingface: failed: https://huggingface.example/2026-04-28: HTTP 503 (after 4 attempts)"
    ]
    assert [s.line() for s in report.statuses if s.ok] == ["arxiv: ok: 1 papers for 2026-04-28"]


def test_no_source_answering_is_a_failed_fetch() -> None:
    hf = FakeSource("huggingface", {}, failing={D2})
    ax = FakeSource("arxiv", {}, failing={D2})
    report = sources.fetch_all([hf, ax], [D2], now=NOW)
    assert not report.any_ok
    assert report.papers == []
    assert len(report.errors) == 2


def test_an_empty_day_is_not_a_failure() -> None:
    report = sources.fetch_all([FakeSource("huggingface", {})], [D2], now=NOW)
    assert report.ok and report.papers == []


def test_failed_days_are_fetched_again_by_the_next_run() -> None:
    with SqliteStore(":memory:") as store:
        hf = FakeSource("huggingface", {D1: [HF]}, failing={D1})
        first = sources.fetch_all([hf], [D1], log_to=store, now=NOW)
        assert not first.any_ok
        assert store.failed_days("huggingface", D1 - dt.timedelta(days=7)) == [D1]

        hf.failing.clear()  # the site is back
        second = sources.fetch_all([hf], [D2], log_to=store, now=NOW + dt.timedelta(days=1))
        assert hf.asked == [D1, D1, D2]
        assert [p.id for p in second.papers] == ["2604.22002"]
        assert store.failed_days("huggingface", D1 - dt.timedelta(days=7)) == []

        hf.asked.clear()
        sources.fetch_all([hf], [D2], log_to=store, now=NOW + dt.timedelta(days=2))
        assert hf.asked == [D2]  # nothing left to retry


def test_a_failed_day_is_a_warning_and_the_sources_other_days_go_on() -> None:
    with SqliteStore(":memory:") as store:
        hf = FakeSource("huggingface", {D1: [HF], D2: [dataclasses.replace(HF, id="2604.22027")]})
        hf.failing = {D1}
        report = sources.fetch_all([hf], [D1, D2], log_to=store, now=NOW)
        assert report.ok and report.days == {D2}
        assert [p.id for p in report.papers] == ["2604.22027"]
        assert report.errors == []
        assert report.day_errors == [
            "huggingface: 2026-04-27 not fetched (tried again by later runs): "
            "https://huggingface.example/2026-04-27: HTTP 503 (after 4 attempts)"
        ]
        assert store.failed_days("huggingface", D1 - dt.timedelta(days=7)) == [D1]


def test_a_source_that_times_out_is_not_asked_for_its_other_days() -> None:
    class Hung(FakeSource):
        def fetch_day(self, day: dt.date) -> list[PaperData]:
            self.asked.append(day)
            raise FetchError(f"https://hung.example/{day}", "timed out", timed_out=True)

    days = [D1 + dt.timedelta(days=i) for i in range(7)]
    with SqliteStore(":memory:") as store:
        hung = Hung("huggingface", {})
        ax = FakeSource("arxiv", {D1: [AX]})
        report = sources.fetch_all([hung, ax], days, log_to=store, now=NOW)
        assert hung.asked == [D1]
        assert report.errors == [
            "huggingface: failed: https://hung.example/2026-04-27: timed out "
            "(6 more days not tried in this run)"
        ]
        assert report.day_errors == []
        assert report.days == set(days)  # arXiv answered for every day
        # Every day of it is fetched again by the next run.
        assert store.failed_days("huggingface", D1) == days


def test_latest_day_skips_a_source_that_is_down() -> None:
    class Down(FakeSource):
        def latest_day(self, today: dt.date) -> dt.date | None:
            raise FetchError("https://down.example", "connection failed")

    up = FakeSource("arxiv", {D1: [AX]})
    assert sources.latest_day([Down("huggingface", {}), up], D2) == D1


def test_migration_2_keeps_an_existing_database(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    migrations.migrate(db, to=1)
    db.execute(
        "INSERT INTO fetched_days(source, day, fetched_at, papers) VALUES (?, ?, ?, ?)",
        ("huggingface", D1.isoformat(), NOW.isoformat(), 13),
    )
    db.close()
    with SqliteStore(path) as store:
        assert store.schema_version == migrations.LATEST >= 2
        assert store.failed_days("huggingface", D1) == []
        store.mark_fetched("huggingface", D2, 0, NOW, error="HTTP 503")
        assert store.failed_days("huggingface", D1) == [D2]
