"""The emails in a real browser: Debian's chromium, driven by Playwright, offline.

At 375 px (a phone), 600 px and 800 px the document must not scroll sideways and no visible
element's box may extend past the viewport; an element clipped by ``overflow: hidden`` still
counts as not fitting, because each element's own box is measured. Each email is tried as
sent and with its ``<style>`` removed, as Gmail's mobile webmail and the Gmail apps with a
non-Google account show it (only the inline styles are left). Text must keep 4.5:1 contrast
against its background, in light and dark mode. Screenshots stay in the test's tmp dir for
a human to look at.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from newsletter import cli as cli_mod
from newsletter import compose
from tests.conftest import ROOT, held, require
from tests.digests import (
    HOSTILE_NAME,
    MASTHEAD,
    fixture_digest,
    hostile_digest,
    load_digest,
    named,
    render_email,
    spec,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WIDTHS = (375, 600, 800)

# Every visible element's boxes, measured against the layout viewport (without scrollbar).
MEASURE = """() => {
  const vw = document.documentElement.clientWidth;
  const bad = [];
  for (const el of document.body.querySelectorAll('*')) {
    const style = getComputedStyle(el);
    if (style.display === 'none' || style.visibility === 'hidden') continue;
    for (const r of el.getClientRects()) {
      if (r.width === 0 && r.height === 0) continue;
      if (r.left < -0.5 || r.right > vw + 0.5) {
        const name = el.tagName.toLowerCase() + (el.className ? '.' + el.className : '');
        bad.push(`${name} [${Math.round(r.left)}, ${Math.round(r.right)}]: ` +
                 (el.textContent || el.getAttribute('alt') || '').trim().slice(0, 60));
      }
    }
  }
  window.scrollTo(500, 0);
  return {vw, scrollWidth: document.documentElement.scrollWidth, scrollX: window.scrollX,
          bodyScrollWidth: document.body.scrollWidth, bad};
}"""


def png(width: int, height: int) -> bytes:
    """A plain grey PNG, to stand in for a thumbnail at its real size (1200 x 648)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\x99" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


THUMBNAIL = png(1200, 648)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install -e '.[test]')")
    require(CHROMIUM.is_file(), f"no browser at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


def _render(digest: Any, name: str | None) -> str:
    return render_email(named(digest, name)).html


@pytest.fixture(scope="module")
def emails(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The example preview's emails, plus hand-written, real and hostile digests."""
    folder = tmp_path_factory.mktemp("preview")
    config = folder / "subscribers.yaml"
    shutil.copy(ROOT / "subscribers.example.yaml", config)
    sample = ROOT / "examples" / "daily-papers-sample.json"
    result = CliRunner().invoke(
        cli_mod.cli,
        ["preview", "-c", str(config), "--from", str(sample), "--out", str(folder / "out")],
    )
    assert result.exit_code == 0, result.output
    found = {
        f"example-{p.stem}": p.read_text("utf-8") for p in sorted((folder / "out").glob("0*.html"))
    }
    assert len(found) == 2
    found["golden"] = _render(load_digest(), "Ada")
    found["hostile"] = _render(hostile_digest(), HOSTILE_NAME)
    found["real-2026-05-08"] = _render(
        fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json"), "Reader"
    )
    found["real-2024-11-11"] = _render(
        fixture_digest("hf_api_daily_papers_date_2024-11-11_8papers_reserialized.json"), None
    )
    masthead = dataclasses.replace(MASTHEAD, topic_names={"ml": LONG_WORD})
    found["long-words"] = render_email(
        named(long_words_digest(), LONG_WORD), compose.Composer(spec(masthead=masthead))
    ).html
    return found


LONG_WORD = "Supercalifragilistic" * 6  # 120 characters, nowhere to break


def long_words_digest() -> Any:
    """A 120-character word wherever a value is printed: title, authors, summary, reason..."""
    base = fixture_digest("hf_api_daily_papers_date_2024-11-11_8papers_reserialized.json", limit=2)
    first = dataclasses.replace(
        base.picks[0].paper,
        title=f"On {LONG_WORD} models",
        authors=(LONG_WORD, "Ada Lovelace"),
        organization=LONG_WORD,
        ai_summary=f"We study {LONG_WORD}. It works.",
    )
    pick = dataclasses.replace(
        base.picks[0], paper=first, reason=f'matched "{LONG_WORD}" in title', section=LONG_WORD
    )
    subscriber = dataclasses.replace(base.subscriber, email=f"{LONG_WORD}@example.org")
    return dataclasses.replace(base, subscriber=subscriber, picks=(pick, base.picks[1]))


_STYLE = re.compile(r"<style\b.*?</style>", re.IGNORECASE | re.DOTALL)


def without_style(html: str) -> str:
    """The email as a client that strips <style> shows it: the inline styles only."""
    stripped = _STYLE.sub("", html)
    assert "<style" not in stripped and "style=" in stripped
    return stripped


NAMES = [
    "example-001-ada@example.org",
    "example-002-grace@example.org",
    "golden",
    "hostile",
    "real-2026-05-08",
    "real-2024-11-11",
    "long-words",
]


@pytest.mark.parametrize("style", ["style", "no-style"])
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", NAMES)
def test_email_fits_the_screen(
    browser: Any, emails: dict[str, str], name: str, width: int, style: str, tmp_path: Path
) -> None:
    requests: list[str] = []

    def offline(route: Any) -> None:
        # No test touches the internet: thumbnails get a local image of their real size.
        requests.append(route.request.url)
        if route.request.resource_type == "image":
            route.fulfill(status=200, content_type="image/png", body=THUMBNAIL)
        else:
            route.abort()

    page = browser.new_page(viewport={"width": width, "height": 900})
    page.route("**/*", offline)
    html = emails[name] if style == "style" else without_style(emails[name])
    page.set_content(html, wait_until="load")
    for scheme in ("light", "dark"):  # the same page, laid out again for each scheme
        page.emulate_media(color_scheme=scheme)
        result = page.evaluate(MEASURE)
        if scheme == "light" and width == min(WIDTHS):  # for a human to look at (pytest keeps
            # the last runs' tmp_path); one per email: a full-page screenshot costs seconds
            page.screenshot(path=str(tmp_path / f"{name}-{width}-{scheme}.png"), full_page=True)
        assert result["vw"] == width
        assert result["scrollWidth"] <= width, result
        assert result["bodyScrollWidth"] <= width, result
        assert result["scrollX"] == 0, result
        assert result["bad"] == [], f"past the {width}px viewport: {result['bad']}"
    page.close()
    assert all(url.startswith("https://") for url in requests)
    if width == min(WIDTHS):
        assert (tmp_path / f"{name}-{width}-light.png").stat().st_size > 0


def test_the_check_would_catch_a_too_wide_element(browser: Any) -> None:
    """The measurement itself: a 700 px box inside overflow: hidden does not count as fitting."""
    html = (
        '<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width">'
        '</head><body style="margin:0"><div style="overflow:hidden;width:100%">'
        '<div style="width:700px">wide</div></div></body></html>'
    )
    page = browser.new_page(viewport={"width": 375, "height": 600})
    page.set_content(html)
    result = page.evaluate(MEASURE)
    page.close()
    assert result["scrollWidth"] <= 375  # the page itself does not scroll...
    assert len(result["bad"]) == 1 and result["bad"][0].startswith("div [0, 700]")  # ...but


def test_mobile_rule_applies_at_375(browser: Any, emails: dict[str, str]) -> None:
    page = browser.new_page(viewport={"width": 375, "height": 900})
    page.set_content(emails["golden"])
    widths = page.evaluate(
        """() => [document.querySelector('table.container').getBoundingClientRect().width,
                 parseFloat(getComputedStyle(document.querySelector('td.paper')).paddingLeft)]"""
    )
    page.close()
    assert widths == [375, 16]


def test_dark_mode_changes_the_colours(browser: Any, emails: dict[str, str]) -> None:
    colours = {}
    for scheme in ("light", "dark"):
        page = browser.new_page(viewport={"width": 600, "height": 900}, color_scheme=scheme)
        page.set_content(emails["golden"])
        colours[scheme] = page.evaluate(
            "() => getComputedStyle(document.querySelector('table.container')).backgroundColor"
        )
        page.close()
    assert colours == {"light": "rgb(255, 255, 255)", "dark": "rgb(31, 41, 55)"}


def test_the_preview_gallery_fits_a_phone(browser: Any, tmp_path: Path) -> None:
    """index.html at 375 px: every subscriber's row readable, nothing off the screen."""
    config = tmp_path / "subscribers.yaml"
    long_address = "a.very.long.address.for.a.phone.screen@subscribers.example.org"
    text = (ROOT / "subscribers.example.yaml").read_text(encoding="utf-8")
    config.write_text(text + f"  - email: {long_address}\n    topics: [diffusion]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli_mod.cli,
        [
            "preview",
            "-c",
            str(config),
            "--from",
            str(ROOT / "examples" / "daily-papers-sample.json"),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    index = out / "index.html"
    for width in (375, 1000):
        page = browser.new_page(viewport={"width": width, "height": 900})
        page.goto(index.as_uri())
        result_ = page.evaluate(MEASURE)
        rows = page.evaluate("() => document.querySelectorAll('tbody tr').length")
        page.screenshot(path=str(tmp_path / f"gallery-{width}.png"), full_page=True)
        page.close()
        assert result_["scrollWidth"] <= width, result_
        assert result_["bad"] == [], f"past the {width}px viewport: {result_['bad']}"
        assert rows == 4  # three emails and Alan, who has nothing new


# Each element with text of its own: its colour and the first opaque background behind it.
CONTRAST = """() => {
  const rgb = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const out = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    const style = getComputedStyle(el);
    if (style.visibility === 'hidden' || style.display === 'none') continue;
    let bg = null;
    for (let at = el; at && !bg; at = at.parentElement) {
      const c = rgb(getComputedStyle(at).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) bg = c.slice(0, 3);
    }
    const [a, b] = [lum(rgb(style.color)), lum(bg || [255, 255, 255])].sort((x, y) => y - x);
    out.push({what: el.tagName.toLowerCase() + '.' + el.className + ': ' +
              el.textContent.trim().slice(0, 40), ratio: (a + 0.05) / (b + 0.05)});
  }
  return out;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("name", ["example-002-grace@example.org", "golden", "long-words"])
def test_text_keeps_its_contrast(
    browser: Any, emails: dict[str, str], name: str, scheme: str
) -> None:
    """WCAG AA (4.5:1) for every piece of text, section headings included, in both modes."""
    page = browser.new_page(viewport={"width": 600, "height": 900}, color_scheme=scheme)
    page.set_content(emails[name])
    found = page.evaluate(CONTRAST)
    page.close()
    assert any(f["what"].startswith("h2.") for f in found) or name == "golden"
    low = [f"{f['what']} ({f['ratio']:.2f}:1)" for f in found if f["ratio"] < 4.5]
    assert low == []


def test_the_unsubscribe_button_sends_one_click(browser: Any, tmp_path: Path) -> None:
    """The confirm page's form, submitted by a real browser, is a valid one-click POST."""
    from newsletter.models import SubscriberRecord
    from newsletter.store import SqliteStore
    from newsletter.web.tokens import make_token
    from tests.webapp import minimal_config, running

    state, key = tmp_path / "state.db", b"browser-test-signing-key-0123456789ab"
    with SqliteStore(state) as store:
        ada = SubscriberRecord("ada@example.org", ("t",), status="active")
        sid = store.add_subscriber(ada, now=dt.datetime.now(dt.UTC)).id
    with running(minimal_config(state, "Papers"), key) as root:
        page = browser.new_page()
        page.goto(f"{root}/unsubscribe/{make_token(key, 'unsubscribe', sid)}")
        with page.expect_navigation():
            page.click("button[type=submit]")
        heading = page.inner_text("h1")
        page.close()
    assert heading == "You are unsubscribed"
    with SqliteStore(state, read_only=True) as store:
        assert held(store) == {"ada@example.org": ("unsubscribed", "one-click unsubscribe")}
