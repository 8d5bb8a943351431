"""The archive's pages in a real browser (Debian's chromium via Playwright), opened from a
static build over file://, offline: at 375 and 600 px nothing scrolls sideways and no
element sticks out of the viewport; axe-core finds no serious or critical violation, in
light and dark mode; the stylesheet and the feed links resolve."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from newsletter import cli as cli_mod
from tests.conftest import ROOT, require
from tests.test_archive import make_state
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, MEASURE

AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
PAGES = ("archive/index.html", "archive/2026-05-08/index.html", "topics/llm/index.html")
RUN_AXE = """async () => {
  const found = await axe.run(document, {resultTypes: ['violations']});
  return found.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => `${v.impact} ${v.id}: ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')}`);
}"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive-browser")
    config = make_state(folder)
    out = folder / "out"
    result = CliRunner().invoke(
        cli_mod.cli, ["archive", "build", "-c", str(config), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[test]')")
    require(CHROMIUM.is_file(), f"no browser at {CHROMIUM} (apt-get install chromium)")
    require(AXE.is_file(), f"no axe-core at {AXE} (npm install --prefix .ci/node axe-core@4)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.mark.parametrize("width", [375, 600])
def test_archive_pages_fit_and_pass_axe(browser: Any, site: Path, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800})
    outside: list[str] = []

    def offline(route: Any) -> None:
        if not route.request.url.startswith("file://"):
            outside.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", offline)
    page = context.new_page()
    problems: list[str] = []
    try:
        for name in PAGES:
            page.goto((site / name).as_uri())
            styled = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
            assert styled != "rgba(0, 0, 0, 0)", f"{name}: the stylesheet did not load"
            feeds = page.evaluate(
                "() => [...document.querySelectorAll('link[rel=alternate]')]"
                ".map(l => [l.type, l.href])"
            )
            assert feeds and all(kind == "application/atom+xml" for kind, _ in feeds), name
            for _, href in feeds:
                assert Path(href.removeprefix("file://")).is_file(), f"{name}: {href}"
            for scheme in ("light", "dark"):
                page.emulate_media(color_scheme=scheme)
                measured = page.evaluate(MEASURE)
                if measured["scrollWidth"] > measured["vw"] or measured["bad"]:
                    problems.append(f"{name} {width}px {scheme}: {measured}")
                page.add_script_tag(path=str(AXE))
                problems += [f"{name} {width}px {scheme}: {v}" for v in page.evaluate(RUN_AXE)]
            page.screenshot(path=str(site.parent / f"{name.replace('/', '_')}-{width}.png"))
    finally:
        context.close()
    assert problems == []
    assert outside == []  # nothing fetched from the network: no font, no script, no image
