"""Every email of the example preview through SpamAssassin, offline (``spamassassin -L -t``).

The score must stay at or below 0.5, and no rule may add points except the informational
ones listed below (they score 0.001 to mark a fact, such as "this message has HTML").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from click.testing import CliRunner

from newsletter import cli as cli_mod
from newsletter.compose.mime import unfolded_headers
from tests.conftest import ROOT, require

SPAMASSASSIN = shutil.which("spamassassin")
MAX_SCORE = 0.5
INFORMATIONAL = {"HTML_MESSAGE"}  # 0.001: "HTML included in message"


def preview(tmp_path: Path) -> list[Path]:
    config = tmp_path / "subscribers.yaml"
    shutil.copy(ROOT / "subscribers.example.yaml", config)
    sample = ROOT / "examples" / "daily-papers-sample.json"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_mod.cli, ["preview", "-c", str(config), "--from", str(sample), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    emls = sorted(out.glob("*.eml"))
    assert emls
    return emls


def spam_report(eml: Path, home: Path) -> tuple[float, dict[str, float]]:
    """The score and every rule that hit, with its exact points (from a header we add)."""
    assert SPAMASSASSIN is not None
    proc = subprocess.run(
        [
            SPAMASSASSIN,
            "-L",  # local tests only: no DNS, no network
            "-t",
            "-x",  # no per-user preferences file
            "--cf=add_header all Tests _TESTSSCORES(,)_",
        ],
        input=eml.read_bytes(),
        capture_output=True,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        timeout=300,
        check=True,
    )
    head = proc.stdout.split(b"\n\n", 1)[0].replace(b"\n", b"\r\n") + b"\r\n\r\n"
    fields = dict(unfolded_headers(head))
    status = fields["X-Spam-Status"]
    score = float(re.search(r"score=(-?[\d.]+)", status).group(1))  # type: ignore[union-attr]
    tests = fields.get("X-Spam-Tests", "").replace(" ", "")
    rules = {
        name: float(points)
        for name, points in (item.split("=") for item in tests.split(",") if "=" in item)
    }
    return score, rules


def test_example_preview_is_not_spam(tmp_path: Path) -> None:
    require(
        SPAMASSASSIN is not None, "spamassassin is not installed (apt-get install spamassassin)"
    )
    home = tmp_path / "home"
    home.mkdir()
    reports = {eml.name: spam_report(eml, home) for eml in preview(tmp_path)}
    for name, (score, rules) in reports.items():
        assert rules, f"{name}: no rules reported; is SpamAssassin working?"
        assert score <= MAX_SCORE, f"{name}: score {score}: {rules}"
        scoring = {r: p for r, p in rules.items() if p > 0 and r not in INFORMATIONAL}
        assert scoring == {}, f"{name}: rules adding points: {scoring}"


def test_the_harness_sees_a_bad_message(tmp_path: Path) -> None:
    """Control: the same email without Date and Message-ID must score worse."""
    require(
        SPAMASSASSIN is not None, "spamassassin is not installed (apt-get install spamassassin)"
    )
    home = tmp_path / "home"
    home.mkdir()
    eml = preview(tmp_path)[0]
    data = eml.read_bytes()
    bad = re.sub(rb"^(Date|Message-ID): [^\r\n]*\r\n", b"", data, count=2, flags=re.M)
    assert bad != data
    (tmp_path / "bad.eml").write_bytes(bad)
    good_score, _ = spam_report(eml, home)
    bad_score, rules = spam_report(tmp_path / "bad.eml", home)
    assert bad_score > good_score
    assert any(rule.startswith("MISSING_") and points > 0 for rule, points in rules.items()), rules
