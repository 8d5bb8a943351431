"""`newsletter preview` end to end: a real HTTP server, a real SQLite file, the CLI."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from newsletter import compose
from newsletter.cli import cli
from newsletter.compose import pool
from newsletter.sources import HuggingFaceApi
from newsletter.sources.http import HttpClient
from newsletter.store import SqliteStore
from tests.conftest import fixture_path, hold, ids_in, write_config
from tests.httpserver import FixtureServer

ROOT = Path(__file__).resolve().parent.parent


def read_eml(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def body(msg: EmailMessage, subtype: str) -> str:
    part = msg.get_body((subtype,))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def run_preview(tmp_path: Path, *args: str) -> tuple[int, str, Path]:
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["preview", *args, "--out", str(out)])
    return result.exit_code, result.output, out


def test_preview_for_a_fixture_date(tmp_path: Path, hf_server: FixtureServer) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
    assert code == 0, output
    assert (
        "2026-05-08: 37 papers fetched (37 considered), 2 digests written, 1 subscriber with nothing new"
        in output
    )

    assert sorted(p.name for p in out.iterdir()) == [
        "001-ada@example.org.eml",
        "001-ada@example.org.html",
        "002-bob@example.org.eml",
        "002-bob@example.org.html",
        "index.html",
    ]
    ada = read_eml(out / "001-ada@example.org.eml")
    # retrieval: three matches ranked by upvotes, capped at max_papers=3.
    assert ids_in(body(ada, "html")) == ["2605.05242", "2605.04962", "2605.06627"]
    assert ids_in(body(ada, "plain")) == ["2605.05242", "2605.04962", "2605.06627"]
    assert ada["To"] == "Ada <ada@example.org>"
    assert ada["Subject"] == "Test Papers: 3 new papers for 2026-05-08"
    assert ada.get_content_type() == "multipart/alternative"
    # video, minus "benchmark" papers and papers under min_upvotes=5.
    bob = read_eml(out / "002-bob@example.org.eml")
    assert ids_in(body(bob, "html")) == ["2605.04045"]
    # carl's topic matches nothing: no email at all.
    assert not list(out.glob("*carl*"))

    index = (out / "index.html").read_text()
    assert (
        'href="001-ada%40example.org.html"' in index
        and 'href="002-bob%40example.org.html"' in index
    )

    # The HTML is inlined: styles live on the elements, not only in <style>.
    assert re.search(r'<td class="paper" style="[^"]*padding', body(ada, "html"))

    # A first digest covers max_age_days (7): the API was asked for each of those days.
    assert [r.query.get("date") for r in hf_server.requests] == [
        f"2026-05-{d:02d}" for d in range(2, 9)
    ]

    # A preview records nothing: without a state file it works in memory, creating none.
    assert not (tmp_path / "state.db").exists()


def test_topic_names_reach_the_emails(tmp_path: Path, hf_server: FixtureServer) -> None:
    """``topics.<slug>.name`` from the file to the greeting, the footer and the headings."""
    subscribers = "  - email: bob@example.org\n    topics: [video]\n    sections: true\n"
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url, subscribers=subscribers)
    named = cfg.read_text().replace("  video:\n", "  video:\n    name: Video & film\n")
    cfg.write_text(named + "selection:\n  trending_count: 0\n")  # every paper under its topic
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
    assert code == 0, output
    bob = read_eml(out / "001-bob@example.org.eml")
    html, text = body(bob, "html"), " ".join(body(bob, "plain").split())
    assert "papers on Video &amp; film from the Hugging Face" in html
    assert "<h2" in html and ">Video &amp; film</h2>" in html
    assert "papers on Video & film from the Hugging Face" in text
    assert "== Video & film ==" in text and "for the topics Video & film." in text
    assert "== video ==" not in text and "on video from" not in text


def test_preview_on_a_pool_writes_the_html_bodies(
    tmp_path: Path, hf_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Selected on the pool too; carl's nothing new still reported, the pages written."""
    monkeypatch.setattr(pool, "workers_for", lambda count: 2)  # a pool, even for 3
    used: list[object] = []
    real = compose.select_and_compose

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append((pool.workers_for(kwargs["count"]), kwargs["bodies"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(compose, "select_and_compose", spy)
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
    assert code == 0, output
    assert used == [(2, True)]
    assert "2 digests written, 1 subscriber with nothing new" in output
    for stem in ("001-ada@example.org", "002-bob@example.org"):
        page = (out / f"{stem}.html").read_text(encoding="utf-8")
        sent = body(read_eml(out / f"{stem}.eml"), "html")
        assert "<html" in page and page.splitlines() == sent.splitlines()


def test_preview_twice_gives_the_same_digests(tmp_path: Path, hf_server: FixtureServer) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    for _ in range(2):
        code, output, out = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
        assert code == 0, output
        assert ids_in(body(read_eml(out / "001-ada@example.org.eml"), "html")) == [
            "2605.05242",
            "2605.04962",
            "2605.06627",
        ]


def test_preview_one_subscriber(tmp_path: Path, hf_server: FixtureServer) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    code, output, out = run_preview(
        tmp_path, "-c", str(cfg), "--date", "2026-05-08", "--subscriber", "BOB@example.org"
    )
    assert code == 0, output
    assert sorted(p.name for p in out.glob("*.eml")) == ["001-bob@example.org.eml"]


def test_preview_unknown_subscriber_is_a_usage_error(
    tmp_path: Path, hf_server: FixtureServer
) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    code, output, _ = run_preview(tmp_path, "-c", str(cfg), "--subscriber", "zed@example.org")
    assert code == 2
    assert "no subscriber 'zed@example.org'" in output


def test_a_day_without_papers_writes_no_email(tmp_path: Path, hf_server: FixtureServer) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-06-01")
    assert code == 0, output
    assert (
        "0 papers fetched (0 considered), 0 digests written, 3 subscribers with nothing new"
        in output
    )
    assert list(out.glob("*.eml")) == []
    assert "No digests" in (out / "index.html").read_text()


def test_preview_from_a_saved_api_response(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url="http://127.0.0.1:9")  # never contacted
    saved = fixture_path("hf_api_daily_papers_date_2026-05-08_37papers.json")
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--from", str(saved))
    assert code == 0, output
    assert "2026-05-08: 37 papers fetched (37 considered), 2 digests written" in output
    assert ids_in(body(read_eml(out / "002-bob@example.org.eml"), "html")) == ["2605.04045"]


def test_preview_from_a_saved_page(tmp_path: Path) -> None:
    subs = "  - email: ada@example.org\n    topics: [video]\n"
    cfg = write_config(tmp_path / "subs.yaml", hf_url="http://127.0.0.1:9", subscribers=subs)
    saved = fixture_path("hf_html_daily_2024-08-01_13papers.html")
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--from", str(saved))
    assert code == 0, output
    assert output.startswith("2024-08-01: 13 papers fetched (13 considered), 1 digest written")
    assert len(ids_in(body(read_eml(out / "001-ada@example.org.eml"), "html"))) >= 1


def test_example_config_previews_from_the_bundled_sample(tmp_path: Path) -> None:
    # The README's first command, minus the virtualenv.
    cfg = tmp_path / "subscribers.example.yaml"
    cfg.write_text((ROOT / "subscribers.example.yaml").read_text())
    code, output, out = run_preview(
        tmp_path, "-c", str(cfg), "--from", str(ROOT / "examples" / "daily-papers-sample.json")
    )
    assert code == 0, output
    assert "2 digests written, 1 subscriber with nothing new" in output
    ada = ids_in(body(read_eml(out / "001-ada@example.org.eml"), "html"))
    assert ada == ["2006.11239", "2112.10752", "2210.02747"]  # the survey is excluded


def test_unreachable_source_is_one_line_and_exit_1(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url="http://127.0.0.1:9")
    code, output, _ = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
    assert code == 1
    source_line, last = output.splitlines()  # one line for the source, one for the run
    assert source_line.startswith("huggingface: failed: http://127.0.0.1:9/api/daily_papers")
    assert "connection failed" in source_line and "Traceback" not in output
    assert last == "newsletter: no source could be fetched: nothing to preview"


def test_broken_response_is_a_parse_error_naming_the_url(tmp_path: Path) -> None:
    from tests.httpserver import Reply

    with FixtureServer() as server:
        server.routes["/api/daily_papers"] = lambda req: Reply(200, b"<html>maintenance</html>")
        cfg = write_config(tmp_path / "subs.yaml", hf_url=server.url)
        code, output, _ = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
    assert code == 1
    assert output.startswith(f"huggingface: failed: {server.url}/api/daily_papers")
    assert "cannot parse: not JSON" in output


def test_latest_day_walks_back_over_empty_days(hf_server: FixtureServer) -> None:
    with HttpClient(retries=0) as client:
        source = HuggingFaceApi(hf_server.url, client)
        assert source.latest_day(dt.date(2026, 5, 10)) == dt.date(2026, 5, 8)
    assert [r.query["date"] for r in hf_server.requests] == [
        "2026-05-10",
        "2026-05-09",
        "2026-05-08",
    ]


# -- a preview records nothing ------------------------------------------------------------


def test_preview_and_dry_run_read_the_state_and_leave_it_byte_identical(
    tmp_path: Path, hf_server: FixtureServer
) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)
    fetched = CliRunner().invoke(cli, ["fetch", "-c", str(cfg), "--date", "2026-05-08"])
    assert fetched.exit_code == 0, fetched.output
    now = dt.datetime.now(dt.UTC)
    with SqliteStore(tmp_path / "state.db") as store:
        hold(store, "bob@example.org", "unsubscribed", "one-click unsubscribe", now)
        hold(store, "carl@example.org", "bounced", "550 5.1.1 No such user", now)
    state = tmp_path / "state.db"
    before = state.read_bytes()

    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--date", "2026-05-08")
    assert code == 0, output
    assert state.read_bytes() == before
    assert sorted(p.name for p in out.glob("*.eml")) == ["001-ada@example.org.eml"]  # read it
    dry = CliRunner().invoke(
        cli, ["send", "-c", str(cfg), "--date", "2026-05-08", "--dry-run", "--out", str(out)]
    )
    assert dry.exit_code == 0, dry.output
    assert state.read_bytes() == before


def test_previews_of_two_files_do_not_mix(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url="http://127.0.0.1:9")  # never contacted
    saved = fixture_path("hf_api_daily_papers_date_2026-05-08_37papers.json")
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--from", str(saved))
    assert code == 0, output
    assert ids_in(body(read_eml(out / "001-ada@example.org.eml"), "html")) == [
        "2605.05242",
        "2605.04962",
        "2605.06627",
    ]
    # The next day's file: only its own paper, none of the first file's (nothing was kept).
    other = ROOT / "tests" / "data" / "hf_api_one_paper_2026-05-09.json"
    code, output, out = run_preview(tmp_path, "-c", str(cfg), "--from", str(other))
    assert code == 0, output
    assert output.startswith("2026-05-09: 1 papers fetched (1 considered), 1 digest written")
    assert ids_in(body(read_eml(out / "001-ada@example.org.eml"), "html")) == ["2605.09999"]
    assert not (tmp_path / "state.db").exists()


def test_preview_without_date_that_finds_nothing_says_where_it_looked(
    tmp_path: Path, hf_server: FixtureServer
) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url=hf_server.url)  # no papers these days
    code, output, _ = run_preview(tmp_path, "-c", str(cfg))
    assert code == 0, output
    today = dt.datetime.now(dt.UTC).date()
    assert output == (
        f"No papers on any day from {today - dt.timedelta(days=7)} to {today} (UTC): "
        "nothing to preview. Pick an earlier day with --date YYYY-MM-DD.\n"
    )
    assert len(hf_server.requests) == 8  # today and the seven days before


@pytest.mark.parametrize("command", ["preview", "send", "fetch"])
def test_an_impossible_date_is_named_as_such(tmp_path: Path, command: str) -> None:
    cfg = write_config(tmp_path / "subs.yaml", hf_url="http://127.0.0.1:9")
    result = CliRunner().invoke(cli, [command, "-c", str(cfg), "--date", "2026-02-30"])
    assert result.exit_code == 2
    assert "'2026-02-30' is not a valid date (YYYY-MM-DD)" in result.output
    wrong = CliRunner().invoke(cli, [command, "-c", str(cfg), "--date", "30.02.2026"])
    assert wrong.exit_code == 2 and "does not match the format" in wrong.output
