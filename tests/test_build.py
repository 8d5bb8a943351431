"""build.compose_all: the same messages, in the same order, from one process or a pool."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import build, message, send
from newsletter.errors import SendError, TemplateError
from newsletter.models import Digest, Pick
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
    assert all(m.email.html and m.email.text for m in pooled)


@pytest.mark.parametrize("workers", [1, 2])
def test_without_bodies_the_same_bytes_and_no_html_or_text(workers: int) -> None:
    items = digests(12)
    full = list(build.compose_all(SPEC, items))
    bare = list(build.compose_all(SPEC, items, workers=workers, chunk=5, bodies=False))
    assert [m.data for m in bare] == [m.data for m in full]
    assert [m.message_id for m in bare] == [m.message_id for m in full]
    # Everything a sender and the ledger read is there; the bodies are empty with one
    # process as with a pool, so a consumer that needs them fails in small tests too.
    assert [dataclasses.replace(m.email, html="", text="") for m in full] == [m.email for m in bare]
    assert {(m.email.html, m.email.text) for m in bare} == {("", "")}


def test_a_preview_refuses_a_message_without_bodies(tmp_path: Path) -> None:
    (bare,) = build.compose_all(SPEC, digests(1), bodies=False)
    preview = send.PreviewSender(tmp_path)
    with pytest.raises(SendError, match="without its HTML body"):
        preview.deliver(bare)
    assert list(tmp_path.iterdir()) == []
    assert send.PreviewSender.needs_bodies and not send.SmtpSender.needs_bodies


def test_papers_of_the_run_go_to_workers_by_number(monkeypatch: pytest.MonkeyPatch) -> None:
    items = digests(8)
    papers = list({id(p.paper): p.paper for d in items for p in d.picks}.values())
    numbers = {id(p): i for i, p in enumerate(papers)}
    payload = build._dumps(items, papers, numbers)
    assert papers[0].title.encode() not in payload
    assert len(payload) * 3 < len(pickle.dumps(items))
    monkeypatch.setattr(build, "_papers", tuple(papers))  # what a worker gets at start
    assert build._loads(payload) == items
    # A paper not in the table (an equal copy is another object) goes whole.
    copy = dataclasses.replace(papers[0])
    assert build._loads(build._dumps(items, [copy], {id(copy): 0})) == items
    pooled = build.compose_all(SPEC, items, workers=2, chunk=3, papers=papers)
    assert [m.data for m in pooled] == [m.data for m in build.compose_all(SPEC, items)]


def test_a_digest_goes_out_with_every_field() -> None:
    """The lean form names the fields it carries: a new one must be added to it too."""
    assert tuple(f.name for f in dataclasses.fields(Digest)) == build._DIGEST_FIELDS
    assert dataclasses.fields(Pick)[0].name == "paper"  # sent as its number
    items = [
        dataclasses.replace(
            d,
            subscriber=dataclasses.replace(
                d.subscriber, send_at=dt.time(7, 30), keywords=("k",), sections=True
            ),
            picks=tuple(
                dataclasses.replace(p, section="S", rising=True, score=1.5) for p in d.picks
            ),
            skipped_ids=("x",),
        )
        for d in digests(4)
    ]
    assert build._loads(build._dumps(items, [], {})) == items


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


def test_a_real_send_composes_on_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline -> build.compose_all's pool -> SmtpSender -> the ledger, end to end."""
    import email as email_pkg
    import email.policy

    from tests.smtpserver import SmtpServer
    from tests.test_send import addresses, ledger, make_config, send

    monkeypatch.setenv("NEWSLETTER_SECRET", "test-signing-key")
    monkeypatch.setattr(build, "workers_for", lambda count: 2)  # a pool, even for 6
    used: list[int] = []
    real = build.compose_all

    def spy(*args: object, **kwargs: object) -> object:
        used.append(kwargs.get("workers", 1))  # type: ignore[arg-type]
        assert kwargs.get("bodies") is False  # an SMTP sender sends the bytes only
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(build, "compose_all", spy)
    with SmtpServer() as server:
        result = send(make_config(tmp_path, server.port, n=6))
        assert result.exit_code == 0, result.output
    assert used == [2]
    assert sorted(server.handler.count()) == addresses(6)
    assert ledger(tmp_path) == {"sent": 6}
    for received in server.received:
        msg = email_pkg.message_from_bytes(received.data, policy=email.policy.default)
        assert msg["To"] == received.rcpt_tos[0]
        assert msg.get_body(("html",)) is not None
