"""The public pages in a real browser (Debian's chromium, driven by Playwright, offline), at
375 px: a reader signs up, confirms, changes their topics from their digest's manage link and
unsubscribes, and each step shows in the next preview. Every page is checked with axe-core
(no serious or critical violation) and for sideways scrolling at that width.

axe-core comes from npm (.ci/run installs it into .ci/node); it is injected with the CSP
bypassed (the pages' own CSP forbids any script, which is the point).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, require
from tests.httpserver import FixtureServer
from tests.signup_site import RunningSite, env, link, running_site
from tests.test_browser import MEASURE, browser

AXE = ROOT / ".ci" / "node" / "node_modules" / "axe-core" / "axe.min.js"
READER = "reader@example.org"

__all__ = ["browser"]  # the browser fixture of test_browser, one per module

AXE_RUN = """async () => {
  const result = await axe.run(document, {resultTypes: ['violations']});
  return result.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => `${v.impact} ${v.id}: ${v.help} (${v.nodes.map(n => n.target.join(' ')).join(', ')})`);
}"""


@pytest.fixture(autouse=True)
def axe_core() -> None:
    require(AXE.is_file(), f"no axe-core at {AXE} (npm install --prefix .ci/node axe-core@4)")


def checked(page: Any, what: str, problems: list[str]) -> None:
    """axe-core's serious and critical findings, and sideways scrolling, on this page."""
    page.add_script_tag(path=str(AXE))
    problems += [f"{what}: {v}" for v in page.evaluate(AXE_RUN)]
    fit = page.evaluate(MEASURE)
    if fit["scrollWidth"] > fit["vw"] or fit["bad"]:
        problems.append(f"{what}: wider than {fit['vw']} px: {fit['bad'][:3]}")


def preview(site: RunningSite, out: Path, day: str) -> dict[str, str]:
    """`newsletter preview` for ``day``: the HTML of each email, by recipient."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "newsletter",
            "preview",
            "-c",
            str(site.cfg),
            "--date",
            day,
            "--out",
            str(out),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = {}
    for path in out.glob("*.html"):
        if path.name == "index.html":
            continue
        eml = path.with_suffix(".eml").read_text(errors="replace")
        to = re.search(r"^To: .*?([\w.+-]+@[\w.-]+)", eml, re.M)
        assert to, eml[:500]
        found[to.group(1).lower()] = path.read_text(encoding="utf-8")
    return found


def topics_line(html: str) -> str:
    found = re.search(r"subscribed to Trending Papers for the topics? ([^.<]+)", html)
    assert found, html[-2000:]
    return found.group(1)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    with FixtureServer() as hf:
        from tests.conftest import hf_api_handler

        hf.routes["/api/daily_papers"] = hf_api_handler
        folder = tmp_path_factory.mktemp("pages")
        with running_site(folder, hf_url=hf.url) as running:
            yield running


def test_a_reader_signs_up_manages_and_leaves_in_a_browser_at_375_px(
    browser: Any, site: RunningSite, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 800}, bypass_csp=True)
    page = context.new_page()
    problems: list[str] = []

    page.goto(site.root + "/")
    checked(page, "home", problems)
    page.fill("#email", READER)
    page.check("#topic-agents")
    page.check("#topic-diffusion")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.inner_text("h1") == "Check your inbox"
    checked(page, "check your inbox", problems)

    site.drain()
    [mail] = site.mail_to(READER)
    page.goto(link(mail, "confirm"))
    assert page.inner_text("h1") == "Confirm your subscription"
    checked(page, "confirm", problems)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.inner_text("h1") == "You are subscribed"
    checked(page, "confirmed", problems)

    first = preview(site, tmp_path / "first", "2026-05-08")
    assert READER in first, sorted(first)
    assert topics_line(first[READER]) == "AI agents, Diffusion models"
    manage = re.search(r'href="([^"]+/manage/[^"]+)"', first[READER])
    unsubscribe = re.search(r'href="([^"]+/unsubscribe/[^"]+)"', first[READER])
    assert manage and unsubscribe, first[READER][-3000:]

    page.goto(manage.group(1).replace("&amp;", "&"))
    assert page.inner_text("h1") == "Your subscription"
    checked(page, "manage", problems)
    page.uncheck("#topic-diffusion")
    page.check("#cadence-weekly")
    with page.expect_navigation():
        page.click("text=Save")
    assert "Your changes apply from the next digest" in page.inner_text("main")
    checked(page, "manage, saved", problems)

    row = site.row(READER)
    assert row is not None and (row.topics, row.cadence) == (("agents",), "weekly")
    assert topics_line(preview(site, tmp_path / "second", "2026-05-08")[READER]) == "AI agents"

    page.goto(manage.group(1).replace("&amp;", "&"))
    with page.expect_navigation():
        page.click("text=Unsubscribe reader@example.org")
    assert page.inner_text("h1") == "You are unsubscribed"
    checked(page, "unsubscribed", problems)
    assert READER not in preview(site, tmp_path / "after", "2026-05-11")

    for what, path in [
        ("400 page", "/manage/forged-token"),
        ("404 page", "/no/such/page"),
        ("unsubscribe page", unsubscribe.group(1)),
    ]:
        page.goto(path if path.startswith("http") else site.root + path)
        checked(page, what, problems)
    context.close()
    assert problems == []
