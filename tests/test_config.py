from __future__ import annotations

import datetime as dt
import re
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from newsletter import config
from newsletter.cli import cli

ROOT = Path(__file__).resolve().parent.parent

VALID = """\
topics:
  diffusion:
    keywords: [diffusion]
subscribers:
  - email: ada@example.org
    topics: [diffusion]
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "subs.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    prefix = f"{path}:"
    return [p.removeprefix(prefix) for p in e.value.problems]


def test_example_file_is_valid() -> None:
    cfg = config.load(ROOT / "subscribers.example.yaml")
    assert cfg.newsletter.title == "Trending Papers"
    assert cfg.newsletter.from_address == "papers@example.org"
    assert set(cfg.topics) >= {"diffusion"}
    assert cfg.subscribers[0].email == "ada@example.org"
    assert cfg.state_path == ROOT / "newsletter.db"


def test_defaults_fill_everything_but_topics_and_subscribers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(VALID, encoding="utf-8")
    cfg = config.load(path)
    sub = cfg.subscriber_models()[0]
    assert (sub.cadence, sub.max_papers, sub.min_upvotes, sub.timezone) == ("daily", 10, 0, "UTC")
    assert cfg.smtp.security == "starttls"
    assert cfg.sources.huggingface.base_url == "https://huggingface.co"


def test_yaml_syntax_error(tmp_path: Path) -> None:
    assert problems(tmp_path, "topics:\n  a: [b\nsubscribers: []\n") == [
        "3: yaml: expected ',' or ']', but got ':'"
    ]


def test_unknown_key_names_its_path_and_line(tmp_path: Path) -> None:
    text = VALID.replace("    topics: [diffusion]", "    topics: [diffusion]\n    colour: blue")
    assert problems(tmp_path, text) == ["7: subscribers[0].colour: unknown key"]


def test_unknown_top_level_and_nested_keys(tmp_path: Path) -> None:
    text = "newsletter:\n  titel: X\n" + VALID + "smtpp: {}\n"
    assert problems(tmp_path, text) == [
        "2: newsletter.titel: unknown key",
        "9: smtpp: unknown key",
    ]


def test_wrong_type(tmp_path: Path) -> None:
    text = VALID + "    max_papers: lots\n"
    assert problems(tmp_path, text) == [
        "7: subscribers[0].max_papers: input should be a valid integer, "
        "unable to parse string as an integer, got 'lots'"
    ]


def test_wrong_choice(tmp_path: Path) -> None:
    text = VALID + "    cadence: hourly\n"
    assert problems(tmp_path, text) == [
        "7: subscribers[0].cadence: input should be 'daily' or 'weekly', got 'hourly'"
    ]


def test_invalid_email(tmp_path: Path) -> None:
    text = VALID.replace("ada@example.org", "ada.example.org")
    assert problems(tmp_path, text) == [
        "5: subscribers[0].email: invalid email address 'ada.example.org'"
    ]


def test_unknown_topic(tmp_path: Path) -> None:
    text = VALID + "  - email: bob@example.org\n    topics: [diffusion, difusion]\n"
    assert problems(tmp_path, text) == [
        "8: subscribers[1].topics[1]: unknown topic 'difusion' (known: diffusion)"
    ]


def test_duplicate_subscriber_is_case_insensitive(tmp_path: Path) -> None:
    text = VALID + "  - email: ADA@Example.org\n    topics: [diffusion]\n"
    assert problems(tmp_path, text) == [
        "7: subscribers[1].email: duplicate subscriber 'ADA@Example.org' (also subscribers[0])"
    ]


def test_unknown_timezone(tmp_path: Path) -> None:
    text = VALID + "    timezone: Europe/Londn\n"
    assert problems(tmp_path, text) == [
        "7: subscribers[0].timezone: unknown timezone 'Europe/Londn'"
    ]


def test_missing_required_key(tmp_path: Path) -> None:
    assert problems(tmp_path, "subscribers: []\n") == ["1: topics: required key is missing"]


def test_a_file_without_subscribers_is_valid_its_readers_are_in_the_state(
    tmp_path: Path,
) -> None:
    """Readers sign up on the page or are added with `subscribers add`: the file may list none."""
    path = tmp_path / "c.yaml"
    path.write_text("topics:\n  t: {keywords: [x]}\n")
    assert config.load(path).subscribers == []


def test_the_signup_settings_and_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("topics:\n  t: {keywords: [x], description: About t}\n")
    loaded = config.load(path)
    assert loaded.signup.enabled is False and loaded.signup.confirm_hours == 48
    assert (loaded.signup.defaults.timezone, loaded.signup.defaults.max_papers) == ("UTC", 10)
    assert loaded.topics["t"].description == "About t" and loaded.newsletter.description == ""
    bad = "signup:\n  confirm_hours: 0\n  defaults:\n    timezone: Mars/Base\n"
    assert problems(tmp_path, bad + "topics:\n  t: {keywords: [x]}\n") == [
        "2: signup.confirm_hours: input should be greater than or equal to 1, got 0",
        "4: signup.defaults.timezone: unknown timezone 'Mars/Base'",
    ]


def test_bad_subject_template(tmp_path: Path) -> None:
    text = "newsletter:\n  subject: '{titel} news'\n" + VALID
    (line,) = problems(tmp_path, text)
    assert line.startswith("2: newsletter.subject: bad subject template '{titel} news'")


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = """\
newsletter:
  bogus: 1
topics:
  diffusion:
    keywords: [diffusion]
subscribers:
  - email: bob
    topics: [difusion]
    timezone: Mars/Base
"""
    assert problems(tmp_path, text) == [
        "2: newsletter.bogus: unknown key",
        "7: subscribers[0].email: invalid email address 'bob'",
        "8: subscribers[0].topics[0]: unknown topic 'difusion' (known: diffusion)",
        "9: subscribers[0].timezone: unknown timezone 'Mars/Base'",
    ]


def test_top_level_not_a_mapping(tmp_path: Path) -> None:
    assert problems(tmp_path, "- just\n- a list\n") == [
        "1: (top level): expected a mapping of settings"
    ]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.load(tmp_path / "nope.yaml")
    assert e.value.problems == [
        f"{tmp_path / 'nope.yaml'}: no such file (pass -c FILE or set $NEWSLETTER_CONFIG)"
    ]


def test_check_command_prints_problems_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "subs.yaml"
    path.write_text(VALID + "    timezone: Nowhere/Town\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 2
    assert result.output == f"{path}:7: subscribers[0].timezone: unknown timezone 'Nowhere/Town'\n"


def test_check_command_summary_on_a_valid_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", "k" * 32)
    path = ROOT / "subscribers.example.yaml"
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"{path}: ok: 4 topics, 3 subscribers\n"


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.yaml"
    path.write_text(VALID, encoding="utf-8")
    monkeypatch.setenv("NEWSLETTER_CONFIG", str(path))
    monkeypatch.setenv("NEWSLETTER_SECRET", "k" * 32)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert str(path) in result.output


def test_default_config_missing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEWSLETTER_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 2
    assert (
        result.output == "newsletter.yaml: no such file (pass -c FILE or set $NEWSLETTER_CONFIG)\n"
    )


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        out.append(prefix + key)
        for sub in (*typing.get_args(info.annotation), info.annotation):
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out += _keys(sub, f"{prefix}{key}.")
            for inner in typing.get_args(sub):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    out += _keys(inner, f"{prefix}{key}.")
    return out


def test_every_key_is_documented_in_the_example() -> None:
    """Each key of the schema appears in subscribers.example.yaml with a comment on its line
    or in a comment block naming it (the example is the reference)."""
    text = (ROOT / "subscribers.example.yaml").read_text()
    missing = []
    for path in _keys(config.Config):
        leaf = path.rsplit(".", 1)[-1]
        if not re.search(rf"^\s*#?\s*-?\s*{re.escape(leaf)}:", text, re.M) and not re.search(
            rf"#.*\b{re.escape(leaf)}\b", text
        ):
            missing.append(path)
    assert missing == []


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://papers.example.org", True),
        ("http://127.0.0.1:8025", True),
        ("http://localhost:8025", True),
        ("http://[::1]:8025", True),
        ("http://papers.example.org", False),
        ("ftp://papers.example.org", False),
    ],
)
def test_base_url_must_be_https_except_on_loopback(tmp_path: Path, url: str, ok: bool) -> None:
    text = f"newsletter:\n  base_url: {url}\n" + VALID
    if ok:
        path = tmp_path / "c.yaml"
        path.write_text(text)
        assert config.load(path).newsletter.base_url == url
    else:
        (line,) = problems(tmp_path, text)
        assert line.startswith("2: newsletter.base_url: must be")


def test_a_missing_templates_dir_is_named(tmp_path: Path) -> None:
    text = "newsletter:\n  templates_dir: my-templates\n" + VALID
    assert problems(tmp_path, text) == [
        f"2: newsletter.templates_dir: no such folder '{tmp_path / 'my-templates'}'"
    ]
    (tmp_path / "my-templates").mkdir()
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert config.load(path).templates_path == tmp_path / "my-templates"


def test_a_missing_ca_file_is_named(tmp_path: Path) -> None:
    text = "smtp:\n  ca_file: ca.pem\n" + VALID
    assert problems(tmp_path, text) == [f"2: smtp.ca_file: no such file '{tmp_path / 'ca.pem'}'"]


def test_a_term_without_a_letter_or_digit_is_refused(tmp_path: Path) -> None:
    text = VALID.replace("keywords: [diffusion]", 'keywords: [diffusion, "-"]')
    text += "  - email: bob@example.org\n    topics: [diffusion]\n    exclude: ['...']\n"
    assert problems(tmp_path, text) == [
        "3: topics.diffusion.keywords[1]: '-' has no letter or digit to match",
        "9: subscribers[1].exclude[0]: '...' has no letter or digit to match",
    ]


NAMED = """\
topics:
  diffusion:
    name: Diffusion models
    keywords: [diffusion]
  llm:
    keywords: [reasoning]
subscribers:
  - email: ada@example.org
    topics: [diffusion, llm]
"""


def test_a_topic_can_have_a_display_name(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(NAMED, encoding="utf-8")
    cfg = config.load(path)
    assert cfg.topic_names() == {"diffusion": "Diffusion models"}
    topics = cfg.topic_models()
    assert topics["diffusion"].display_name == "Diffusion models"
    assert topics["llm"].display_name is None
    assert cfg.subscriber_models()[0].topics == ("diffusion", "llm")  # still by slug


@pytest.mark.parametrize(
    ("diffusion", "llm", "problem"),
    [
        ("", "'  '", "must not be empty (leave it out to show the topic's key)"),
        ("", '"A\\nB"', "must be one line of printable text, got 'A\\nB'"),
        ("Diffusion", "Diffusion", "'Diffusion' is also what topic 'diffusion' is called"),
        ("", "diffusion", "'diffusion' is also what topic 'diffusion' is called"),
        ("", "Rising", "'Rising' is a heading of its own in the digest"),
    ],
)
def test_a_bad_display_name_is_named(
    tmp_path: Path, diffusion: str, llm: str, problem: str
) -> None:
    text = f"""\
topics:
  diffusion:
    name: {diffusion or "Diffusion models"}
    keywords: [diffusion]
  llm:
    name: {llm}
    keywords: [reasoning]
subscribers:
  - email: ada@example.org
    topics: [diffusion, llm]
"""
    if not diffusion:  # a comment keeps the lines where they are
        text = text.replace("    name: Diffusion models\n", "    # no name\n")
    found = problems(tmp_path, text)
    if diffusion:  # both are named alike: both are named
        assert (
            found[0] == "3: topics.diffusion.name: 'Diffusion' is also what topic 'llm' is called"
        )
        found = found[1:]
    assert found == [f"6: topics.llm.name: {problem}"]


def test_subject_placeholders_include_papers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text('newsletter:\n  subject: "{papers} ({count}) of {title}, {date}"\n' + VALID)
    assert config.load(path).newsletter.subject == "{papers} ({count}) of {title}, {date}"
    assert config.NewsletterSettings().subject == "{title}: {papers} for {date}"
    (line,) = problems(tmp_path, "newsletter:\n  subject: '{paper}'\n" + VALID)
    assert "use {title}, {papers}, {count} and {date}" in line


# What an RFC 2047 encoded word may hide: a line break that would start a Bcc: header
# (CVE-2024-6923), refused in every value that reaches a header, decoded or not.
EW = "=?utf-8?q?=0D=0ABcc:_evil@attacker.test?="
ONE_LINE = "a value that goes into an email header must be one line"
DECODED = "once its RFC 2047 encoded words (=?...?=) are decoded"


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        (f"newsletter:\n  title: '{EW}'\n", f"2: newsletter.title: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        ('newsletter:\n  title: "Papers\\r\\nBcc: x@y.org"\n', f"2: newsletter.title: contains a line break (CR); {ONE_LINE}"),
        ('newsletter:\n  title: "Papers\\0"\n', f"2: newsletter.title: contains a NUL character; {ONE_LINE}"),
        ("newsletter:\n  title: |\n    Two\n    lines\n", f"2: newsletter.title: contains a line break (LF); {ONE_LINE}"),
        ("newsletter:\n  title: '=?utf-8?b?UGFwZXJzDQpCY2M6IHhAeS5vcmc=?='\n", f"2: newsletter.title: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        ("newsletter:\n  title: '=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0A=3F=3D?='\n", f"2: newsletter.title: contains a line break (LF) {DECODED}; {ONE_LINE}"),
        (f"newsletter:\n  from: '{EW} <papers@example.org>'\n", f"2: newsletter.from: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        (f"newsletter:\n  from: '\"{EW}\" <papers@example.org>'\n", f"2: newsletter.from: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        ("newsletter:\n  from: '=?utf-8?q?=0A?=@example.org'\n", f"2: newsletter.from: contains a line break (LF) {DECODED}; {ONE_LINE}"),
        (f"newsletter:\n  subject: '{EW} {{count}}'\n", f"2: newsletter.subject: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        ('newsletter:\n  subject: "{title}\\n{count}"\n', f"2: newsletter.subject: contains a line break (LF); {ONE_LINE}"),
        ("newsletter:\n  title: '=?utf-8?q?'\n  subject: '{title}=0D?= {count}'\n", f"3: newsletter.subject: with the title, the subject contains a line break (CR) {DECODED}; {ONE_LINE}"),
        (f"newsletter:\n  base_url: 'https://papers.example.org/{EW}'\n", f"2: newsletter.base_url: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        (f"smtp:\n  bounce_address: '{EW}@example.org'\n", f"2: smtp.bounce_address: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        (f"subscribers:\n  - email: ada@example.org\n    name: '{EW}'\n    topics: [diffusion]\n", f"3: subscribers[0].name: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        ('subscribers:\n  - email: ada@example.org\n    name: "Ada\\r\\nBcc: x@y.org"\n    topics: [diffusion]\n', f"3: subscribers[0].name: contains a line break (CR); {ONE_LINE}"),
        (f"subscribers:\n  - email: '{EW}@example.org'\n    topics: [diffusion]\n", f"2: subscribers[0].email: contains a line break (CR) {DECODED}; {ONE_LINE}"),
        ('subscribers:\n  - email: "ada\\0@example.org"\n    topics: [diffusion]\n', f"2: subscribers[0].email: contains a NUL character; {ONE_LINE}"),
    ],
)  # fmt: skip
def test_no_header_value_holds_a_line_break(tmp_path: Path, yaml_text: str, problem: str) -> None:
    topics = "topics:\n  diffusion:\n    keywords: [diffusion]\n"
    if "subscribers:" not in yaml_text:
        yaml_text += "subscribers:\n  - email: ada@example.org\n    topics: [diffusion]\n"
    assert problems(tmp_path, yaml_text + topics) == [problem]


@pytest.mark.parametrize("command", [["check"], ["status"], ["send", "--dry-run"], ["run"]])
def test_every_command_refuses_a_hidden_line_break(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "c.yaml"
    offline = "sources:\n  huggingface:\n    base_url: http://127.0.0.1:9\n    retries: 0\n"
    path.write_text(f"newsletter:\n  title: '{EW}'\n" + offline + VALID, encoding="utf-8")
    result = CliRunner().invoke(
        cli, [*command, "-c", str(path)], env={"NEWSLETTER_SECRET": "k" * 32}
    )
    assert result.exit_code == 2
    assert (
        result.output
        == f"{path}:2: newsletter.title: contains a line break (CR) {DECODED}; {ONE_LINE}\n"
    )
    assert not (tmp_path / "newsletter.db").exists()


TOPIC = "topics:\n  diffusion:\n    keywords: [diffusion]\n"
SUBSCRIBER = "subscribers:\n  - email: ada@example.org\n    topics: [diffusion]\n"
TO_1, TO_YES = SUBSCRIBER.replace("diffusion", "'1'"), SUBSCRIBER.replace("diffusion", "'yes'")


@pytest.mark.parametrize(
    ("yaml_text", "problem"),
    [
        (f"topics:\n  1:\n    keywords: [x]\n{SUBSCRIBER}", "2: topics.1: YAML reads this name as int 1, not text; put it in quotes\n6: subscribers[0].topics[0]: unknown topic 'diffusion' (known: 1)"),
        (f"topics:\n  1:\n    keywords: [x]\n{TO_1}", "2: topics.1: YAML reads this name as int 1, not text; put it in quotes"),
        (f"topics:\n  yes:\n    keywords: [x]\n{TO_YES}", "2: topics.True: YAML reads this name as bool True, not text; put it in quotes\n6: subscribers[0].topics[0]: unknown topic 'yes' (known: True)"),
        (f"newsletter:\n  alert_after_days: {'9' * 5001}\n{TOPIC}{SUBSCRIBER}", "2: newsletter.alert_after_days: a number of 5001 digits is too long"),
        (f"{TOPIC}{SUBSCRIBER}    max_papers: {'1' * 5001}\n", "7: subscribers[0].max_papers: a number of 5001 digits is too long"),
        (f"schedule:\n  daily_at: 2024-02-30\n{TOPIC}{SUBSCRIBER}", "2: schedule.daily_at: YAML cannot read '2024-02-30' (day is out of range for month); put it in quotes"),
        (f"{TOPIC}{SUBSCRIBER}x: {'[' * 5000}{']' * 5000}\n", "7: yaml: nested more than 64 levels deep"),
        (f"{TOPIC}{SUBSCRIBER}x:\n" + "".join(f"{' ' * i}a:\n" for i in range(1, 5000)), "71: yaml: nested more than 64 levels deep"),
    ],
)  # fmt: skip
def test_yaml_values_it_cannot_read_are_one_line(
    tmp_path: Path, yaml_text: str, problem: str
) -> None:
    """Not an internal error: one FILE:LINE: key: message line and exit 2."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["check", "-c", str(path)])
    assert result.exit_code == 2
    assert [line.removeprefix(f"{path}:") for line in result.output.splitlines()] == problem.split(
        "\n"
    )


def test_parse_time() -> None:
    assert config.parse_time("08:00") == dt.time(8)
    assert config.parse_time("23:59:30") == dt.time(23, 59, 30)
    with pytest.raises(ValueError, match="HH:MM"):
        config.parse_time("8am")


def test_a_term_needs_a_character_that_str_isalnum_accepts_for_every_code_point() -> None:
    """The term check's pattern says what ``str.isalnum`` says, character by character."""
    import sys

    from newsletter.config import _ALNUM

    differ = [
        c for c in map(chr, range(sys.maxunicode + 1)) if bool(_ALNUM.search(c)) != c.isalnum()
    ]
    assert differ == []
