"""A digest rendered once for everyone with the same papers is what each would get alone
(the reference path renders each in full); a template that cannot be is named, and why."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import compose
from newsletter.cli import cli
from newsletter.compose import split, templates
from newsletter.compose.pool import compose_many
from newsletter.compose.size import HTML_LIMIT
from newsletter.compose.templates import CARD_TEMPLATE, HTML_TEMPLATE, TEXT_TEMPLATE
from newsletter.models import Digest, Email, Subscriber
from tests.digests import (
    MANAGE_URL,
    MASTHEAD,
    assert_same_email,
    fixture_digest,
    hostile_digest,
    load_digest,
    spec,
)

BASE = fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=6)
BUILTIN = templates.builtin_templates_dir()


def recipient(digest: Digest, i: int, name: str | None, topics: tuple[str, ...]) -> Digest:
    sub = Subscriber(email=f"reader{i}@example.org", topics=topics, name=name, id=f"r{i}")
    return dataclasses.replace(digest, subscriber=sub)


def do(composer: compose.Composer, digest: Digest, limit: int | None = None) -> Email:
    url = f"https://papers.example.org/unsubscribe/{digest.subscriber.email}?a=1&b=2"
    return composer.email(digest, unsubscribe_url=url, manage_url=MANAGE_URL, limit=limit)


def fast(templates_dir: Path | None = None) -> compose.Composer:
    return compose.Composer(spec(templates_dir))


def whole(templates_dir: Path | None = None) -> compose.Composer:
    """A composer that renders every template in full, for every recipient."""
    return compose.Composer(spec(templates_dir), reference=True)


def override(tmp_path: Path, name: str, old: str, new: str) -> Path:
    source = (BUILTIN / name).read_text(encoding="utf-8")
    assert old in source
    (tmp_path / name).write_text(source.replace(old, new, 1), encoding="utf-8")
    return tmp_path


def test_the_builtin_templates_are_split_at_the_recipient() -> None:
    env = templates.make_env()
    html = split.split(env, HTML_TEMPLATE)
    text = split.split(env, TEXT_TEMPLATE)
    assert html.tested == ("recipient_name",)  # {% if recipient_name %}Hi ...
    assert html.count == 7  # topics in 3 places, the name, the address, the two links
    assert text.count == 4  # greeting, footer, the manage and unsubscribe URLs
    for found in (html, text):
        assert not set(found.reads) & split.RECIPIENT
    assert fast().full_renders == {}


NAMES = st.one_of(
    st.none(),
    st.sampled_from(["Ada", "Zoë Müller", 'Eve "<b>bold</b>" & co', "x" * 70, "李小龙"]),
)
TOPICS = st.lists(
    st.sampled_from(["ml", "diffusion", "<agents>", "rl & co"]), min_size=1, max_size=3
)


SHARED, WHOLE = fast(), whole()  # one of each for every example: the caches fill up


@pytest.mark.slow
@given(st.lists(st.tuples(NAMES, TOPICS, st.integers(1, 6)), min_size=1, max_size=8))
# A quarter of the profile's examples: each renders up to eight emails twice, once the slow
# whole way (25 here for CI, 250 with --hypothesis-profile=dev).
@settings(max_examples=max(10, settings.default.max_examples // 4))
def test_once_for_many_recipients_is_each_alone(
    readers: list[tuple[str | None, list[str], int]],
) -> None:
    shared, alone = SHARED, WHOLE
    for i, (name, topics, count) in enumerate(readers):
        digest = recipient(
            dataclasses.replace(BASE, picks=BASE.picks[:count]), i, name, tuple(topics)
        )
        assert_same_email(do(shared, digest), do(alone, digest))


def test_the_same_papers_are_rendered_once() -> None:
    composer = fast()
    emails = [
        do(composer, recipient(BASE, i, name, ("ml",)))
        for i, name in enumerate(["A", None, "B", "C"])
    ]
    # HTML and text once for the named, the HTML once more without a name (its greeting
    # differs in a test, not a value); the text needs no second render.
    assert composer.counts().once_renders == 3
    # Each address twice (the footer, the unsubscribe link), nobody else's.
    assert [e.html.count(f"reader{i}@example.org") for i, e in enumerate(emails)] == [2] * 4
    assert not any("reader0@" in e.html for e in emails[1:])
    assert emails[0].html.count("Hi A,") == 1 and "Hi B," in emails[2].html


def test_size_guard_and_hostile_values_are_the_same(tmp_path: Path) -> None:
    for digest in (hostile_digest(), load_digest()):
        for limit in (HTML_LIMIT, 30_000, 0):
            assert_same_email(do(fast(), digest, limit), do(whole(), digest, limit))


@pytest.mark.parametrize(
    ("name", "old", "new", "splits"),
    [
        # The recipient in a place the splitter does not evaluate on its own: whole renders.
        (HTML_TEMPLATE, "<title>", "{% set who = recipient_email %}<title>{{ who }}", False),
        (
            HTML_TEMPLATE,
            "<title>",
            '{% if recipient_email.endswith(".org") %}ORG{% endif %}<title>',
            False,
        ),
        (
            HTML_TEMPLATE,
            "{{ card(pick) }}\n{% endfor %}",
            "{{ card(pick) }}{{ pick.topic ~ recipient_email }}\n{% endfor %}",
            False,
        ),
        (
            HTML_TEMPLATE,
            "<title>",
            "{% for t in topics %}{{ t }}|{% endfor %}<title>",
            False,
        ),
        (
            HTML_TEMPLATE,
            "<title>",
            "{% macro m() %}{{ recipient_email }}{% endmacro %}{{ m() }}<title>",
            False,
        ),
        (HTML_TEMPLATE, "<title>", "{{ digest.subscriber.email }}<title>", True),
        (HTML_TEMPLATE, "<title>", "{{ recipient_name | safe }}<title>", True),
        (
            HTML_TEMPLATE,
            "{{ card(pick) }}\n{% endfor %}",
            "{{ card(pick) }}{{ recipient_name }}\n{% endfor %}",
            True,
        ),
        (
            TEXT_TEMPLATE,
            "-- \n",
            "-- \n{% if not recipient_name %}Anonymous.{% endif %}\n",
            True,
        ),
        (
            TEXT_TEMPLATE,
            "-- \n",
            "-- \n{{ recipient_email | upper }} {{ topics | length }}\n",
            True,
        ),
        (TEXT_TEMPLATE, "-- \n", "-- \n{{ recipient_email ~ nonexistent }}\n", True),
    ],
)
def test_an_override_renders_as_in_full(
    tmp_path: Path, name: str, old: str, new: str, splits: bool
) -> None:
    folder = override(tmp_path, name, old, new)
    composer = fast(folder)
    assert (name not in composer.full_renders) is splits
    readers = [
        recipient(BASE, i, n, ("ml", "rl")) for i, n in enumerate(["<i>Ada</i>", None, "Bo"])
    ]
    for digest in readers:
        try:
            expected: Email | str = do(whole(folder), digest)
        except Exception as e:  # the same error either way, with its template and line
            expected = str(e)
        try:
            got: Email | str = do(composer, digest)
        except Exception as e:
            got = str(e)
        if isinstance(got, Email) and isinstance(expected, Email):
            assert_same_email(got, expected)
        else:
            assert got == expected


def test_a_card_that_prints_the_recipient_is_never_shared(tmp_path: Path) -> None:
    folder = override(tmp_path, CARD_TEMPLATE, "Why:", "{{ recipient_email }} Why:")
    composer = fast(folder)
    emails = [do(composer, recipient(BASE, i, None, ("ml",))) for i in range(2)]
    assert composer.counts().once_renders == 1  # the text only: the HTML is not split
    assert composer.full_renders == {HTML_TEMPLATE: "_paper.html.j2 prints recipient_email"}
    # In every card, the footer and the unsubscribe link.
    assert emails[1].html.count("reader1@example.org") == len(BASE.picks) + 2
    assert "reader0@example.org" not in emails[1].html


def test_topic_names_keep_the_rendered_once_path() -> None:
    """Display names are the recipient's ``topics``: evaluated per recipient, the rest shared."""
    masthead = dataclasses.replace(MASTHEAD, topic_names={"ml": "Machine <learning>", "rl": "RL"})
    shared = compose.Composer(spec(masthead=masthead))
    alone = compose.Composer(spec(masthead=masthead), reference=True)
    for i, topics in enumerate([("ml",), ("ml", "rl"), ("rl",), ("ml",)]):
        digest = recipient(BASE, i, "A", topics)
        url = f"https://papers.example.org/unsubscribe/{i}"
        got, expected = (
            c.email(digest, unsubscribe_url=url, manage_url=MANAGE_URL) for c in (shared, alone)
        )
        assert_same_email(got, expected)
        assert "Machine &lt;learning&gt;" in got.html or topics == ("rl",)
    assert shared.counts().once_renders == 2  # the HTML and the text, once for all four


# -- the slow path speaks ---------------------------------------------------------------

#: The recipient read where the splitter does not evaluate it on its own (a ``{% set %}``).
SET_LINE = "{% set who = recipient_email %}<title>{{ who }}"


@pytest.mark.parametrize("workers", [1, 2])
def test_a_template_rendered_in_full_is_logged_once_per_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    folder = override(tmp_path, HTML_TEMPLATE, "<title>", SET_LINE)
    lines = (folder / HTML_TEMPLATE).read_text(encoding="utf-8").splitlines()
    line = next(i for i, text in enumerate(lines, 1) if SET_LINE in text)
    digests = [recipient(BASE, i, None, ("ml",)) for i in range(12)]
    with caplog.at_level(logging.INFO):
        sent = list(
            compose_many(spec(folder), digests, count=12, bodies=False, workers=workers, chunk=2)
        )
    assert len(sent) == 12
    said = [r.getMessage() for r in caplog.records if "compose.full_render" in r.getMessage()]
    assert said == [
        f"compose.full_render template={HTML_TEMPLATE} reason=line {line}: reads "
        "recipient_email other than in {{ ... }} or {% if recipient_email %}"
    ]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_value_that_needs_the_full_render_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, workers: int
) -> None:
    """Split, but every named recipient's HTML is rendered in full: said once, from any worker."""
    folder = override(tmp_path, HTML_TEMPLATE, "<title>", "{{ recipient_name | safe }}<title>")
    assert fast(folder).full_renders == {}  # nothing known until a name is printed
    digests = [recipient(BASE, i, f"R{i}", ("ml",)) for i in range(12)]
    with caplog.at_level(logging.INFO):
        list(compose_many(spec(folder), digests, count=12, bodies=False, workers=workers, chunk=2))
    said = [r.getMessage() for r in caplog.records if "compose.full_render" in r.getMessage()]
    assert said == [
        f"compose.full_render template={HTML_TEMPLATE} "
        "reason=a recipient output is safe HTML (|safe, a macro)"
    ]


def test_the_builtin_templates_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    digests = [recipient(BASE, i, f"R{i}", ("ml",)) for i in range(3)]
    with caplog.at_level(logging.INFO):
        list(compose_many(spec(), digests, count=3, bodies=True))
    assert "compose.full_render" not in caplog.text


def test_check_names_the_template_rendered_in_full_and_why(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    override(mine, HTML_TEMPLATE, "<title>", SET_LINE)
    override(mine, CARD_TEMPLATE, "Why:", "{{ recipient_email }} Why:")
    (mine / TEXT_TEMPLATE).write_text(
        (BUILTIN / TEXT_TEMPLATE).read_text(encoding="utf-8")
        + "{% macro sig() %}{{ title }}{% endmacro %}{{ sig() }}\n",
        encoding="utf-8",
    )
    warnings = compose.check_templates(mine)
    assert len(warnings) == 2
    html, text = sorted(warnings)
    prefix = "cannot be rendered once for many recipients, so each one's email is rendered in full"
    assert html.startswith(f"{mine / HTML_TEMPLATE}: {prefix} (slower): line ")
    assert html.endswith(
        "reads recipient_email other than in {{ ... }} or {% if recipient_email %}"
    )
    assert text.startswith(f"{mine / TEXT_TEMPLATE}: {prefix} (slower): line ")
    assert text.endswith(": {% macro %} (the recipient may be read in it)")
    assert compose.check_templates(None) == []


def test_newsletter_check_warns_and_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.conftest import write_config

    monkeypatch.setenv("NEWSLETTER_SECRET", "k" * 32)
    mine = tmp_path / "mine"
    mine.mkdir()
    override(mine, CARD_TEMPLATE, "Why:", "{{ recipient_email }} Why:")
    cfg = write_config(tmp_path / "subs.yaml", hf_url="http://127.0.0.1:9")
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(
        text.replace("  state: state.db\n", "  state: state.db\n  templates_dir: mine\n")
    )
    result = CliRunner().invoke(cli, ["check", "-c", str(cfg)])
    assert result.exit_code == 0, result.output
    assert f"warning: {HTML_TEMPLATE}: cannot be rendered once for many recipients" in result.output
    assert "_paper.html.j2 prints recipient_email" in result.output
    assert result.output.endswith(": ok: 3 topics, 3 subscribers\n")
