"""build.compose_all: the same messages, in the same order, from one process or a pool."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import build, message
from newsletter.errors import TemplateError
from newsletter.models import Digest
from tests.digests import IDENTITY, fixture_digest, hostile_digest, load_digest

NOW = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
SPEC = build.ComposeSpec(
    templates_dir=None,
    identity=IDENTITY,
    sender=message.Sender("Trending Papers <papers@example.org>", "tp.example.org", "TP"),
    key=b"k" * 32,
    base_url="https://papers.example.org",
    now=NOW,
)


def digests(n: int) -> list[Digest]:
    base = [
        load_digest(),
        hostile_digest(),
        fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=10),
        fixture_digest("hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json"),
    ]
    out = []
    for i in range(n):
        d = base[i % len(base)]
        sub = dataclasses.replace(d.subscriber, email=f"reader{i}@example.org")
        out.append(dataclasses.replace(d, subscriber=sub))
    return out


def test_pool_gives_the_same_messages_in_order() -> None:
    items = digests(40)
    alone = list(build.compose_all(SPEC, items, workers=1))
    pooled = list(build.compose_all(SPEC, items, workers=2, chunk=3))
    assert [m.recipient for m in pooled] == [f"reader{i}@example.org" for i in range(40)]
    assert [m.data for m in pooled] == [m.data for m in alone]
    assert [m.email for m in pooled] == [m.email for m in alone]


def test_pool_reads_digests_lazily() -> None:
    consumed = 0

    def source() -> Iterator[Digest]:
        nonlocal consumed
        for d in digests(200):
            consumed += 1
            yield d

    stream = build.compose_all(SPEC, source(), workers=2, chunk=5)
    next(stream)
    assert consumed <= 2 * 2 * 5 + 5  # the chunks in flight, and the one being refilled
    assert sum(1 for _ in stream) == 199
    assert consumed == 200


def test_template_error_in_a_worker_reaches_the_caller(tmp_path: Path) -> None:
    (tmp_path / "_paper.html.j2").write_text("<tr><td>{{ paper.no_such_field }}</td></tr>\n")
    spec = dataclasses.replace(SPEC, templates_dir=tmp_path)
    with pytest.raises(TemplateError, match=r"_paper\.html\.j2:1: undefined") as info:
        list(build.compose_all(spec, digests(4), workers=2, chunk=1))
    assert info.value.line == 1


def test_worker_log_records_reach_the_parent(caplog: pytest.LogCaptureFixture) -> None:
    one = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json")
    two = fixture_digest("hf_api_daily_papers_latest_2026-06-12_30papers.json")
    big = dataclasses.replace(one, picks=one.picks + two.picks)  # 67 papers: too big
    with caplog.at_level(logging.WARNING):
        list(build.compose_all(SPEC, [big], workers=1))
        alone = [r.getMessage() for r in caplog.records]
        caplog.clear()
        list(build.compose_all(SPEC, [big, big], workers=2, chunk=1))
    guarded = [r for r in caplog.records if r.getMessage().startswith("render.size_guard")]
    assert any(m.startswith("render.size_guard") for m in alone)
    assert len(guarded) == 2
    assert all(r.name == "newsletter.render" for r in guarded)


def test_workers_for() -> None:
    assert build.workers_for(10) == 1
    assert build.workers_for(build.POOL_THRESHOLD) >= 1
