"""``newsletter inbound``: the 259 real reports of ../shared/bounces through the command
(``--dry-run --json``, in process), the issue's four figures, and the MTA's exit codes in real
subprocesses (0 for anything understood or ignored, 75 for a failure of ours).

The command never sees ``expected.json`` nor a file name: only this test does, to count. Each
report's recipients are subscribers of the state it runs against, so "suppresses nothing" is
tested against a store where suppressing would have been possible.

Print the figures: ``python -m tests.test_inbound_cli``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
from click.testing import CliRunner

from newsletter.cli import cli
from newsletter.inbound import verp_address
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from tests import inbound_mail as mail
from tests.test_inbound_verdict import BOUNCES, _expected
from tests.test_state_file import read_only

KEY = "inbound-cli-test-key-of-at-least-32-bytes"
ENV = {**os.environ, "NEWSLETTER_SECRET": KEY}
NOW = dt.datetime(2026, 5, 8, tzinfo=dt.UTC)


def write_config(folder: Path, extra: str = "") -> Path:
    path = folder / "c.yaml"
    path.write_text(
        f"""\
newsletter:
  from: "Papers <papers@example.org>"
  state: state.db
smtp:
  bounce_address: bounces@example.org
{extra}topics:
  ml:
    keywords: [learning]
subscribers: []
""",
        encoding="utf-8",
    )
    return path


def invoke(cfg: Path, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli, ["inbound", "-c", str(cfg), *args], input=stdin, env={"NEWSLETTER_SECRET": KEY}
    )
    return result.exit_code, result.stdout, result.stderr


def subprocess_inbound(
    cfg: Path, *args: str, stdin: bytes, env: dict[str, str] = ENV
) -> tuple[int, str, str]:
    """``newsletter inbound`` as an MTA's pipe runs it: a process, the message on stdin."""
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "inbound", "-c", str(cfg), *args],
        input=stdin,
        env=env,
        capture_output=True,
        timeout=120,
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@cache
def _corpus(folder: str) -> dict[str, dict[str, object]]:
    """Every report through ``inbound --dry-run --json``, against a state in which everyone
    any report names is a subscriber (a first pass finds them)."""
    cfg = write_config(Path(folder))
    names = sorted(_expected())
    first = {name: _json(cfg, name) for name in names}
    named = {str(a).casefold() for out in first.values() for a in out["recipients"]}  # type: ignore[attr-defined]
    with SqliteStore(Path(folder) / "state.db") as store:
        for address in sorted(named):
            record = SubscriberRecord(email=address, topics=("ml",), status="active", source="cli")
            store.add_subscriber(record, now=NOW)
    return {name: _json(cfg, name) for name in names}


def _json(cfg: Path, name: str) -> dict[str, object]:
    code, out, err = invoke(cfg, "--dry-run", "--json", stdin=(BOUNCES / name).read_bytes())
    assert code == 0, f"{name}: exit {code}: {err}"
    assert err == "", f"{name}: {err}"
    result: dict[str, object] = json.loads(out)
    assert set(result) == {"kind", "permanent", "recipients", "status", "action"}
    return result


def figures(results: dict[str, dict[str, object]]) -> dict[str, tuple[int, int]]:
    """Per category, (files as the issue wants them, files)."""
    counts: dict[str, list[int]] = {}
    for name, category in _expected().items():
        out = results[name]
        ok = {
            "hard": out["permanent"] is True,
            "soft": out["permanent"] is not True,
            "complaint": out["kind"] == "complaint",
        }.get(category, out["action"] == "none")
        tally = counts.setdefault(category, [0, 0])
        tally[0] += ok
        tally[1] += 1
    return {c: (n[0], n[1]) for c, n in counts.items()}


def describe(f: dict[str, tuple[int, int]]) -> str:
    (hard, nh), (soft, ns), (comp, nc) = f["hard"], f["soft"], f["complaint"]
    quiet = f["auto-reply"][0] + f["not-a-failure"][0]
    quiet_of = f["auto-reply"][1] + f["not-a-failure"][1]
    return (
        f"hard -> permanent {hard}/{nh} ({hard / nh:.1%}), "
        f"soft -> permanent {ns - soft}/{ns} ({(ns - soft) / ns:.1%}), "
        f"complaints {comp}/{nc} ({comp / nc:.1%}), "
        f"auto-replies and successes that change nothing {quiet}/{quiet_of}"
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    return _corpus(str(tmp_path_factory.mktemp("corpus")))


def test_the_issue_figures_through_the_command(corpus: dict[str, dict[str, object]]) -> None:
    f = figures(corpus)
    print(describe(f))
    hard, soft, complaint = f["hard"], f["soft"], f["complaint"]
    assert hard[0] / hard[1] >= 0.85, describe(f)
    assert (soft[1] - soft[0]) / soft[1] <= 0.10, describe(f)
    assert complaint[0] / complaint[1] >= 0.85, describe(f)
    for category in ("auto-reply", "not-a-failure"):
        assert f[category][0] == f[category][1], describe(f)


def test_the_dry_run_says_what_would_happen_to_subscribers(
    corpus: dict[str, dict[str, object]],
) -> None:
    actions = Counter((_expected()[n], out["action"]) for n, out in corpus.items())
    # Everyone named is a subscriber: a hard bounce would suppress, a soft one be counted.
    assert actions[("hard", "suppressed")] >= 0.85 * sum(
        1 for c in _expected().values() if c == "hard"
    )
    assert actions[("soft", "counted")] > actions[("soft", "suppressed")]
    assert actions[("complaint", "suppressed")] >= 1
    assert not [
        n
        for n, out in corpus.items()
        if out["action"] not in {"none"} and _expected()[n] in ("auto-reply", "not-a-failure")
    ]


def test_a_real_bounce_in_a_real_process_suppresses_and_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    with SqliteStore(tmp_path / "state.db") as store:
        ada = store.add_subscriber(
            SubscriberRecord(
                email="ada@example.org", topics=("ml",), status="active", source="cli"
            ),
            now=NOW,
        )
    to = verp_address("bounces@example.org", 1, ada.id, KEY.encode())
    code, out, err = subprocess_inbound(
        cfg, "--envelope-to", to, "--json", stdin=mail.dsn(to, "ada@example.org")
    )
    assert (code, err) == (0, ""), err
    assert json.loads(out)["action"] == "suppressed"
    with SqliteStore(tmp_path / "state.db", read_only=True) as store:
        record = store.subscriber_by_email("ada@example.org")
        assert record is not None and record.status == "bounced"


def test_garbage_is_understood_as_nothing_and_exits_0(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    for raw in (
        b"",
        b"\x00\xff" * 1000,
        b"Subject: hello\n\nhi\n",
        mail.auto_reply("x@example.org"),
    ):
        code, out, err = invoke(cfg, "--json", stdin=raw)
        assert (code, err) == (0, ""), err
        assert json.loads(out)["action"] == "none"


def test_an_unwritable_state_exits_75_with_one_line(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    state = tmp_path / "state.db"
    with SqliteStore(state) as store:
        ada = store.add_subscriber(
            SubscriberRecord(
                email="ada@example.org", topics=("ml",), status="active", source="cli"
            ),
            now=NOW,
        )
    sqlite3.connect(state).execute("PRAGMA journal_mode=DELETE").fetchone()
    to = verp_address("bounces@example.org", 1, ada.id, KEY.encode())
    with read_only(state):
        code, out, err = subprocess_inbound(
            cfg, "--envelope-to", to, stdin=mail.dsn(to, "ada@example.org")
        )
    assert code == 75, out + err
    assert len(err.splitlines()) == 1 and str(state) in err, err
    with SqliteStore(state, read_only=True) as store:
        record = store.subscriber_by_email("ada@example.org")
        assert record is not None and record.status == "active"  # the MTA will try again


@pytest.mark.parametrize(
    ("extra", "env", "expected"),
    [
        ("inbound:\n  soft_bounces: 0\n", ENV, "c.yaml:7: inbound.soft_bounces: "),
        (
            "inbound:\n  imap:\n    host: mail.example.org\n",
            ENV,
            "c.yaml:8: inbound.imap.username: ",
        ),
        ("", {k: v for k, v in ENV.items() if k != "NEWSLETTER_SECRET"}, "newsletter.secret_env"),
    ],
)
def test_a_bad_config_exits_75_naming_the_key(
    tmp_path: Path, extra: str, env: dict[str, str], expected: str
) -> None:
    cfg = write_config(tmp_path, extra)
    code, _, err = subprocess_inbound(
        cfg, stdin=mail.dsn("bounces@example.org", "ada@example.org"), env=env
    )
    assert code == 75, err
    assert expected in err and len(err.splitlines()) == 1, err


def test_bad_inbound_keys_exit_2_elsewhere(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "inbound:\n  soft_days: 0\n  poll_minutes: -1\n")
    result = CliRunner().invoke(cli, ["status", "-c", str(cfg)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"{cfg}:7: inbound.soft_days: input should be greater than or equal to 1, got 0",
        f"{cfg}:8: inbound.poll_minutes: input should be greater than 0, got -1",
    ]


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        print(describe(figures(_corpus(folder))))
