"""Paper cards and text blocks are rendered once and reused; never reused when they differ."""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import shutil
import textwrap
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from newsletter import compose
from newsletter.compose import templates
from newsletter.compose.templates import HTML_TEMPLATE
from newsletter.models import Digest, Email, Subscriber
from tests.digests import MANAGE_URL, UNSUBSCRIBE_URL, fixture_digest, hostile_digest, spec

BASE = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=5)
BUILTIN = templates.builtin_templates_dir()


def reader(i: int, digest: Digest = BASE, **changes: object) -> Digest:
    sub = dataclasses.replace(digest.subscriber, email=f"r{i}@example.org", **changes)  # type: ignore[arg-type]
    return dataclasses.replace(digest, subscriber=sub)


def composer(templates_dir: Path | None = None) -> compose.Composer:
    return compose.Composer(spec(templates_dir))


def do(composer: compose.Composer, digest: Digest) -> Email:
    return composer.email(digest, unsubscribe_url=UNSUBSCRIBE_URL, manage_url=MANAGE_URL)


def test_cards_are_rendered_once_for_many_subscribers() -> None:
    shared = composer()
    fresh = [do(composer(), reader(i)) for i in range(3)]
    first = do(shared, reader(0))
    after_one = shared.counts().partial_renders
    assert after_one == 2 * len(BASE.picks)  # an HTML card and a text block per paper
    # Another topic and score do not show on a card: the same cards serve. (A section shows
    # as a heading between cards, in the digest, so it is left as it was here.)
    others = [dataclasses.replace(p, topic="other", score=p.score + 1) for p in BASE.picks]
    again = [
        do(shared, reader(i, dataclasses.replace(BASE, picks=tuple(others)))) for i in range(3)
    ]
    assert shared.counts().partial_renders == after_one
    assert [e.html for e in again] == [e.html for e in fresh]
    assert [e.text for e in again] == [e.text for e in fresh]
    assert first.html == fresh[0].html


def test_what_a_card_shows_keys_the_cache() -> None:
    env = composer()
    do(env, reader(0))
    changed = [dataclasses.replace(p, reason=p.reason + " (changed)") for p in BASE.picks]
    email = do(env, dataclasses.replace(reader(1), picks=tuple(changed)))
    assert email.html.count("(changed)") == len(BASE.picks)
    assert email.text.count("(changed)") == len(BASE.picks)
    # A paper with the same id and new upvotes is a new card.
    bumped = [
        dataclasses.replace(p, paper=dataclasses.replace(p.paper, upvotes=123_456))
        for p in BASE.picks
    ]
    email = do(env, dataclasses.replace(reader(2), picks=tuple(bumped)))
    assert email.html.count("123,456 upvotes") == len(BASE.picks)


def test_an_override_that_prints_the_topic_gets_it(tmp_path: Path) -> None:
    source = (BUILTIN / "_paper.html.j2").read_text(encoding="utf-8")
    (tmp_path / "_paper.html.j2").write_text(
        source.replace("Why: {{ pick.reason }}", "Why: {{ pick.reason }} [{{ pick.topic }}]")
    )
    env = composer(tmp_path)
    one = do(env, reader(0))
    others = [dataclasses.replace(p, topic="zebra") for p in BASE.picks]
    two = do(env, dataclasses.replace(reader(1), picks=tuple(others)))
    assert "[ml]" in one.html and "[zebra]" not in one.html
    assert "[zebra]" in two.html and "[ml]" not in two.html


def test_an_override_that_prints_the_recipient_is_not_shared(tmp_path: Path) -> None:
    source = (BUILTIN / "_paper.txt.j2").read_text(encoding="utf-8")
    (tmp_path / "_paper.txt.j2").write_text(
        source.replace('{{ ("Why: "', '{{ recipient_email }}\n{{ ("Why: "')
    )
    env = composer(tmp_path)
    texts = [do(env, reader(i)).text for i in range(2)]
    assert texts[0].count("r0@example.org") > texts[1].count("r0@example.org")
    assert texts[1].count("r1@example.org") == len(BASE.picks) + 1  # cards and the footer


def test_whole_pick_used_means_whole_pick_keys(tmp_path: Path) -> None:
    source = (BUILTIN / "_paper.html.j2").read_text(encoding="utf-8")
    (tmp_path / "_paper.html.j2").write_text(source.replace("Why:", "{{ pick }} Why:"))
    env = composer(tmp_path)
    named = Subscriber(email="x@example.org", topics=("ml",), name="X", id="x0001")
    do(env, dataclasses.replace(BASE, subscriber=named))
    others = [dataclasses.replace(p, topic="zebra") for p in BASE.picks]
    assert "zebra" in do(env, dataclasses.replace(BASE, picks=tuple(others))).html


@given(
    st.lists(
        st.text(st.sampled_from("ab-/.:é€"), min_size=1, max_size=30)
        | st.sampled_from(["https://example.org/" + "x" * 90, "a"]),
        max_size=30,
    ),
    st.integers(1, 90),
    st.sampled_from(["", "   ", "> "]),
)
def test_fast_wrap_is_textwrap(words: list[str], width: int, indent: str) -> None:
    text = " ".join(words)
    expected = textwrap.fill(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )
    assert templates.wrap(text, width, indent) == expected


def sectioned(digest: Digest) -> Digest:
    """Picks in two sections, so the skeleton has headings between runs of cards."""
    picks = tuple(
        dataclasses.replace(p, section="Trending" if i < 2 else "ml")
        for i, p in enumerate(digest.picks)
    )
    return dataclasses.replace(digest, picks=picks)


def test_a_digest_layout_is_inlined_once_whatever_its_values() -> None:
    fast = composer()
    for digest in [BASE, sectioned(BASE), reader(1, name=None), hostile_digest()]:
        do(fast, digest)
    assert fast.counts().layouts == 3  # the hostile digest has the layout of BASE


def test_a_card_printed_inside_other_html_is_still_filled_in(tmp_path: Path) -> None:
    """A card's token inside a macro's HTML is no piece of its own: the layout is found in the
    joined skeleton instead, and is the same."""
    source = (BUILTIN / HTML_TEMPLATE).read_text(encoding="utf-8")
    assert "{{ card(pick) }}" in source
    plain, macro = tmp_path / "plain", tmp_path / "macro"
    plain.mkdir()
    macro.mkdir()
    (plain / HTML_TEMPLATE).write_text(
        source.replace("{{ card(pick) }}", "{{ card(pick) }} "), encoding="utf-8"
    )
    # The macro's HTML holds the card's token and a space: not a piece of its own.
    (macro / HTML_TEMPLATE).write_text(
        "{% macro show(p) %}{{ card(p) }} {% endmacro %}\n"
        + source.replace("{{ card(pick) }}", "{{ show(pick) }}"),
        encoding="utf-8",
    )
    plain_composer, macro_composer = composer(plain), composer(macro)
    for digest in (BASE, sectioned(BASE), reader(1, name=None), hostile_digest()):
        expected = do(plain_composer, digest)
        got = do(macro_composer, digest)
        assert got.html == expected.html
        assert got.text == expected.text
        assert got.html.count('class="paper"') == len(digest.picks)


def test_composing_reads_no_template_file(tmp_path: Path) -> None:
    """Everything composing needs is read and analysed when the composer is made."""
    for name in templates.builtin_templates_dir().iterdir():
        if name.is_file():  # web/ holds the web pages' templates
            shutil.copy(name, tmp_path / name.name)
    made = composer(tmp_path)
    for path in tmp_path.iterdir():  # a file read from now on breaks the email
        path.write_text("{% broken", encoding="utf-8")
    for digest in (BASE, sectioned(BASE), reader(1, name=None)):
        assert digest.subscriber.email in do(made, digest).html


def test_no_compose_module_keeps_a_cache() -> None:
    """Caches are state of the objects a Composer owns, never of a module: two composers
    (two runs, two workers, two tests) share nothing."""
    for info in pkgutil.iter_modules(compose.__path__):
        module = importlib.import_module(f"newsletter.compose.{info.name}")
        for name, value in vars(module).items():
            where = f"newsletter.compose.{info.name}.{name}"
            if getattr(value, "__module__", None) == module.__name__:  # a function made here
                assert not hasattr(value, "cache_info"), f"{where}: an lru_cache"
            if type(value).__module__.startswith("newsletter"):  # an object made here
                assert "cache" not in type(value).__name__.lower(), where
            if isinstance(value, dict | list | set) and not name.startswith("__"):
                assert name.lstrip("_").isupper(), f"{where}: a constant is named in capitals"


def test_two_composers_share_nothing() -> None:
    first, second = composer(), composer()
    for digest in (BASE, reader(1)):
        do(first, digest)
    do(second, BASE)
    assert second.counts().premailer_runs == first.counts().premailer_runs > 0
    assert second.counts().partial_renders == first.counts().partial_renders > 0
