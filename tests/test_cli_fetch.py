"""``newsletter fetch`` and the fetch stage of a run, against the real test server."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from tests.conftest import fixture_path, hf_api_handler, write_config
from tests.httpserver import FixtureServer, Reply

ARXIV = """\
  arxiv:
    enabled: true
    categories: [cs.CL, cs.LG]
    api_url: {url}/api/query
    rss_url: {url}/rss
    delay_seconds: 0
    retries: 0
"""


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        srv.routes["/api/daily_papers"] = hf_api_handler
        for cat, name in (
            ("cs.CL", "arxiv_rss_new_cs.cl_2026-04-27_3items_trimmed.rss.xml"),
            ("cs.LG", "arxiv_rss_new_cs.lg_2026-04-27_3items_trimmed.rss.xml"),
        ):
            body = fixture_path(name).read_bytes()
            srv.routes[f"/rss/{cat}"] = lambda req, body=body: Reply(200, body)
        yield srv


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_fetch_a_date_prints_the_table_and_one_status_line(
    server: FixtureServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "c.yaml", hf_url=server.url)
    code, out, err = run("fetch", "-c", str(config), "--date", "2024-05-27")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["id", "upvotes", "title"]
    assert len(lines) == 1 + 13 + 1
    assert lines[1].split()[:2] == ["2405.15738", "32"]
    assert lines[-1] == "huggingface: ok: 13 papers for 2024-05-27"
    db = sqlite3.connect(tmp_path / "state.db")
    assert db.execute("SELECT COUNT(*) FROM papers").fetchone() == (13,)
    assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= 1


def test_a_source_down_is_one_line_and_exit_1(server: FixtureServer, tmp_path: Path) -> None:
    server.routes["/api/daily_papers"] = lambda req: Reply(503, b"down")
    server.routes["/papers/date/2024-05-27"] = lambda req: Reply(503, b"down")
    config = write_config(tmp_path / "c.yaml", hf_url=server.url)
    code, out, err = run("fetch", "-c", str(config), "--date", "2024-05-27")
    assert code == 1
    assert out.splitlines()[1:] == []  # the header, no papers
    [line] = err.splitlines()
    assert line.startswith("huggingface: failed: ")
    assert "HTTP 503" in line and "page fallback failed too" in line


def test_replay_reparses_without_the_network(server: FixtureServer, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", hf_url=server.url)
    code, first, _ = run("fetch", "-c", str(config), "--date", "2024-05-27")
    assert code == 0
    asked = len(server.requests)
    code, again, err = run("fetch", "-c", str(config), "--date", "2024-05-27", "--replay")
    assert code == 0, err
    assert again == first
    assert len(server.requests) == asked
    code, _, err = run("fetch", "-c", str(config), "--date", "2024-05-28", "--replay")
    assert code == 1 and "no stored response" in err


def test_arxiv_and_hf_merged_with_a_status_line_each(server: FixtureServer, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", hf_url=server.url, sources_extra=ARXIV.format(url=server.url)
    )
    code, out, err = run("fetch", "-c", str(config), "--date", "2026-04-27")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-2:] == [
        "huggingface: ok: 0 papers for 2026-04-27",
        "arxiv: ok: 6 papers for 2026-04-27",
    ]
    assert len(lines) == 1 + 6 + 2


def test_hf_down_arxiv_up_still_prints_arxiv_and_exits_1(
    server: FixtureServer, tmp_path: Path
) -> None:
    server.routes["/api/daily_papers"] = lambda req: Reply(500, b"")
    config = write_config(
        tmp_path / "c.yaml", hf_url=server.url, sources_extra=ARXIV.format(url=server.url)
    )
    code, out, err = run("fetch", "-c", str(config), "--date", "2026-04-27")
    assert code == 1
    assert "arxiv: ok: 6 papers for 2026-04-27" in out
    assert err.startswith("huggingface: failed: ")


def test_trending_skips_arxiv(server: FixtureServer, tmp_path: Path) -> None:
    items = fixture_path("hf_api_daily_papers_latest_2026-06-12_30papers.json").read_bytes()
    server.routes["/api/daily_papers"] = lambda req: Reply(
        200, items if req.query.get("sort") == "trending" else b"[]"
    )
    config = write_config(
        tmp_path / "c.yaml", hf_url=server.url, sources_extra=ARXIV.format(url=server.url)
    )
    code, out, err = run("fetch", "-c", str(config), "--trending")
    assert code == 0, err
    assert out.splitlines()[1].split()[1] == "118"
    assert out.splitlines()[-2:] == [
        "huggingface: ok: 30 papers for trending",
        "arxiv: skipped: no trending list",
    ]


def test_week_and_month_reach_the_api(server: FixtureServer, tmp_path: Path) -> None:
    config = write_config(tmp_path / "c.yaml", hf_url=server.url)
    assert run("fetch", "-c", str(config), "--week", "2025-W40")[0] == 0
    assert run("fetch", "-c", str(config), "--month", "2025-10")[0] == 0
    assert server.requests[0].query["week"] == "2025-W40"
    assert server.requests[-1].query["month"] == "2025-10"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--week", "2025-40"], "--week: expected an ISO week"),
        (["--month", "October"], "--month: expected a month"),
        (["--date", "2024-05-27", "--trending"], "cannot be used together"),
    ],
)
def test_bad_period_options_are_usage_errors(
    server: FixtureServer, tmp_path: Path, args: list[str], message: str
) -> None:
    config = write_config(tmp_path / "c.yaml", hf_url=server.url)
    code, _, err = run("fetch", "-c", str(config), *args)
    assert code == 2
    assert message in err


def test_arxiv_without_categories_is_a_config_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        hf_url="http://127.0.0.1:9",
        sources_extra="  arxiv:\n    enabled: true\n",
    )
    code, _, err = run("fetch", "-c", str(config))
    assert code == 2
    assert "sources.arxiv.categories: list at least one category" in err
    assert err.startswith(f"{config}:")


def test_preview_with_every_source_down_sends_nothing_and_exits_1(
    server: FixtureServer, tmp_path: Path
) -> None:
    server.routes["/api/daily_papers"] = lambda req: Reply(503, b"")
    config = write_config(tmp_path / "c.yaml", hf_url=server.url)
    out_dir = tmp_path / "outbox"
    code, _, err = run("preview", "-c", str(config), "--date", "2024-05-27", "--out", str(out_dir))
    assert code == 1
    assert "huggingface: failed:" in err
    assert "no source could be fetched" in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_fetch_has_help_for_every_option() -> None:
    command = cli.commands["fetch"]
    assert command.help
    for param in command.params:
        assert getattr(param, "help", None), param.name
