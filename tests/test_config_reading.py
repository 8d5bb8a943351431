"""Reading the YAML text: once, with libyaml where PyYAML has it, into what ``safe_load`` makes.

The operator-facing lines for bad files are pinned in test_config.py; here they must be
the same whichever reader composed the file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from newsletter import config
from newsletter.cli import cli
from newsletter.errors import ConfigError

VALID = (
    "topics:\n  diffusion:\n    keywords: [diffusion]\n"
    "subscribers:\n  - email: ada@example.org\n    topics: [diffusion]\n"
)

SNIPPETS = [
    VALID,
    "a: 1\nb: 1.5\nc: yes\nd: null\ne: ~\nf: 2024-02-03\ng: 2024-02-03 10:00:00Z\nh: 0x1f\n",
    "a: &x [1, 2, {b: c}]\nd: *x\n",  # an alias: the same object twice
    "base: &b {x: 1, y: 2}\nmerged:\n  <<: *b\n  y: 3\n",  # a merge key
    "=: value\nother: [=]\n",
    "? [1, 2]\n: tuple keys are lists in YAML\n",  # unhashable: PyYAML's error
    "1: one\ntrue: yes\n3.5: x\nnull: y\n",
    "s: !!str 12\nb: !!binary aGVsbG8=\nset: !!set {a, b}\nom: !!omap [a: 1, b: 2]\n",
    "text: |\n  two\n  lines\nfolded: >\n  one\n  line\nq: 'it''s'\nd: \"tab\\there\"\n",
    "empty_map: {}\nempty_list: []\nempty: \n",
    "",
    "# only a comment\n",
    "- a list\n- at the top\n",
    "plain scalar at the top\n",
]


def read(text: str) -> Any:
    """As config.parse reads: from libyaml's events, else from the node tree."""
    data = config._data(text)
    return config._construct(config._compose(text)) if data is config._UNREAD else data


def read_nodes(text: str) -> Any:
    return config._construct(config._compose(text))


def outcome(fn: Any, text: str) -> tuple[str, Any]:
    """The data, or what the config's error line is made of (libyaml's marks quote no text)."""
    try:
        return "ok", fn(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        return type(e).__name__, (e.problem, mark.line if mark else None)


@pytest.mark.parametrize("text", SNIPPETS)
@pytest.mark.parametrize("fast", [True, False], ids=["libyaml", "python"])
def test_reads_what_safe_load_reads(monkeypatch: pytest.MonkeyPatch, text: str, fast: bool) -> None:
    if not fast:
        monkeypatch.setattr(config, "_FAST_LOADER", None)
    assert outcome(read, text) == outcome(yaml.safe_load, text)
    assert outcome(read_nodes, text) == outcome(yaml.safe_load, text)


def test_a_plain_file_is_read_from_the_events() -> None:
    """The short way is taken where it can be (else the tests above prove little)."""
    assert config._data(VALID) == yaml.safe_load(VALID)
    assert config._data(SNIPPETS[1]) == yaml.safe_load(SNIPPETS[1])  # ints, dates, nulls
    assert config._data("a: &x [1]\nb: *x\n") is config._UNREAD


def test_a_lists_strings_are_one_object_however_many_subscribers_list_them() -> None:
    """100,000 subscribers' topics are a few strings, not 300,000 (~20 MB)."""
    text = "subs:\n" + "".join(
        f"  - topics: [diffusion, agents]\n    name: n{i}\n" for i in range(3)
    )
    subs = config._data(text)["subs"]
    assert subs == yaml.safe_load(text)["subs"]
    assert all(s["topics"][0] is subs[0]["topics"][0] for s in subs)
    assert all(s["topics"][1] is subs[0]["topics"][1] for s in subs)


scalars = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.dates(min_value=dt.date(1900, 1, 1)),
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(documents, st.sampled_from([False, True]))
def test_any_dumped_document_reads_back_as_safe_load_reads_it(data: Any, flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    assert read(text) == read_nodes(text) == yaml.safe_load(text)


def test_the_text_is_parsed_once_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """A good file: read once, by libyaml, the data made from its events (no node tree, no
    second parse). A file with problems is composed again, for the problems' lines."""
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the slow reader is the only one"
    parses: list[str] = []
    real_compose = yaml.compose

    class Counted(yaml.CSafeLoader):
        def __init__(self, stream: str) -> None:
            parses.append("libyaml")
            super().__init__(stream)

    def compose(stream: Any, Loader: Any) -> Any:
        parses.append(f"compose {Loader.__name__}")
        return real_compose(stream, Loader=Loader)

    monkeypatch.setattr(config, "_FAST_LOADER", Counted)
    monkeypatch.setattr(yaml, "compose", compose)
    monkeypatch.setattr(yaml, "load", None)  # nothing else reads it
    loaded = config.parse(VALID, "c.yaml")
    assert [s.email for s in loaded.subscribers] == ["ada@example.org"]
    assert parses == ["libyaml"]
    parses.clear()
    with pytest.raises(ConfigError) as e:
        config.parse(VALID.replace("[diffusion]\n", "[diffusion]\n    bogus: 1\n", 1), "c.yaml")
    assert e.value.problems == ["c.yaml:4: topics.diffusion.bogus: unknown key"]
    assert parses == ["libyaml", "compose Counted", "libyaml"]


BAD = [
    ("topics: [unclosed\n", "2: yaml: expected ',' or ']', but got '<stream end>'"),
    ("topics:\n\tdiffusion: x\n", "2: yaml: found character '\\t' that cannot start any token"),
    ("topics:\n  a: b\n c: d\n", "3: yaml: expected <block end>, but found '<block mapping start>'"),
    (f"{VALID}x: {'[' * 5000}{']' * 5000}\n", "7: yaml: nested more than 64 levels deep"),
    (f"{VALID}x: {'[' * 500}{']' * 500}\n", "7: yaml: nested more than 64 levels deep"),
    (f"{VALID}    max_papers: {'1' * 5001}\n", "7: subscribers[0].max_papers: a number of 5001 digits is too long"),
    (f"{VALID}    bogus: 1\n", "7: subscribers[0].bogus: unknown key"),
    (f"{VALID}  - email: ada@example.org\n    topics: [nope]\n",
     "7: subscribers[1].email: duplicate subscriber 'ada@example.org' (also subscribers[0])\n"
     "8: subscribers[1].topics[0]: unknown topic 'nope' (known: diffusion)"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "problem"), BAD)
@pytest.mark.parametrize("fast", [True, False], ids=["libyaml", "python"])
def test_bad_files_are_told_in_the_same_words_by_either_reader(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, problem: str, fast: bool
) -> None:
    if not fast:
        monkeypatch.setattr(config, "_FAST_LOADER", None)
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 2
    lines = [line.removeprefix(f"{path}:") for line in result.output.splitlines()]
    assert lines == problem.split("\n")
