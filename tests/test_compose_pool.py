"""compose_many and select_and_compose: the same messages, in the same order, from one
process or a pool."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter import compose, deliver, selection
from newsletter.compose import pool, wire
from newsletter.errors import SendError, TemplateError
from newsletter.models import (
    PERSONAL_SECTION,
    Digest,
    NothingNew,
    Outgoing,
    PaperData,
    Pick,
    Subscriber,
    Topic,
)
from newsletter.selection import Request, Selecting
from newsletter.sources import huggingface
from tests.conftest import fixture_path
from tests.digests import fixture_digest, hostile_digest, load_digest, spec
from tests.fakes import FakeSource, OutboxSender

NOW = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
SPEC = spec(now=NOW)


def many(
    digests: list[Digest] | Iterator[Digest],
    *,
    workers: int = 1,
    chunk: int = pool.CHUNK,
    bodies: bool = True,
    spec: compose.ComposeSpec = SPEC,
    papers: list[PaperData] | None = None,
) -> Iterator[Outgoing]:
    """``compose_many`` with the number of processes chosen by the test."""
    return compose.compose_many(
        spec, digests, count=0, bodies=bodies, papers=papers or (), workers=workers, chunk=chunk
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


def selected(
    selecting: Selecting,
    requests: list[Request],
    *,
    workers: int = 1,
    chunk: int = pool.CHUNK,
    bodies: bool = True,
) -> Iterator[Outgoing | NothingNew]:
    """``select_and_compose`` with the number of processes chosen by the test."""
    return compose.select_and_compose(
        SPEC, selecting, requests, count=0, bodies=bodies, workers=workers, chunk=chunk
    )


def test_pool_gives_the_same_messages_in_order() -> None:
    items = digests(40)
    alone = list(many(items, workers=1))
    pooled = list(many(items, workers=2, chunk=3))
    assert [m.recipient for m in pooled] == [f"reader{i}@example.org" for i in range(40)]
    assert [m.data for m in pooled] == [m.data for m in alone]
    assert [m.email for m in pooled] == [m.email for m in alone]
    assert all(m.email.html and m.email.text for m in pooled)


@pytest.mark.parametrize("workers", [1, 2])
def test_without_bodies_the_same_bytes_and_no_html_or_text(workers: int) -> None:
    items = digests(12)
    full = list(many(items))
    bare = list(many(items, workers=workers, chunk=5, bodies=False))
    assert [m.data for m in bare] == [m.data for m in full]
    assert [m.message_id for m in bare] == [m.message_id for m in full]
    # Everything a sender and the ledger read is there; the bodies are empty with one
    # process as with a pool, so a consumer that needs them fails in small tests too.
    assert [dataclasses.replace(m.email, html="", text="") for m in full] == [m.email for m in bare]
    assert {(m.email.html, m.email.text) for m in bare} == {("", "")}


def test_a_preview_refuses_a_message_without_bodies(tmp_path: Path) -> None:
    (bare,) = many(digests(1), bodies=False)
    preview = deliver.PreviewSender(tmp_path)
    with pytest.raises(SendError, match="without its HTML body"):
        preview.deliver(bare)
    assert list(tmp_path.iterdir()) == []


def test_senders_know_nothing_of_bodies() -> None:
    """Whether messages keep their HTML and text is composing's option (``bodies``), which
    the pipeline chooses: a preview writes the HTML, a real send sends the bytes."""
    assert "needs_bodies" not in deliver.Sender.__annotations__
    for sender in (deliver.PreviewSender, deliver.SmtpSender, OutboxSender):
        assert not hasattr(sender, "needs_bodies")


def test_the_pipeline_chooses_the_bodies_not_the_sender(tmp_path: Path) -> None:
    """A preview's messages keep their HTML and text (it writes the HTML); a real send's come
    as the bytes only, with the HTML inside them."""
    from tests.test_catchup import DAILY, day, make_config, paper, run

    cfg = make_config(tmp_path, DAILY)
    source = FakeSource({day(0): [paper("p0", day(0))]})
    preview = OutboxSender()
    preview.records_deliveries = False
    run(cfg, source, preview, day(0))
    real = OutboxSender()
    run(cfg, source, real, day(0))
    assert preview.sent[0].email.html and preview.sent[0].email.text
    assert (real.sent[0].email.html, real.sent[0].email.text) == ("", "")
    assert real.sent[0].email.paper_ids == ("p0",) and "Diffusion p0" in real.html(0)


def test_papers_of_the_run_go_to_workers_by_number() -> None:
    items = digests(8)
    papers = list({id(p.paper): p.paper for d in items for p in d.picks}.values())
    numbers = {id(p): i for i, p in enumerate(papers)}
    payload = wire.pack_digests(items, papers, numbers)
    assert papers[0].title.encode() not in payload
    assert len(payload) * 3 < len(pickle.dumps(items))
    assert wire.unpack_digests(payload, papers) == items  # papers: what a worker got at start
    # A paper not in the table (an equal copy is another object) goes whole.
    copy = dataclasses.replace(papers[0])
    assert wire.unpack_digests(wire.pack_digests(items, [copy], {id(copy): 0}), [copy]) == items
    pooled = many(items, workers=2, chunk=3, papers=papers)
    assert [m.data for m in pooled] == [m.data for m in many(items)]


def test_a_digest_goes_out_with_every_field() -> None:
    """The lean form names the fields it carries: a new one must be added to it too."""
    assert tuple(f.name for f in dataclasses.fields(Digest)) == wire.DIGEST_FIELDS
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
    assert wire.unpack_digests(wire.pack_digests(items, [], {}), []) == items


# -- selection in the workers -------------------------------------------------------------

DAY = dt.date(2026, 5, 8)
TOPICS = {
    "models": Topic("models", keywords=("model", "models", "LLM")),
    "vision": Topic("vision", keywords=("video", "image", "visual"), exclude=("benchmark",)),
    "labs": Topic("labs", organizations=("Alibaba", "ByteDance", "NVIDIA")),
    "nothing": Topic("nothing", keywords=("zzzyzx",)),
}


def run_papers() -> list[PaperData]:
    """A day's list, and an older one whose papers only come back as "Rising"."""
    out: list[PaperData] = []
    for name in (
        "hf_api_daily_papers_date_2026-05-08_37papers.json",
        "hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json",
    ):
        out += huggingface.parse(fixture_path(name).read_bytes(), name)
    return out


def subscriber(i: int) -> Subscriber:
    email = f"reader{i}@example.org"
    return dataclasses.replace(
        [
            Subscriber(email, ("models",)),
            Subscriber(email, ("vision", "labs"), sections=True, max_papers=5),
            Subscriber(email, ("nothing",)),  # nothing new
            Subscriber(email, ("models",), keywords=("reasoning", "agent"), exclude=("video",)),
            Subscriber(email, ("labs", "models"), min_upvotes=20, sections=True, max_papers=50),
            Subscriber(email, ("nothing",), keywords=("diffusion", "Video"), name="Zoë"),
        ][i % 6],
        id=f"reader{i}",
    )


def selecting_and_requests(n: int, *, send_empty: bool = False) -> tuple[Selecting, list[Request]]:
    papers = run_papers()
    subs = [subscriber(i) for i in range(n)]
    matches = selection.match_topics(papers, selection.topics_for_run(TOPICS, subs))
    selecting = Selecting(
        matches, dt.datetime(2026, 5, 9, 6, tzinfo=dt.UTC), DAY, send_empty=send_empty
    )
    today = [p.id for p in papers if p.day == DAY]
    older = frozenset(p.id for p in papers if p.day < DAY)
    requests = [
        Request(
            sub,
            since=DAY - dt.timedelta(days=6),
            # Some were sent already (and some ids are of papers not in this run at all).
            sent_ids=frozenset([*today[:3], "2401.99999"]) if i % 3 == 0 else frozenset(),
            skipped=older | {"2401.99998"} if i % 4 == 0 else frozenset(),
        )
        for i, sub in enumerate(subs)
    ]
    return selecting, requests


def in_parent(selecting: Selecting, requests: list[Request]) -> list[Outgoing | NothingNew]:
    """Select here, then compose: what the pool must give."""
    composer = compose.Composer(SPEC)
    out: list[Outgoing | NothingNew] = []
    for r in requests:
        digest = selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped)
        wanted = digest.picks or selecting.send_empty
        out.append(composer.compose(digest) if wanted else NothingNew(r.subscriber, DAY))
    return out


def test_selection_in_workers_gives_the_same_messages() -> None:
    selecting, requests = selecting_and_requests(30)
    digests = [selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped) for r in requests]
    # The cases that matter are there: nothing new, rising, sections, personal keywords.
    picks = [p for d in digests for p in d.picks]
    assert sum(not d.picks for d in digests) == 5
    assert any(p.rising for p in picks) and any(p.section for p in picks)
    assert any(p.topic == PERSONAL_SECTION for p in picks)
    assert any(d.skipped_ids for d in digests)
    expected = in_parent(selecting, requests)

    alone = list(selected(selecting, requests))
    pooled = list(selected(selecting, requests, workers=2, chunk=4))
    assert alone == expected
    assert pooled == expected
    bare = list(selected(selecting, requests, workers=2, chunk=7, bodies=False))
    assert [getattr(m, "data", m) for m in bare] == [getattr(m, "data", m) for m in expected]


def test_send_empty_composes_the_digests_without_papers() -> None:
    selecting, requests = selecting_and_requests(6, send_empty=True)
    pooled = list(selected(selecting, requests, workers=2, chunk=2))
    assert not any(isinstance(m, NothingNew) for m in pooled)
    assert pooled == in_parent(selecting, requests)


def test_matches_cross_to_a_worker_whole() -> None:
    """What a worker gets at start selects what the parent would (a guard on Matches)."""
    selecting, requests = selecting_and_requests(12)
    warm = [selecting.select(r.subscriber, r.since, r.sent_ids, r.skipped) for r in requests]
    assert selecting.matches.cache  # ranked lists built by those selections
    copy = pickle.loads(pickle.dumps(pool.shipped(selecting)))
    shipped = copy.matches
    assert not shipped.cache
    lean = pickle.loads(wire.pack_requests(requests, frozenset(shipped.papers)))
    # Only the run's papers of a sent-history or the skipped cross.
    assert "2401.99999" not in lean[0][2] and len(lean[0][2]) == 3
    assert "2401.99998" not in lean[0][3] and lean[0][3]
    got = [copy.select(Subscriber(*v), since, sent, skipped) for v, since, sent, skipped in lean]
    assert got == warm


def test_pool_reads_digests_lazily() -> None:
    consumed = 0

    def source() -> Iterator[Digest]:
        nonlocal consumed
        for d in digests(200):
            consumed += 1
            yield d

    stream = many(source(), workers=2, chunk=5)
    next(stream)
    assert consumed <= 2 * 2 * 5 + 5  # the chunks in flight, and the one being refilled
    assert sum(1 for _ in stream) == 199
    assert consumed == 200


def test_template_error_in_a_worker_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = tmp_path / "jobs"  # where the pool leaves what its workers read at start
    jobs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(jobs))
    (tmp_path / "_paper.html.j2").write_text("<tr><td>{{ paper.no_such_field }}</td></tr>\n")
    broken = dataclasses.replace(SPEC, templates_dir=tmp_path)
    with pytest.raises(TemplateError, match=r"_paper\.html\.j2:1: undefined") as info:
        list(many(digests(4), workers=2, chunk=1, spec=broken))
    assert info.value.line == 1
    assert len(list(many(digests(3), workers=2, chunk=1))) == 3
    assert list(jobs.iterdir()) == []  # removed, after a failure as after a success


def test_worker_log_records_reach_the_parent(caplog: pytest.LogCaptureFixture) -> None:
    one = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json")
    two = fixture_digest("hf_api_daily_papers_latest_2026-06-12_30papers.json")
    big = dataclasses.replace(one, picks=one.picks + two.picks)  # 67 papers: too big
    with caplog.at_level(logging.WARNING):
        list(many([big], workers=1))
        alone = [r.getMessage() for r in caplog.records]
        caplog.clear()
        list(many([big, big], workers=2, chunk=1))
    guarded = [r for r in caplog.records if r.getMessage().startswith("render.size_guard")]
    assert any(m.startswith("render.size_guard") for m in alone)
    assert len(guarded) == 2
    assert all(r.name == "newsletter.compose.size" for r in guarded)


def test_workers_for() -> None:
    assert pool.workers_for(10) == 1
    assert pool.workers_for(pool.POOL_THRESHOLD) >= 1


def test_a_real_send_composes_on_the_pool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pipeline -> compose_many's pool -> SmtpSender -> the ledger, end to end."""
    import email as email_pkg
    import email.policy

    from tests.smtpserver import SmtpServer
    from tests.test_send import addresses, ledger, make_config, send

    monkeypatch.setenv("NEWSLETTER_SECRET", "test-signing-key-of-at-least-32-bytes")
    monkeypatch.setattr(pool, "workers_for", lambda count: 2)  # a pool, even for 6
    used: list[int] = []
    real = compose.compose_many

    def spy(*args: object, **kwargs: object) -> object:
        used.append(pool.workers_for(kwargs["count"]))  # type: ignore[arg-type]
        assert kwargs.get("bodies") is False  # an SMTP sender sends the bytes only
        papers = kwargs.get("papers")  # the run's, once to each worker
        assert isinstance(papers, list) and papers and type(papers[0]) is PaperData
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(compose, "compose_many", spy)
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
