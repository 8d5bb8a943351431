from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections import Counter
from pathlib import Path

import pytest
from bs4 import BeautifulSoup

from newsletter import compose
from newsletter.compose import qp, templates
from newsletter.compose.size import HTML_LIMIT
from newsletter.config import NewsletterSettings
from newsletter.errors import TemplateError
from newsletter.models import Digest, Email, Pick
from tests.conftest import DATA
from tests.digests import (
    HOSTILE_NAME,
    HOSTILE_TITLE,
    MASTHEAD,
    NOW,
    UNSUBSCRIBE_URL,
    elements,
    fixture_digest,
    hostile_digest,
    load_digest,
    named,
    render_email,
    spec,
)
from tests.httpserver import FixtureServer, Reply

GOLDEN = DATA / "golden"
BUILTIN = templates.builtin_templates_dir()


def do_render(
    digest: Digest,
    composer: compose.Composer | None = None,
    *,
    name: str | None = "Ada",
    url: str = UNSUBSCRIBE_URL,
    limit: int | None = None,
) -> Email:
    return render_email(named(digest, name), composer, url=url, limit=limit)


def wire_size(html: str) -> int:
    """The HTML's bytes on the wire, as the fast path encodes it."""
    return qp.Encoder().size(html)


def normalize(text: str, *, keep_blank_lines: bool) -> str:
    """Trailing spaces carry no meaning, nor do blank lines in HTML; the rest is compared."""
    lines = [line.rstrip() for line in text.splitlines()]
    return "\n".join(line for line in lines if keep_blank_lines or line) + "\n"


def check_golden(name: str, actual: str) -> None:
    """Compare with tests/data/golden/NAME; UPDATE_GOLDEN=1 rewrites it after a review."""
    path = GOLDEN / name
    actual = normalize(actual, keep_blank_lines=name.endswith(".txt"))
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.is_file(), f"missing {path}: run with UPDATE_GOLDEN=1 and review the diff"
    assert actual == path.read_text(encoding="utf-8")


def text_of(html: str) -> str:
    return " ".join(BeautifulSoup(html, "html.parser").get_text(" ").split())


# --- golden files ---------------------------------------------------------------------------


def test_golden_html() -> None:
    check_golden("digest.html", do_render(load_digest()).html)


def test_golden_text() -> None:
    check_golden("digest.txt", do_render(load_digest()).text)


def test_golden_without_name_is_generic() -> None:
    email = do_render(load_digest(), name=None)
    check_golden("digest-noname.txt", email.text)
    assert "Here are 3 trending papers" in text_of(email.html)


# --- the HTML -------------------------------------------------------------------------------


def test_html_is_an_inbox_grade_email() -> None:
    html = do_render(load_digest()).html
    soup = BeautifulSoup(html, "html.parser")
    assert html.startswith("<!DOCTYPE html>")
    tables = soup.find_all("table")
    assert tables and all(t.get("role") == "presentation" for t in tables)
    container = soup.find("table", class_="container")
    # Fluid inline, so it fits a phone where <style> is stripped (Gmail's mobile webmail);
    # Outlook, which ignores max-width, gets the fixed 600 px table around it.
    assert container is not None and container["width"] == "100%"
    style = container["style"].replace(" ", "")
    assert "width:100%" in style and "max-width:600px" in style
    assert re.search(
        r'<!--\[if mso\]><table role="presentation" width="600"[^>]*><tr><td><!\[endif\]-->\s*'
        r'<table role="presentation" class="container"',
        html,
    )
    metas = {m.get("name"): m.get("content") for m in soup.find_all("meta") if m.get("name")}
    assert metas["color-scheme"] == "light dark"
    assert metas["supported-color-schemes"] == "light dark"
    styles = " ".join(s.get_text() for s in soup.find_all("style"))
    assert "prefers-color-scheme: dark" in styles
    assert re.search(r"@media[^{]*max-width:\s*600px", styles)
    assert "<!--[if mso]>" in html and "<![endif]-->" in html
    preheader = soup.find(class_="preheader")
    assert preheader is not None and "display:none" in preheader["style"].replace(" ", "")
    assert preheader.get_text().startswith("3 new papers on diffusion, efficient-models")
    images = soup.find_all("img")
    assert images
    for img in images:
        # Decorative: the title follows it (with images off a title would show twice), and
        # sized, so the layout does not jump when it loads and Outlook sizes it right.
        assert img["alt"] == ""
        assert (img["width"], img["height"]) == ("552", "298")  # the 1200 x 648 thumbnails
        assert img.find_parent("a") is None  # not a link: the title is


def test_each_paper_has_its_links_and_facts() -> None:
    soup = BeautifulSoup(do_render(load_digest()).html, "html.parser")
    cards = soup.find_all("td", class_="paper")
    assert len(cards) == 3
    first, second, bare = cards
    hrefs = [a["href"] for a in first.find_all("a")]
    assert "https://huggingface.co/papers/2006.11239" in hrefs
    assert (
        first.find("p", class_="paper-title").a["href"]
        == "https://huggingface.co/papers/2006.11239"
    )
    assert "https://arxiv.org/abs/2006.11239" in hrefs
    assert "https://arxiv.org/pdf/2006.11239" in hrefs
    github = first.find("a", href="https://github.com/hojonathanho/diffusion")
    assert github is not None and "4,100" in github.get_text()
    text = first.get_text(" ")
    assert "412 upvotes" in text and "18 comments" in text and "UC Berkeley" in text
    assert "Jonathan Ho, Ajay Jain, Pieter Abbeel" in text
    # ai_summary wins over the abstract; the pick's reason is shown.
    assert "reverse a step-by-step noising process" in text
    assert "high quality image synthesis" not in text
    assert 'matched "diffusion" in title' in text
    # Five authors: the first three, then et al.; no ai_summary: the abstract, cut at a sentence.
    text2 = " ".join(second.get_text(" ").split())
    assert "Tri Dao, Daniel Y. Fu, Stefano Ermon et al." in text2
    assert "Atri Rudra" not in text2
    assert "1 upvote ·" in text2 and "1 comment" in text2
    summary = second.find("p", class_="summary").get_text()
    assert summary.endswith("wall-clock speedup.") and "IO-aware" not in summary
    assert bare.find("img") is None and bare.find("p", class_="summary") is None


def test_footer_says_why_and_how_to_leave() -> None:
    soup = BeautifulSoup(do_render(load_digest()).html, "html.parser")
    footer = soup.find("td", class_="footer")
    text = " ".join(footer.get_text(" ").split())
    assert "because ada@example.org is subscribed to Trending Papers" in text
    assert "papers@example.org" in text
    link = footer.find("a", string="Unsubscribe")
    assert link is not None and link["href"] == UNSUBSCRIBE_URL
    assert "display:none" not in (link.get("style") or "").replace(" ", "")


def test_css_is_inlined_and_media_queries_kept() -> None:
    html = do_render(load_digest()).html
    soup = BeautifulSoup(html, "html.parser")
    title = soup.find("p", class_="paper-title")
    assert "font-size:17px" in title["style"].replace(" ", "")
    assert "color:#1d4ed8" in title.a["style"].replace(" ", "")
    style = soup.find("style", string=re.compile("@media")).get_text()
    assert "!important" in style  # strip_important=False: needed to beat the inline styles
    assert ".paper-title a {" not in style  # inlined rules leave the <style> block


def test_recipient_values_are_escaped_after_inlining() -> None:
    email = do_render(load_digest(), name='<b>Bob</b> & "Co"', url="https://x.example/u?a=1&b=<2>")
    assert "<b>Bob</b>" not in email.html
    assert "&lt;b&gt;Bob&lt;/b&gt; &amp; &#34;Co&#34;" in email.html
    assert 'href="https://x.example/u?a=1&amp;b=&lt;2&gt;"' in email.html
    assert 'Hi <b>Bob</b> & "Co"' in email.text  # the text part is not HTML


def test_inlining_is_done_once_per_layout_not_per_recipient() -> None:
    env = compose.Composer(spec())
    base = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=10)
    do_render(base, env)
    first = env.counts().premailer_runs
    assert 1 < first <= 1 + 10  # the shell, plus one per card layout at most
    for i in range(20):
        picks = base.picks[i % 3 : i % 3 + 7]
        sub = dataclasses.replace(base.subscriber, email=f"r{i}@example.org", name=f"R{i}")
        email = do_render(dataclasses.replace(base, subscriber=sub, picks=picks), env, name=f"R{i}")
        assert f"Hi R{i}," in email.html
    assert env.counts().premailer_runs == first


@pytest.mark.parametrize(
    "make",
    [
        load_digest,
        hostile_digest,
        lambda: fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=10),
    ],
    ids=["golden", "hostile", "2026-05-08"],
)
def test_piecewise_inlining_equals_inlining_the_whole_document(make: object) -> None:
    """Cards inlined apart, values put in afterwards: the same as the reference, which runs
    premailer on the whole page rendered in one go."""
    digest = make()  # type: ignore[operator]
    email = do_render(digest)
    reference = do_render(digest, compose.Composer(spec(), reference=True))
    assert elements(email.html) == elements(reference.html)
    assert email.text == reference.text


def test_cached_rendering_matches_a_fresh_environment() -> None:
    digest = fixture_digest("hf_api_daily_papers_date_2024-11-11_8papers_reserialized.json")
    env = compose.Composer(spec())
    do_render(digest, env, name="Someone else", url="https://other.example/u")
    assert do_render(digest, env).html == do_render(digest).html


def test_cssutils_stays_out_of_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    builtin = (BUILTIN / "digest.html.j2").read_text(encoding="utf-8")
    # Properties and values cssutils does not know, and a broken rule.
    noisy = builtin.replace(
        "<style>\n",
        "<style>\n  .x { mso-line-height-rule: exactly; colr: rd; width: ; }\n  .y { \n",
    )
    (tmp_path / "digest.html.j2").write_text(noisy, encoding="utf-8")
    caplog.set_level(logging.DEBUG)
    do_render(load_digest(), compose.Composer(spec(tmp_path)))
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_a_linked_stylesheet_is_never_fetched(tmp_path: Path) -> None:
    with FixtureServer() as server:
        server.routes["/style.css"] = lambda req: Reply(200, b".paper { color: red; }")
        builtin = (BUILTIN / "digest.html.j2").read_text(encoding="utf-8")
        link = f'<link rel="stylesheet" href="{server.url}/style.css">\n<style>\n'
        (tmp_path / "digest.html.j2").write_text(builtin.replace("<style>\n", link, 1), "utf-8")
        do_render(load_digest(), compose.Composer(spec(tmp_path)))
        assert server.requests == []


# --- the text part --------------------------------------------------------------------------


def long_lines(text: str) -> list[str]:
    """Lines over 78 columns, except a lone URL (which cannot be wrapped)."""
    return [
        line
        for line in text.splitlines()
        if len(line) > 78 and not re.fullmatch(r"\s*(\S+: )?https?://\S+", line)
    ]


@pytest.mark.parametrize(
    "make",
    [
        load_digest,
        hostile_digest,
        lambda: fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json"),
        lambda: fixture_digest("hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json"),
    ],
    ids=["golden", "hostile", "2026-05-08", "2025-10-15"],
)
def test_text_part_fits_78_columns(make: object) -> None:
    digest = make()  # type: ignore[operator]
    text = do_render(digest).text
    assert long_lines(text) == []
    for pick in digest.picks[:5]:
        assert pick.paper.hf_url in text


# --- hostile input --------------------------------------------------------------------------


def test_hostile_input_stays_escaped() -> None:
    email = do_render(hostile_digest(), name=HOSTILE_NAME)
    soup = BeautifulSoup(email.html, "html.parser")
    assert soup.find_all("script") == []
    assert soup.find_all("b") == []
    for tag in soup.find_all(True):
        assert not [a for a in tag.attrs if a.startswith("on")], tag
        for attr in ("href", "src"):
            value = tag.get(attr)
            assert value is None or value.startswith(("https://", "http://")), value
    title = soup.find("p", class_="paper-title")
    assert " ".join(title.get_text().split()) == " ".join(HOSTILE_TITLE.split())
    assert title["dir"] == "auto"  # right-to-left text is laid out on its own
    assert "Eve" in soup.find("td", class_="intro").get_text()
    # The 10 KB texts are cut, at a sentence boundary when there is one.
    summaries = [p.get_text() for p in soup.find_all("p", class_="summary")]
    assert all(len(s) <= 402 for s in summaries)
    assert summaries[1].endswith("about <b>models</b>.")
    assert "\r" not in email.subject and "\n" not in email.subject


def test_http_url_filter() -> None:
    assert templates.http_url("https://github.com/a/b") == "https://github.com/a/b"
    for bad in ("javascript:alert(1)", "data:text/html,x", "//evil.example", "", None, "http://"):
        assert templates.http_url(bad) == ""


def test_subject_is_one_line() -> None:
    masthead = dataclasses.replace(MASTHEAD, title="A\r\nBcc: x@example.org\u2028\x00 B")
    assert templates.subject(masthead, load_digest()) == (
        "A Bcc: x@example.org B: 3 new papers for 2026-11-23"
    )


# --- filters --------------------------------------------------------------------------------


def test_authors_short() -> None:
    assert templates.authors_short(["A", "B", "C"]) == "A, B, C"
    assert templates.authors_short(["A", "B", "C", "D"]) == "A, B, C et al."
    assert templates.authors_short([]) == ""


def test_excerpt_cuts_at_a_sentence_boundary() -> None:
    text = "First sentence here. " * 30
    cut = templates.excerpt(text, 100)
    assert cut.endswith("here.") and len(cut) <= 100
    assert templates.excerpt("short. text", 100) == "short. text"
    words = templates.excerpt("word " * 100, 50)
    assert words.endswith(" …") and len(words) <= 52
    assert templates.excerpt("x" * 500, 50) == "x" * 50 + " …"


# --- the size guard -------------------------------------------------------------------------


def big_digest(n: int) -> Digest:
    digest = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=37)
    picks: list[Pick] = []
    while len(picks) < n:
        for p in digest.picks:
            paper = dataclasses.replace(p.paper, id=f"{p.paper.id}{len(picks):03d}")
            picks.append(dataclasses.replace(p, paper=paper))
    return dataclasses.replace(digest, picks=tuple(picks[:n]))


def test_size_guard_drops_summaries_first(caplog: pytest.LogCaptureFixture) -> None:
    digest = big_digest(37)
    full = do_render(digest)
    limit = wire_size(full.html) - 2000  # a few summaries too many
    email = do_render(digest, limit=limit)
    assert wire_size(email.html) <= limit
    assert email.paper_ids == digest.paper_ids and email.dropped_ids == ()
    soup = BeautifulSoup(email.html, "html.parser")
    cards = soup.find_all("td", class_="paper")
    with_summary = [c.find("p", class_="summary") is not None for c in cards]
    assert with_summary[0] and not with_summary[-1]
    assert with_summary == sorted(with_summary, reverse=True)  # the lowest-ranked lose theirs
    assert "render.size_guard" in caplog.text and "papers_dropped=0" in caplog.text


def test_size_guard_drops_lowest_ranked_papers(caplog: pytest.LogCaptureFixture) -> None:
    digest = big_digest(100)
    email = do_render(digest)
    assert wire_size(email.html) <= HTML_LIMIT
    kept = len(email.paper_ids)
    assert 0 < kept < 100
    assert email.paper_ids == digest.paper_ids[:kept]
    assert email.dropped_ids == digest.paper_ids[kept:]
    assert email.html.rstrip().endswith("</html>")
    soup = BeautifulSoup(email.html, "html.parser")
    assert soup.find("p", class_="summary") is None
    assert f"{100 - kept} more matching papers did not fit" in text_of(email.html)
    assert soup.find("a", string="Unsubscribe") is not None
    assert f"{100 - kept} more matching papers did not fit" in " ".join(email.text.split())
    assert email.dropped_ids[0] in caplog.text and f"papers_dropped={100 - kept}" in caplog.text


def test_default_limit_is_gmail_safe() -> None:
    assert (
        HTML_LIMIT <= 100_000
        and compose.ComposeSpec(None, MASTHEAD, b"", NOW).html_limit == HTML_LIMIT
    )


def html_on_the_wire(data: bytes) -> bytes:
    """The HTML part of a built message as it is sent: its quoted-printable lines."""
    head, _, rest = data.partition(b"Content-Type: text/html")
    body = rest.split(b"\r\n\r\n", 1)[1]
    boundary = re.search(rb'boundary="([^"]+)"', head).group(1)  # type: ignore[union-attr]
    return body[: body.index(b"\r\n--" + boundary)]


def test_size_guard_measures_the_html_as_it_goes_on_the_wire() -> None:
    """Gmail clips by what arrives: quoted-printable, where every "=" of an inline style and
    every byte of a non-ASCII character takes three bytes, and long lines a soft break."""
    digest = big_digest(37)
    full = do_render(digest)
    decoded, wire = len(full.html.encode()), wire_size(full.html)
    assert wire > decoded * 1.05
    limit = (decoded + wire) // 2  # the decoded HTML fits; on the wire it does not
    sent = compose.Composer(spec(html_limit=limit)).compose(named(digest, "Ada"))
    assert len(html_on_the_wire(sent.data)) == wire_size(sent.email.html) <= limit
    assert len(sent.email.paper_ids) == 37  # summaries went first


# --- what spam filters and readers count ----------------------------------------------------

_TEXT_URL = re.compile(r"https?://\S+")


def urls(email: Email) -> tuple[Counter[str], Counter[str]]:
    """The URLs of the HTML part (links and images) and those printed in the text part."""
    soup = BeautifulSoup(email.html, "html.parser")
    html = Counter([a["href"] for a in soup.find_all("a")] + [i["src"] for i in soup("img")])
    return html, Counter(_TEXT_URL.findall(email.text))


@pytest.mark.parametrize(
    ("make", "limit"),
    [
        (load_digest, HTML_LIMIT),
        (hostile_digest, HTML_LIMIT),
        (lambda: fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json"), 60_000),
        (
            lambda: fixture_digest("hf_api_daily_papers_date_2024-11-11_8papers_reserialized.json"),
            HTML_LIMIT,
        ),
    ],
    ids=["golden", "hostile", "2026-05-08-cut", "2024-11-11"],
)
def test_both_parts_carry_the_same_urls_as_often(make: object, limit: int) -> None:
    """rspamd adds URI_COUNT_ODD when a multipart/alternative message has an odd number of
    URLs, images included: the parts match URL for URL. The HTML links a paper's Hugging
    Face page once (its title; the thumbnail is not a link); the text prints the thumbnail's
    URL as the HTML shows the image. No URL in the text ends with a sentence's full stop."""
    email = do_render(make(), limit=limit)  # type: ignore[operator]
    html, text = urls(email)
    assert html == text
    assert sum(html.values()) >= 4
    assert UNSUBSCRIBE_URL in html
    if limit < HTML_LIMIT:  # "see all papers of the day" in both
        assert email.dropped_ids and any("/papers/date/" in url for url in html)


def test_counts_are_singular_when_they_should_be() -> None:
    base = load_digest()
    one = dataclasses.replace(base.picks[0].paper, upvotes=1, comments=1, github_stars=1)
    digest = dataclasses.replace(base, picks=(dataclasses.replace(base.picks[0], paper=one),))
    email = do_render(digest)
    text = " ".join(email.text.split())
    assert "GitHub (1 star): https://github.com/" in text
    assert "1 upvote · 1 comment" in text
    assert "here is 1 trending paper on" in text
    soup = BeautifulSoup(email.html, "html.parser")
    assert soup.find(class_="preheader").get_text().startswith("1 new paper on diffusion")
    assert "here is 1 trending paper on" in soup.find("td", class_="intro").get_text()
    default = dataclasses.replace(MASTHEAD, subject_template=NewsletterSettings().subject)
    assert templates.subject(default, digest) == "Trending Papers: 1 new paper for 2026-11-23"
    assert templates.subject(default, base) == "Trending Papers: 3 new papers for 2026-11-23"
    # Existing configs keep {count}.
    assert templates.subject(MASTHEAD, digest) == "Trending Papers: 1 new papers for 2026-11-23"


def test_text_intro_carries_the_date_like_the_html() -> None:
    email = do_render(load_digest())
    intro = BeautifulSoup(email.html, "html.parser").find("td", class_="intro").get_text()
    text_intro = " ".join(email.text.split("\n\n")[1].split())
    assert intro.endswith("from the Hugging Face Daily Papers of Monday, 23 November 2026.")
    assert text_intro.endswith("from the Hugging Face Daily Papers of Monday, 23 November 2026.")


def test_topics_are_named_by_their_display_names() -> None:
    names = {"diffusion": "Diffusion models", "efficient-models": "Efficient <models> & co"}
    masthead = dataclasses.replace(MASTHEAD, topic_names=names)
    email = render_email(load_digest(), compose.Composer(spec(masthead=masthead)))
    shown = "Diffusion models, Efficient <models> & co"
    soup = BeautifulSoup(email.html, "html.parser")
    assert soup.find(class_="preheader").get_text().startswith(f"3 new papers on {shown}:")
    assert f"papers on {shown} from" in soup.find("td", class_="intro").get_text()
    assert f"for the topics {shown}." in soup.find("td", class_="footer").get_text()
    text = " ".join(email.text.split())
    assert f"papers on {shown} from" in text and f"for the topics {shown}." in text
    assert "efficient-models" not in email.html and "efficient-models" not in email.text


# --- overrides and `newsletter check` -------------------------------------------------------


def test_override_replaces_one_file(tmp_path: Path) -> None:
    (tmp_path / "_paper.html.j2").write_text(
        '<tr><td class="paper"><p class="paper-title">OVERRIDE {{ paper.title }}</p></td></tr>\n',
        encoding="utf-8",
    )
    email = do_render(load_digest(), compose.Composer(spec(tmp_path)))
    assert "OVERRIDE Denoising Diffusion Probabilistic Models" in email.html
    assert "Unsubscribe" in email.html  # digest.html.j2 is still the built-in one
    assert compose.check_templates(tmp_path) == []


def write_override(tmp_path: Path, name: str, old: str, new: str) -> Path:
    source = (BUILTIN / name).read_text(encoding="utf-8")
    assert old in source
    (tmp_path / name).write_text(source.replace(old, new, 1), encoding="utf-8")
    return tmp_path / name


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text(encoding="utf-8").splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


def test_builtin_templates_pass_check() -> None:
    assert compose.check_templates(None) == []


@pytest.mark.parametrize(
    ("name", "old", "new", "message"),
    [
        ("digest.html.j2", "{{ title }}</h1>", "{{ titel }}</h1>", "'titel' is undefined"),
        ("_paper.html.j2", "{{ pick.reason }}", "{{ pick.raeson }}", "has no attribute 'raeson'"),
        ("digest.txt.j2", "{{ unsubscribe_url }}", "{{ unsubscribe_link }}", "undefined"),
        # Only the bare paper (in the sample digests) takes this branch.
        (
            "_paper.html.j2",
            "{% if paper.authors %}",
            "{% if not paper.authors %}{{ paper.nope }}",
            "nope",
        ),
        ("digest.html.j2", "{% if more %}", "{% if more %}{{ more.count }}", "count"),
        ("digest.html.j2", "{% endfor %}", "{% endfo %}", "syntax error"),
        # An unknown filter: found when the template is analysed, named like any other error.
        ("digest.html.j2", "{{ title }}</h1>", "{{ title | titel }}</h1>", "No filter named 'titel'"),
        ("digest.txt.j2", "{{ unsubscribe_url }}", "{{ unsubscribe_url | nope }}", "No filter named 'nope'"),
        ("_paper.html.j2", "{{ pick.reason }}", "{{ pick.reason | nope }}", "No filter named 'nope'"),
        ("_paper.txt.j2", '("Why: " ~ pick.reason)', '("Why: " ~ pick.reason | nope)', "No filter named 'nope'"),
    ],
)  # fmt: skip
def test_check_names_template_and_line(
    tmp_path: Path, name: str, old: str, new: str, message: str
) -> None:
    path = write_override(tmp_path, name, old, new)
    with pytest.raises(TemplateError) as info:
        compose.check_templates(tmp_path)
    error = info.value
    assert Path(error.template) == path
    assert error.line == line_of(path, new)
    assert message in str(error)
    assert str(error).startswith(f"{path}:{error.line}: ")


def test_check_rejects_a_template_without_unsubscribe_link(tmp_path: Path) -> None:
    write_override(tmp_path, "digest.html.j2", '<a href="{{ unsubscribe_url }}">', "<a>")
    with pytest.raises(TemplateError, match="no unsubscribe link"):
        compose.check_templates(tmp_path)


def test_inlining_keeps_every_property_as_written_and_checks_none_against_css_profiles() -> None:
    """Email-only properties (mso-hide) and values cssutils would call invalid reach the
    style attribute as written, and no value is matched against cssutils' CSS profiles:
    compiling their patterns was 50 ms of every process that composes, for log lines that
    inline_css silences."""
    import cssutils

    from newsletter.compose.html import inline_css

    page = (
        "<html><head><style>p{color:red;mso-hide:all;width:100% !important;frobnicate:3px;"
        "color:4} @media (max-width:600px){p{color:blue !important}}</style></head><body>"
        '<p style="margin: 0; font-weight: bolder; flurb: 2; padding: x y z w v">x</p>'
        "</body></html>"
    )
    out = inline_css(page)
    assert (
        '<p style="mso-hide:all; frobnicate:3px; color:4; width:100% !important; margin:0; '
        'font-weight:bolder; flurb:2; padding:x y z w v">x</p>'
    ) in out
    assert "@media (max-width: 600px)" in out and "color: blue !important" in out
    assert not cssutils.profile.knownNames
