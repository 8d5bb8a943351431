"""The public archive: pages and Atom feeds from the store, served and built as files.

The store holds the real captures' days (read in place from the shared fixtures), each
fetched in the evening of its day; feeds are read with feedparser, as feed readers do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import html
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import feedparser
import pytest
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter import cli as cli_mod
from newsletter import config as config_mod
from newsletter import selection
from newsletter.models import PaperData, Subscriber
from newsletter.sources import huggingface
from newsletter.store import SqliteStore
from newsletter.web import atom
from newsletter.web.archive import ArchiveEntry, end_of
from newsletter.web.publish import ArchiveSite, archive_routes
from tests.conftest import HF_API_BY_DATE, fixture_path
from tests.digests import fixture_digest, render_email, spec
from tests.httpserver import FixtureServer

DAYS = sorted(HF_API_BY_DATE)  # five real days, 2024-05-27 .. 2026-07-31
NEW_DAY = dt.date(2026, 6, 12)  # a sixth, added to see feeds and ETags move
NEW_DAY_FILE = "hf_api_daily_papers_latest_2026-06-12_30papers.json"
SUBSCRIBER = "ada.lovelace@example.org"

CONFIG = f"""\
newsletter:
  title: Test Papers
  from: "Test Papers <papers@example.org>"
  base_url: https://papers.example.org
  state: state.db
archive:
  enabled: true
topics:
  llm:
    name: Language models
    keywords: [language model, language models, LLM, LLMs]
  agents:
    keywords: [agent, agents, agentic]
  video:
    keywords: [video]
  vision:
    name: Vision & images <b>
    keywords: [image, images, visual, vision]
  secret-project:
    name: Hushhush topic
    public: false
    keywords: [reasoning, reinforcement learning]
subscribers:
  - email: {SUBSCRIBER}
    name: Ada Lovelace
    topics: [llm, secret-project]
"""
PRIVATE = ("secret-project", "Hushhush")


def add_day(store: SqliteStore, day: dt.date, name: str, at: dt.datetime | None = None) -> None:
    """A capture's papers as fetched ``at`` (default: 20:00 UTC of their day)."""
    papers = huggingface.parse(fixture_path(name).read_bytes(), "http://127.0.0.1/", day=day)
    papers = [dataclasses.replace(p, day=day) for p in papers]
    store.add_papers(papers, at or dt.datetime.combine(day, dt.time(20), tzinfo=dt.UTC))


#: After the newest fixture day: a gap (2026-06-12) filled by a later fetch.
LATER = dt.datetime(2026, 8, 3, 9, tzinfo=dt.UTC)


def make_state(folder: Path) -> Path:
    """The config and a state holding the fixtures' days."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subscribers.yaml").write_text(CONFIG, encoding="utf-8")
    with SqliteStore(folder / "state.db") as store:
        for day in DAYS:
            add_day(store, dt.date.fromisoformat(day), HF_API_BY_DATE[day])
    return folder / "subscribers.yaml"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static build of the fixtures' days: the folder."""
    folder = tmp_path_factory.mktemp("archive")
    config = make_state(folder)
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(folder / "out")]
    )
    assert result.exit_code == 0, result.output
    return folder / "out"


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_a_build_writes_every_page_and_feed(built: Path) -> None:
    found = set(files(built))
    expected = {
        "archive/index.html",
        "archive/style.css",
        *(f"archive/{d}/index.html" for d in DAYS),
        *(f"topics/{t}/index.html" for t in ("llm", "agents", "video", "vision")),
        *(f"topics/{t}.atom" for t in ("llm", "agents", "video", "vision")),
        "feed.atom",
    }
    assert found == expected


def test_pages_link_each_other_with_relative_paths_that_exist(built: Path) -> None:
    """From file://, every link to the archive names a file of the build."""
    for name, body in files(built).items():
        if not name.endswith(".html"):
            continue
        page = built / name
        links = re.findall(r'(?:href|src)="([^"]+)"', body.decode())
        local = [link for link in links if not urlsplit(link).scheme]
        assert local, name
        for link in local:
            assert not link.startswith("/"), f"{name}: {link} is not relative"
            target = (page.parent / link).resolve()
            assert target.is_file(), f"{name}: {link} -> {target} is missing"


def test_the_index_lists_days_newest_first_with_their_counts(built: Path) -> None:
    index = (built / "archive/index.html").read_text("utf-8")
    shown = re.findall(
        r'href="(\d{4}-\d{2}-\d{2})/index\.html"|href="\.\./archive/([\d-]+)/', index
    )
    days = [a or b for a, b in shown]
    assert days == sorted(DAYS, reverse=True)
    for day in DAYS:
        page = (built / f"archive/{day}/index.html").read_text("utf-8")
        count = len(set(re.findall(r'<h3><a href="https://huggingface.co/papers/([^"]+)"', page)))
        label = f"{count} paper{'' if count == 1 else 's'}"
        assert re.search(rf"{day}/index\.html\">[^<]+</a> <span class=\"count\">{label}<", index)


def test_feeds_are_valid_atom_with_stable_unique_ids(built: Path) -> None:
    for name in ("feed.atom", "topics/llm.atom", "topics/agents.atom", "topics/vision.atom"):
        parsed = feedparser.parse((built / name).read_bytes())
        assert parsed.bozo == 0, (name, parsed.get("bozo_exception"))
        assert parsed.version == "atom10"
        ids = [e.id for e in parsed.entries]
        assert ids and len(ids) == len(set(ids)), name
        for entry in parsed.entries:
            pid = entry.link.rsplit("/", 1)[1]
            assert entry.id == atom.paper_id("https://papers.example.org", pid)
            assert entry.title and entry.summary and entry.published_parsed
            assert entry.link == f"https://huggingface.co/papers/{pid}"
            assert "upvote" in entry.summary  # the topic's reason line
        assert any(e.get("authors") for e in parsed.entries)


def test_all_topics_feed_has_one_entry_per_paper_with_each_topics_reason(built: Path) -> None:
    parsed = feedparser.parse((built / "feed.atom").read_bytes())
    several = [e for e in parsed.entries if len(e.tags) > 1]
    assert several, "no paper in two topics: the fixtures' topics overlap"
    for entry in several:
        for tag in entry.tags:
            assert f"<strong>{html.escape(tag.label, quote=False)}</strong>:" in entry.summary
    assert len(parsed.entries) == 50  # archive.feed_entries


def test_no_private_topic_and_no_subscriber_anywhere(built: Path) -> None:
    for name, body in files(built).items():
        for word in (*PRIVATE, SUBSCRIBER, "Lovelace"):
            assert word.encode() not in body, f"{word!r} in {name}"


def test_every_file_is_at_most_100_kb(built: Path) -> None:
    sizes = {name: len(body) for name, body in files(built).items()}
    assert max(sizes.values()) <= 100_000, sizes


def test_names_are_escaped(built: Path) -> None:
    page = (built / "topics/vision/index.html").read_text("utf-8")
    assert "Vision &amp; images &lt;b&gt;" in page and "<b>" not in page
    assert feedparser.parse((built / "topics/vision.atom").read_bytes()).bozo == 0


def test_a_second_build_writes_the_same_bytes(built: Path, tmp_path: Path) -> None:
    config = built.parent / "subscribers.yaml"
    again = tmp_path / "again"
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(again)]
    )
    assert result.exit_code == 0, result.output
    assert files(again) == files(built)
    # Into the same folder: nothing to write.
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(again)]
    )
    assert "0 written, 0 removed" in result.output


def test_a_topic_made_private_leaves_the_next_build(tmp_path: Path) -> None:
    config = make_state(tmp_path)
    out = tmp_path / "out"
    runner = CliRunner()
    assert runner.invoke(cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(out)])
    assert (out / "topics/video.atom").is_file()
    (out / "notes.txt").write_text("the operator's", encoding="utf-8")
    text = config.read_text("utf-8").replace(
        "    keywords: [video]", "    public: false\n    keywords: [video]"
    )
    config.write_text(text, encoding="utf-8")
    result = runner.invoke(cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert not (out / "topics/video.atom").exists() and not (out / "topics/video").exists()
    assert (out / "notes.txt").is_file()
    for name, body in files(out).items():
        assert b"topics/video" not in body, name


def test_ids_are_the_same_across_days(tmp_path: Path) -> None:
    """A day fetched later joins the feed; the papers already in it keep their ids and
    their entries (their day is over)."""
    config = config_mod.load(make_state(tmp_path))
    site = ArchiveSite.from_config(config)
    with SqliteStore(config.state_path) as store:
        before = feedparser.parse(site.build(store)["feed.atom"].body)
        add_day(store, NEW_DAY, NEW_DAY_FILE, LATER)
        after = feedparser.parse(ArchiveSite.from_config(config).build(store)["feed.atom"].body)
    old = {e.id: e for e in before.entries}
    assert [e for e in after.entries if e.id not in old]
    kept = [e for e in after.entries if e.id in old]
    assert kept
    for entry in kept:
        assert (entry.title, entry.summary, entry.updated) == (
            old[entry.id].title,
            old[entry.id].summary,
            old[entry.id].updated,
        )


def test_a_day_is_scored_as_the_digests_scored_it_when_it_ended(tmp_path: Path) -> None:
    """Upvotes counted after the day ended change neither its page nor its order: the
    reason lines and the order are those of a digest selected at the end of the day."""
    config = config_mod.load(make_state(tmp_path))
    day = dt.date(2026, 5, 8)
    with SqliteStore(config.state_path) as store:
        papers = store.candidates([day])
        before = ArchiveSite.from_config(config).build(store)[f"archive/{day}/index.html"].body
        # Two days later every paper has 1,000 more upvotes, the last one 5,000.
        later = dt.datetime.combine(day + dt.timedelta(days=2), dt.time(9), tzinfo=dt.UTC)
        boosted = [dataclasses.replace(p, upvotes=p.upvotes + 1000) for p in papers]
        boosted[-1] = dataclasses.replace(boosted[-1], upvotes=boosted[-1].upvotes + 5000)
        store.add_papers(boosted, later)
        after = ArchiveSite.from_config(config).build(store)[f"archive/{day}/index.html"].body
        # What the digest of a reader of "llm" alone got when the day ended.
        matches = selection.match_topics(
            papers,
            config.public_topics(),
            trends=store.trends([p.id for p in papers], until=end_of(day)),
        )
    assert after == before
    reader = Subscriber(email="x@example.org", topics=("llm",), max_papers=100)
    digest = selection.select(matches, reader, frozenset(), end_of(day), day=day, since=day)
    page = before.decode()
    section = page.split('id="topic-llm"', 1)[1].split("</section>", 1)[0]
    shown = re.findall(r'<h3><a href="https://huggingface.co/papers/([^"]+)"', section)
    assert shown == [p.paper.id for p in digest.picks]
    for pick in digest.picks:
        assert pick.reason.replace('"', "&#34;") in section


# -- served: conditional GET ------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    config_path = make_state(tmp_path)
    holder = {"config": config_mod.load(config_path)}
    app = Starlette(routes=archive_routes(lambda: holder["config"]))
    with TestClient(app) as client:
        yield client, config_path


def test_a_conditional_get_gets_304_until_a_new_day_changes_the_feed(
    served: tuple[TestClient, Path], built: Path
) -> None:
    client, config_path = served
    first = client.get("/feed.atom")
    assert first.status_code == 200
    assert first.headers["content-type"].startswith("application/atom+xml")
    assert first.content == (built / "feed.atom").read_bytes()
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert client.get("/feed.atom", headers={"If-None-Match": etag}).status_code == 304
    assert client.get("/feed.atom", headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get("/feed.atom", headers={"If-None-Match": '"other"'}).status_code == 200
    with SqliteStore(config_path.parent / "state.db") as store:
        add_day(store, NEW_DAY, NEW_DAY_FILE, LATER)
    fresh = client.get("/feed.atom", headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert fresh.headers["last-modified"] != modified


def test_served_pages_are_the_built_files(served: tuple[TestClient, Path], built: Path) -> None:
    client, _ = served
    for url, name in (
        ("/archive/", "archive/index.html"),
        ("/archive/2026-05-08/", "archive/2026-05-08/index.html"),
        ("/archive/2026-05-08/index.html", "archive/2026-05-08/index.html"),
        ("/topics/llm/", "topics/llm/index.html"),
        ("/topics/llm.atom", "topics/llm.atom"),
        ("/archive/style.css", "archive/style.css"),
    ):
        reply = client.get(url)
        assert reply.status_code == 200, url
        assert reply.content == (built / name).read_bytes(), url
        assert reply.headers["etag"]
    assert client.get("/archive", follow_redirects=False).headers["location"] == "/archive/"
    for missing in (
        "/archive/2026-05-09/",
        "/archive/2026-02-30/",
        "/topics/secret-project/",
        "/topics/secret-project.atom",
        "/archive/nothing",
    ):
        assert client.get(missing).status_code == 404, missing


def test_nothing_is_served_with_the_archive_off(tmp_path: Path) -> None:
    config_path = make_state(tmp_path)
    config_path.write_text(
        config_path.read_text("utf-8").replace("  enabled: true", "  enabled: false"), "utf-8"
    )
    config = config_mod.load(config_path)
    app = Starlette(routes=archive_routes(lambda: config))
    with TestClient(app) as client:
        assert client.get("/feed.atom").status_code == 404
        assert client.get("/archive/").status_code == 404
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config_path), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2
    assert "archive.enabled is false" in result.output
    assert not (tmp_path / "o").exists()


# -- config and the digest's link ---------------------------------------------------------------


def test_archive_settings_default_off_and_topics_public(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("archive:\n  enabled: true\n", ""), "utf-8")
    config = config_mod.load(path)
    assert config.archive.enabled is False and config.archive.feed_entries == 50
    assert list(config.public_topics()) == ["llm", "agents", "video", "vision"]


def test_a_public_topic_key_that_cannot_be_a_url_is_refused_with_the_archive_on(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(CONFIG.replace("  agents:\n", "  Agents and/or tools:\n"), "utf-8")
    with pytest.raises(config_mod.ConfigError) as raised:
        config_mod.load(path)
    (line,) = raised.value.problems
    assert re.match(rf"{re.escape(str(path))}:\d+: topics\.Agents and/or tools: .*/topics/", line)
    # Private, or with the archive off, the key is in no URL: accepted.
    path.write_text(
        CONFIG.replace("  agents:\n", "  Agents and/or tools:\n    public: false\n"), "utf-8"
    )
    config_mod.load(path)


def test_the_digest_links_to_its_day_page_only_with_the_archive_on() -> None:
    digest = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=3)
    url = "https://papers.example.org/archive/2026-05-08/"
    off = render_email(digest)
    assert "/archive/" not in off.html and "/archive/" not in off.text
    base = spec()
    masthead = dataclasses.replace(base.masthead, archive_url="https://papers.example.org/archive")
    from newsletter import compose

    on = render_email(digest, compose.Composer(dataclasses.replace(base, masthead=masthead)))
    assert f'<a href="{url}"' in on.html and "This day's papers on the web" in on.html
    assert f"\n{url}\n" in on.text
    # The rest of the email is the same.
    link = re.compile(
        rf'<p[^>]*><a href="{re.escape(url)}"[^>]*>This day\'s papers on the web</a></p>\n'
    )
    assert link.sub("", on.html, count=1) == off.html


def test_load_masthead_sets_the_archive_url_from_the_config(tmp_path: Path) -> None:
    from newsletter import compose

    config = config_mod.load(make_state(tmp_path))
    assert compose.load_masthead(config).archive_url == "https://papers.example.org/archive"
    path = tmp_path / "subscribers.yaml"
    path.write_text(CONFIG.replace("  enabled: true", "  enabled: false"), "utf-8")
    assert compose.load_masthead(config_mod.load(path)).archive_url is None


def test_the_example_config_builds_an_archive(tmp_path: Path) -> None:
    from tests.conftest import ROOT

    config = tmp_path / "subscribers.yaml"
    shutil.copy(ROOT / "subscribers.example.yaml", config)
    text = config.read_text("utf-8").replace(
        "  enabled: false                   # true", "  enabled: true                    # true"
    )
    config.write_text(text, "utf-8")
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 0, result.output
    assert feedparser.parse((tmp_path / "out/feed.atom").read_bytes()).bozo == 0


def test_serve_answers_the_archive_over_http(tmp_path: Path, built: Path) -> None:
    """`newsletter serve`'s daemon answers the archive's paths, conditional GETs included."""
    import urllib.error
    import urllib.request

    from newsletter import schedule
    from tests.clock import FakeClock

    cfg = make_state(tmp_path)
    cfg.write_text(cfg.read_text("utf-8") + "server:\n  port: 0\n", "utf-8")
    daemon = schedule.Daemon(cfg, config_mod.load(cfg), b"k" * 32, clock=FakeClock(LATER))
    daemon.start()
    try:
        host, port = daemon.web.address
        url = f"http://{host}:{port}"
        with urllib.request.urlopen(f"{url}/archive/2026-05-08/", timeout=30) as reply:
            assert reply.read() == (built / "archive/2026-05-08/index.html").read_bytes()
            etag = reply.headers["ETag"]
        again = urllib.request.Request(
            f"{url}/archive/2026-05-08/", headers={"If-None-Match": etag}
        )
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(again, timeout=30)
        assert raised.value.code == 304
        with urllib.request.urlopen(f"{url}/feed.atom", timeout=30) as reply:
            assert feedparser.parse(reply.read()).bozo == 0
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(f"{url}/topics/secret-project.atom", timeout=30)
        assert raised.value.code == 404
    finally:
        daemon.close()


class CountingStore(SqliteStore):
    """The real store, counting the days the archive reads papers for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.read: list[dt.date] = []

    def candidates(self, days: Iterable[dt.date]) -> list[PaperData]:
        days = list(days)
        self.read += days
        return super().candidates(days)


def test_a_fetch_rescores_only_the_days_it_touched(tmp_path: Path) -> None:
    config = config_mod.load(make_state(tmp_path))
    site = ArchiveSite.from_config(config)
    with CountingStore(config.state_path) as store:
        first = site.build(store)
        assert sorted(store.read) == [dt.date.fromisoformat(d) for d in DAYS]
        store.read.clear()
        assert site.build(store) == first and store.read == []
        add_day(store, NEW_DAY, NEW_DAY_FILE, LATER)
        second = site.build(store)
        assert store.read == [NEW_DAY]
        # A day's page keeps its bytes and its Last-Modified; the feeds and the index move.
        day = f"archive/{DAYS[0]}/index.html"
        assert second[day] == first[day]
        assert second["feed.atom"].updated == LATER != first["feed.atom"].updated
        # The newest day fetched again: that day alone is scored again.
        store.read.clear()
        add_day(store, dt.date.fromisoformat(DAYS[-1]), HF_API_BY_DATE[DAYS[-1]], LATER)
        site.build(store)
        assert store.read == [dt.date.fromisoformat(DAYS[-1])]


def test_check_names_a_broken_archive_template_by_file_and_line(tmp_path: Path) -> None:
    config = make_state(tmp_path)
    own = tmp_path / "own" / "web"
    own.mkdir(parents=True)
    (own / "_archive_paper.html.j2").write_text("<p>\n{{ entry.paper.no_such_field }}</p>\n")
    config.write_text(
        config.read_text("utf-8").replace(
            "  state: state.db\n", "  state: state.db\n  templates_dir: own\n"
        ),
        "utf-8",
    )
    result = CliRunner().invoke(
        cli_mod.cli, ["check", "-c", str(config)], env={"NEWSLETTER_SECRET": "s" * 40}
    )
    assert result.exit_code == 2
    assert f"{own / '_archive_paper.html.j2'}:2: UndefinedError" in result.output
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert f"{own / '_archive_paper.html.j2'}:2: UndefinedError" in result.output


def test_feeds_stay_valid_xml_with_hostile_text() -> None:
    hostile = PaperData(
        id="2605.09999",
        title="Vertical\x0btab & <script>alert(1)</script> ]]> \ud800",
        day=dt.date(2026, 5, 8),
        abstract="Bell\x07 and <b>bold</b> & more",
        authors=("A <b>",),
    )
    entry = ArchiveEntry(hostile, "llm", 'matched "<x>" in title · 1 upvote', 1.0, LATER)
    body = atom.feed(
        base_url="https://papers.example.org",
        name="all",
        title="T & <b>",
        subtitle="s",
        self_url="https://papers.example.org/feed.atom",
        page_url="https://papers.example.org/archive/",
        entries=[[entry]],
        topic_names={"llm": "L & <b>"},
        updated=LATER,
    )
    parsed = feedparser.parse(body)
    assert parsed.bozo == 0
    (got,) = parsed.entries
    assert got.title == "Vertical tab & <script>alert(1)</script> ]]>"
    assert "&lt;x&gt;" in got.summary and "&lt;b&gt;bold" in got.summary
    assert got.author == "A <b>"


def test_fetched_from_the_api_then_built(tmp_path: Path, hf_server: FixtureServer) -> None:
    """The whole way: `fetch` from a real HTTP server answering like huggingface.co, then
    `archive build`: the day's page lists what the day's topics matched."""
    config = tmp_path / "subscribers.yaml"
    config.write_text(
        CONFIG.replace(
            "archive:\n",
            f"sources:\n  huggingface:\n    base_url: {hf_server.url}\n    retries: 0\narchive:\n",
        ),
        "utf-8",
    )
    runner = CliRunner()
    fetched = runner.invoke(cli_mod.cli, ["fetch", "-c", str(config), "--date", "2026-05-08"])
    assert fetched.exit_code == 0, fetched.output
    out = tmp_path / "out"
    built = runner.invoke(cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(out)])
    assert built.exit_code == 0, built.output
    assert sorted(p.name for p in (out / "archive").iterdir()) == [
        "2026-05-08",
        "index.html",
        "style.css",
    ]
    page = (out / "archive/2026-05-08/index.html").read_text("utf-8")
    assert page.count('<article class="paper">') >= 10
    assert feedparser.parse((out / "feed.atom").read_bytes()).bozo == 0
