"""The wheel carries the templates: build it, install it alone, preview from elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import fixture_path, write_config

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{cmd}: {result.stdout}\n{result.stderr}"
    return result.stdout


def test_wheel_ships_templates_and_previews_from_a_temp_dir(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-q",
        "-w",
        dist,
        ROOT,
    )
    (wheel,) = dist.glob("papers_newsletter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "newsletter/templates/digest.html.j2" in names
    assert "newsletter/templates/digest.txt.j2" in names

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)  # pip's own install takes seconds
    py = venv / "bin" / "python"
    run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        py,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        wheel,
    )
    # The dependencies come from the test environment (no network); the package itself does
    # not: a .pth in a non-site folder is not processed, so an editable install stays hidden.
    site = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    (site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NEWSLETTER_CONFIG")}
    where = run(
        py,
        "-c",
        "import newsletter.compose.templates as t; print(t.builtin_templates_dir())",
        cwd=work,
        env=env,
    )
    assert where.strip().startswith(str(venv)), where

    cfg = write_config(work / "subs.yaml", hf_url="http://127.0.0.1:9")
    saved = fixture_path("hf_api_daily_papers_date_2026-05-08_37papers.json")
    output = run(
        venv / "bin" / "newsletter", "preview", "-c", cfg, "--from", saved, cwd=work, env=env
    )
    assert "2 digests written" in output
    assert (work / "outbox" / "index.html").is_file()
    assert len(list((work / "outbox").glob("*.eml"))) == 2
