from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
import shutil
from pathlib import Path

import click
import pytest
from bs4 import BeautifulSoup
from click.testing import CliRunner

from newsletter import cli as cli_mod
from newsletter.compose import templates
from newsletter.store import SqliteStore
from tests.conftest import ROOT, hold

SAMPLE = ROOT / "examples" / "daily-papers-sample.json"


def example_config(tmp_path: Path) -> Path:
    """The example config, copied so that its state file lands in tmp_path."""
    path = tmp_path / "subscribers.yaml"
    shutil.copy(ROOT / "subscribers.example.yaml", path)
    return path


def run_preview(tmp_path: Path, *extra: str) -> tuple[Path, str]:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_mod.cli,
        [
            "preview",
            "-c",
            str(example_config(tmp_path)),
            "--from",
            str(SAMPLE),
            "--out",
            str(out),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_gallery_lists_and_opens_every_email(tmp_path: Path) -> None:
    out, output = run_preview(tmp_path)
    emls = sorted(out.glob("*.eml"))
    assert len(emls) == 2  # Alan's topic matches nothing in the sample
    soup = BeautifulSoup((out / "index.html").read_text(encoding="utf-8"), "html.parser")
    rows = soup.find("tbody").find_all("tr")
    # Every subscriber has a row: Alan's says why he gets no email.
    assert [td.get_text() for td in rows[-1].find_all("td")] == [
        "alan@example.org",
        "no email: nothing new",
    ]
    rows = rows[:-1]
    assert len(rows) == len(emls)
    for row, eml in zip(rows, emls, strict=True):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        cells = [td.get_text() for td in row.find_all("td")]
        assert cells[0] == msg["To"].addresses[0].addr_spec
        assert cells[1] == msg["Subject"]
        opened = out / row.find_all("a")[0]["href"].replace("%40", "@")
        html = opened.read_text(encoding="utf-8")
        papers = set(re.findall(r"huggingface\.co/papers/(\d{4}\.\d{5})", html))
        assert cells[2] == str(len(papers)) and papers
        assert (out / row.find_all("a")[1]["href"].replace("%40", "@")) == eml
    assert f"Open {out / 'index.html'}" in output


def test_preview_open_launches_the_gallery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[str] = []
    monkeypatch.setattr(click, "launch", lambda url, **kw: launched.append(url) or 0)
    out, _ = run_preview(tmp_path, "--open")
    assert launched == [str((out / "index.html").resolve())]


def test_preview_without_open_launches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[str] = []
    monkeypatch.setattr(click, "launch", lambda url, **kw: launched.append(url) or 0)
    run_preview(tmp_path)
    assert launched == []


def test_check_reports_a_broken_override(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    text = config.read_text(encoding="utf-8").replace("templates_dir: null", "templates_dir: mine")
    config.write_text(text, encoding="utf-8")
    (tmp_path / "mine").mkdir()
    source = (templates.builtin_templates_dir() / "_paper.html.j2").read_text(encoding="utf-8")
    broken = tmp_path / "mine" / "_paper.html.j2"
    broken.write_text(source.replace("{{ pick.reason }}", "{{ pick.why }}"), encoding="utf-8")
    line = next(i for i, x in enumerate(broken.read_text().splitlines(), 1) if "pick.why" in x)
    result = CliRunner().invoke(cli_mod.cli, ["check", "-c", str(config)])
    assert result.exit_code == 2
    assert f"{broken}:{line}: undefined: " in result.output
    assert "has no attribute 'why'" in result.output


def test_check_reports_an_unusable_dkim_key(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    # The example documents the keys commented out; switch them on.
    text = re.sub(
        r"^  # (dkim:|  key_file:|  selector:|  domain:)",
        r"  \1",
        config.read_text(encoding="utf-8"),
        flags=re.M,
    )
    assert "\n  dkim:" in text
    config.write_text(text, encoding="utf-8")
    (tmp_path / "dkim-private.pem").write_text("garbage", encoding="utf-8")
    result = CliRunner().invoke(cli_mod.cli, ["check", "-c", str(config)])
    assert result.exit_code == 2, result.output
    assert "newsletter.dkim.key_file:" in result.output and "not a usable DKIM" in result.output


def test_gallery_lists_every_subscriber_and_why_some_get_no_email(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    with SqliteStore(tmp_path / "newsletter.db") as store:
        hold(store, "grace@example.org", "unsubscribed", "one-click unsubscribe", now)
        hold(store, "ada@example.org", "bounced", "550 5.1.1 No such user", now)
    out, _ = run_preview(tmp_path)
    soup = BeautifulSoup((out / "index.html").read_text(encoding="utf-8"), "html.parser")
    rows = [[td.get_text() for td in tr.find_all("td")] for tr in soup.find("tbody").find_all("tr")]
    assert sorted(rows) == [
        ["ada@example.org", "no email: bounced (suppressed until resubscribed)"],
        ["alan@example.org", "no email: nothing new"],
        ["grace@example.org", "no email: unsubscribed"],
    ]
    assert "0 emails; 3 subscribers without one; nothing was sent." in soup.get_text()
