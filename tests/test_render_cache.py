"""Paper cards and text blocks are rendered once and reused; never reused when they differ."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import render
from newsletter.models import Digest, Email, Pick, Subscriber
from tests.digests import IDENTITY, UNSUBSCRIBE_URL, fixture_digest, hostile_digest

BASE = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=5)


def reader(i: int, digest: Digest = BASE, **changes: object) -> Digest:
    sub = dataclasses.replace(digest.subscriber, email=f"r{i}@example.org", **changes)  # type: ignore[arg-type]
    return dataclasses.replace(digest, subscriber=sub)


def do(env: render.Environment, digest: Digest) -> Email:
    return render.render(
        digest,
        env,
        IDENTITY,
        recipient_name=digest.subscriber.name,
        unsubscribe_url=UNSUBSCRIBE_URL,
    )


def test_cards_are_rendered_once_for_many_subscribers() -> None:
    env = render.make_env()
    fresh = [do(render.make_env(), reader(i)) for i in range(3)]
    first = do(env, reader(0))
    after_one = env.partial_renders
    assert after_one == 2 * len(BASE.picks)  # an HTML card and a text block per paper
    # Another topic and score do not show on a card: the same cards serve. (A section shows
    # as a heading between cards, in the digest, so it is left as it was here.)
    others = [dataclasses.replace(p, topic="other", score=p.score + 1) for p in BASE.picks]
    again = [do(env, reader(i, dataclasses.replace(BASE, picks=tuple(others)))) for i in range(3)]
    assert env.partial_renders == after_one
    assert [e.html for e in again] == [e.html for e in fresh]
    assert [e.text for e in again] == [e.text for e in fresh]
    assert first.html == fresh[0].html


def test_what_a_card_shows_keys_the_cache() -> None:
    env = render.make_env()
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
    source = (render.builtin_templates_dir() / "_paper.html.j2").read_text(encoding="utf-8")
    (tmp_path / "_paper.html.j2").write_text(
        source.replace("Why: {{ pick.reason }}", "Why: {{ pick.reason }} [{{ pick.topic }}]")
    )
    env = render.make_env(tmp_path)
    one = do(env, reader(0))
    others = [dataclasses.replace(p, topic="zebra") for p in BASE.picks]
    two = do(env, dataclasses.replace(reader(1), picks=tuple(others)))
    assert "[ml]" in one.html and "[zebra]" not in one.html
    assert "[zebra]" in two.html and "[ml]" not in two.html


def test_an_override_that_prints_the_recipient_is_not_shared(tmp_path: Path) -> None:
    source = (render.builtin_templates_dir() / "_paper.txt.j2").read_text(encoding="utf-8")
    (tmp_path / "_paper.txt.j2").write_text(
        source.replace('{{ ("Why: "', '{{ recipient_email }}\n{{ ("Why: "')
    )
    env = render.make_env(tmp_path)
    texts = [do(env, reader(i)).text for i in range(2)]
    assert texts[0].count("r0@example.org") > texts[1].count("r0@example.org")
    assert texts[1].count("r1@example.org") == len(BASE.picks) + 1  # cards and the footer


def test_whole_pick_used_means_whole_pick_keys(tmp_path: Path) -> None:
    source = (render.builtin_templates_dir() / "_paper.html.j2").read_text(encoding="utf-8")
    (tmp_path / "_paper.html.j2").write_text(source.replace("Why:", "{{ pick }} Why:"))
    env = render.make_env(tmp_path)
    reads = env.partial_reads(render.CARD_TEMPLATE)
    assert reads is not None and reads.pick_attrs is None
    named = Subscriber(email="x@example.org", topics=("ml",), name="X")
    do(env, dataclasses.replace(BASE, subscriber=named))
    others = [dataclasses.replace(p, topic="zebra") for p in BASE.picks]
    assert "zebra" in do(env, dataclasses.replace(BASE, picks=tuple(others))).html


@settings(max_examples=500, deadline=None)
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
    assert render.wrap.__wrapped__(text, width, indent) == expected


def sectioned(digest: Digest) -> Digest:
    """Picks in two sections, so the skeleton has headings between runs of cards."""
    picks = tuple(
        dataclasses.replace(p, section="Trending" if i < 2 else "ml")
        for i, p in enumerate(digest.picks)
    )
    return dataclasses.replace(digest, picks=picks)


def test_a_layout_found_by_pieces_is_the_layout_of_the_joined_skeleton() -> None:
    env = render.make_env()
    digests = [BASE, sectioned(BASE), reader(1, name=None), hostile_digest()]
    for digest in digests:
        do(env, digest)
        context = render.base_context(digest, IDENTITY, digest.subscriber.name, "https://u")
        context |= {"digest": digest, "picks": digest.picks, "more": 0}

        def card(pick: Pick) -> object:
            return render._Card(pick, True)

        slots = render._Slots(env)
        pieces = render._render_skeleton(env, render.HTML_TEMPLATE, context | {"card": card}, slots)
        found = render._piece_layout(env, pieces, len(slots.cards))
        assert found is not None
        by_string = render._string_layout(env, "".join(pieces), slots)
        assert found[1] is by_string[1]  # the same cached layout
        assert ["".join(map(str, run)) for run in found[0]] == [
            "".join(map(str, run)) for run in by_string[0]
        ]
    assert len(env.piece_layouts) == 3  # the hostile digest has the layout of BASE


def test_a_card_printed_inside_other_html_is_still_filled_in(tmp_path: Path) -> None:
    source = (render.builtin_templates_dir() / render.HTML_TEMPLATE).read_text(encoding="utf-8")
    assert "{{ card(pick) }}" in source
    plain, macro = tmp_path / "plain", tmp_path / "macro"
    plain.mkdir()
    macro.mkdir()
    (plain / render.HTML_TEMPLATE).write_text(
        source.replace("{{ card(pick) }}", "{{ card(pick) }} "), encoding="utf-8"
    )
    # The macro's HTML holds the card's token and a space: not a piece of its own.
    (macro / render.HTML_TEMPLATE).write_text(
        "{% macro show(p) %}{{ card(p) }} {% endmacro %}\n"
        + source.replace("{{ card(pick) }}", "{{ show(pick) }}"),
        encoding="utf-8",
    )
    for digest in (BASE, sectioned(BASE)):
        plain_env, macro_env = render.make_env(plain), render.make_env(macro)
        expected = do(plain_env, digest)
        got = do(macro_env, digest)
        assert plain_env.piece_layouts and not macro_env.piece_layouts
        assert got.html == expected.html
        assert got.text == expected.text
        assert got.html.count('class="paper"') == len(digest.picks)


def test_rendering_reads_no_template_file(monkeypatch: pytest.MonkeyPatch) -> None:
    env = render.make_env()

    def no_reads(environment: jinja2.Environment, template: str) -> object:
        raise AssertionError(f"read {template} while rendering")

    # Everything the render needs was read and analysed by make_env.
    monkeypatch.setattr(env.loader, "get_source", no_reads)
    for digest in (BASE, sectioned(BASE), reader(1, name=None)):
        assert digest.subscriber.email in do(env, digest).html
