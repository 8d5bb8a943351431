"""The operator's readers commands (``newsletter subscribers add/import/export/remove/list``)
in subprocesses, against a real SQLite file and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import csv
import datetime as dt
import email
import email.policy
import io
import json
import os
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.web import tokens
from tests.conftest import fixture_path
from tests.smtpserver import Faults, SmtpServer

SAVED = "hf_api_daily_papers_date_2026-05-08_37papers.json"

SECRET = "test-signing-key-of-at-least-32-bytes"


def make_config(tmp_path: Path, port: int = 9, *, signup: bool = True, extra: str = "") -> Path:
    path = tmp_path / "newsletter.yaml"
    path.write_text(
        f"""\
newsletter:
  title: Trending Papers
  from: "Trending Papers <papers@example.org>"
  base_url: https://papers.example.org
  state: state.db
smtp:
  host: 127.0.0.1
  port: {port}
  security: none
  retry_backoff: 0
  max_retries: 0
  timeout: 10
signup:
  enabled: {str(signup).lower()}
  confirm_hours: 24
  defaults:
    timezone: Europe/Paris
    max_papers: 5
topics:
  llm:
    keywords: [language model]
  agents:
    keywords: [agent]
  vision:
    keywords: [image]
subscribers:
  - email: file@example.org
    topics: [llm]
{extra}""",
        encoding="utf-8",
    )
    return path


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "newsletter", "subscribers", args[0], "-c", str(cfg), *args[1:]],
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(tmp_path: Path) -> dict[str, tuple[str, str, tuple[str, ...], str]]:
    """email -> (status, source, topics, cadence) in the state file."""
    with SqliteStore(tmp_path / "state.db", read_only=True) as store:
        return {
            r.email: (r.status, r.source, r.topics, r.cadence)
            for r in store.subscribers()
            if r.source != "config"
        }


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_add_without_confirmed_mails_a_confirmation_link_for_a_pending_row(
    tmp_path: Path,
) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port)
        result = cli(cfg, "add", "Ada@Example.org", "--topics", "llm,agents", "--name", "Ada")
        assert result.returncode == 0, result.stderr
        assert "pending" in result.stdout and "24 hours" in result.stdout
    [received] = server.received
    assert received.rcpt_tos == ["Ada@Example.org"]
    msg = parsed(received.data)
    assert msg["Subject"] == "Confirm your subscription to Trending Papers"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "Ada," not in text and "Ada " not in text  # the name is not in it: only the address
    [url] = re.findall(r"https://papers\.example\.org/confirm/(\S+)", text)
    with SqliteStore(tmp_path / "state.db", read_only=True) as store:
        row = store.subscriber_by_email("ada@example.org")
        assert row is not None
        assert (row.status, row.source, row.topics, row.name) == (
            "pending",
            "cli",
            ("llm", "agents"),
            "Ada",
        )
        assert (row.timezone, row.max_papers) == ("Europe/Paris", 5)  # signup.defaults
        # The page will send no other sign-up email to this address today.
        assert (
            store.signup_mail_since("ada@example.org", row.created_at or dt.datetime.now(dt.UTC))
            == 1
        )
    now = dt.datetime.now(dt.UTC)
    claim = tokens.read_token(SECRET.encode(), url, "confirm", now)
    assert claim is not None and claim.subscriber_id == row.id
    assert claim.expires is not None
    assert dt.timedelta(hours=23) < claim.expires - now <= dt.timedelta(hours=24)
    assert "ada" not in url.lower()


def test_add_confirmed_is_active_at_once_and_sends_nothing(tmp_path: Path) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port, signup=False)
        result = cli(
            cfg,
            "add",
            "ada@example.org",
            "--topics",
            "vision",
            "--cadence",
            "weekly",
            "--confirmed",
        )
        assert result.returncode == 0, result.stderr
    assert server.received == []
    assert rows(tmp_path) == {"ada@example.org": ("active", "cli", ("vision",), "weekly")}
    listed = cli(cfg, "list").stdout
    assert re.search(r"ada@example\.org\s+active\s+cli\s", listed), listed
    assert re.search(r"file@example\.org\s+active\s+config\s", listed), listed


def test_add_refuses_what_it_cannot_do_with_one_line_and_exit_2(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, signup=False)
    for args, message in [
        (
            ["not-an-address", "--topics", "llm"],
            "newsletter: EMAIL: invalid email address 'not-an-address'\n",
        ),
        (
            ["a@example.org", "--topics", "llm,difusion"],
            "newsletter: --topics: unknown topic 'difusion' (known: agents, llm, vision)\n",
        ),
        (["a@example.org", "--topics", "llm", "--name", "=?utf-8?q?A=0D=0AB?="], None),
        (
            ["FILE@example.org", "--topics", "llm"],
            f"newsletter: FILE@example.org is in {cfg}: its settings come from there\n",
        ),
        (["a@example.org", "--topics", "llm"], None),  # no --confirmed, sign-up pages off
    ]:
        result = cli(cfg, "add", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        if message is not None:
            assert result.stderr == message
    assert "signup.enabled is false" in result.stderr
    assert not (tmp_path / "state.db").exists() or rows(tmp_path) == {}


def test_add_twice_says_so_and_a_pending_one_gets_the_email_again(tmp_path: Path) -> None:
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port)
        assert cli(cfg, "add", "a@example.org", "--topics", "llm").returncode == 0
        again = cli(cfg, "add", "a@example.org", "--topics", "agents")
        assert again.returncode == 0, again.stderr
        assert len(server.received) == 2
        assert rows(tmp_path)["a@example.org"][2] == ("agents",)
        assert cli(cfg, "add", "a@example.org", "--topics", "llm", "--confirmed").returncode == 0
        active = cli(cfg, "add", "a@example.org", "--topics", "llm", "--confirmed")
    assert active.returncode == 2
    assert active.stderr.startswith("newsletter: a@example.org: already a subscriber (active)")
    assert rows(tmp_path)["a@example.org"][0] == "active"


def test_a_confirmation_that_cannot_be_sent_exits_1_and_leaves_the_row_pending(
    tmp_path: Path,
) -> None:
    with SmtpServer(Faults(reject={"a@example.org"})) as server:
        cfg = make_config(tmp_path, server.port)
        result = cli(cfg, "add", "a@example.org", "--topics", "llm")
    assert result.returncode == 1
    # The state file is new (one line says so); then one line for the email.
    [_, line] = result.stderr.splitlines()
    assert line.startswith("newsletter: a@example.org: the confirmation email was not sent: 550")
    assert rows(tmp_path)["a@example.org"][0] == "pending"


def test_import_reports_every_bad_row_and_imports_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, signup=False)
    assert cli(cfg, "add", "old@example.org", "--topics", "llm", "--confirmed").returncode == 0
    assert cli(cfg, "add", "gone@example.org", "--topics", "llm", "--confirmed").returncode == 0
    assert cli(cfg, "remove", "gone@example.org").returncode == 0
    data = tmp_path / "readers.csv"
    data.write_text(
        "email,name,topics,cadence\n"
        "good@example.org,Good,llm;agents,weekly\n"  # 2: fine
        "bad-address,,llm,\n"  # 3
        "x@example.org,,llm;difusion,daily\n"  # 4
        "y@example.org,,,daily\n"  # 5
        "z@example.org,,llm,monthly\n"  # 6
        "GOOD@example.org,,llm,\n"  # 7: the same as line 2
        "old@example.org,,llm,\n"  # 8: in the store
        "gone@example.org,,llm,\n"  # 9: removed
        "file@example.org,,llm,\n"  # 10: the config file's
        "w@example.org,,llm\n"  # 11: three fields
        "\n"
        '"v@example.org","V\nW",llm,daily\n',  # 13-14: a line break in a name
        encoding="utf-8",
    )
    result = cli(cfg, "import", str(data), "--confirmed")
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines == [
        f"{data}:3: email: invalid email address 'bad-address'",
        f"{data}:4: topics: unknown topic 'difusion' (known: agents, llm, vision)",
        f"{data}:5: topics: none given (topics are separated by ';')",
        f"{data}:6: cadence: 'monthly' is neither daily nor weekly",
        f"{data}:7: email: GOOD@example.org is on line 2 already",
        f"{data}:8: email: old@example.org is already a subscriber (active)",
        f"{data}:9: email: gone@example.org was removed from this newsletter; add it again "
        "only on purpose (`newsletter subscribers add --again`)",
        f"{data}:10: email: file@example.org is in {cfg}: its settings come from there",
        f"{data}:11: 3 fields, the header has 4",
        f"{data}:14: name: contains a line break (LF); a value that goes into an email "
        "header must be one line",
        f"newsletter: {data}: 10 problem(s); nothing imported",
    ]
    assert rows(tmp_path).keys() == {"old@example.org"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "1: no header (expected email,name,topics,cadence)"),
        (b"email,name,topic\n", "1: unknown column 'topic' (expected email,name,topics,cadence)"),
        (b"email,topics\n\xff@example.org,llm\n", "2: not UTF-8 text (byte 14)"),
    ],
)
def test_import_of_a_file_that_is_no_list(tmp_path: Path, content: bytes, message: str) -> None:
    cfg = make_config(tmp_path, signup=False)
    data = tmp_path / "readers.csv"
    data.write_bytes(content)
    result = cli(cfg, "import", str(data))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"{data}:{message}"


def test_import_without_confirmed_mails_each_reader(tmp_path: Path) -> None:
    data = tmp_path / "readers.csv"
    data.write_text(
        "\ufeffemail,name,topics,cadence\na@example.org,,llm,\nb@example.org,Bé,agents;llm,weekly\n",
        encoding="utf-8",
    )
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port)
        result = cli(cfg, "import", str(data))
        assert result.returncode == 0, result.stderr
    assert sorted(r.rcpt_tos[0] for r in server.received) == ["a@example.org", "b@example.org"]
    assert rows(tmp_path) == {
        "a@example.org": ("pending", "import", ("llm",), "daily"),
        "b@example.org": ("pending", "import", ("agents", "llm"), "weekly"),
    }
    assert "imported 2 readers (2 pending)" in result.stdout


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_imports_back_and_keeps_opt_outs(tmp_path: Path, fmt: str) -> None:
    first = tmp_path / "first"
    first.mkdir()
    cfg = make_config(first, signup=False)
    for address, topics in [("a@example.org", "llm"), ("b@example.org", "agents,vision")]:
        assert (
            cli(cfg, "add", address, "--topics", topics, "--confirmed", "--name", "Bé Ö").returncode
            == 0
        )
    assert cli(cfg, "unsubscribe", "b@example.org").returncode == 0
    exported = cli(cfg, "export", "--format", fmt)
    assert exported.returncode == 0, exported.stderr
    if fmt == "json":
        objects = json.loads(exported.stdout)
        assert [o["email"] for o in objects] == [
            "a@example.org",
            "b@example.org",
            "file@example.org",
        ]
        assert objects[1] | {"created_at": None, "updated_at": None, "confirmed_at": None} == {
            "email": "b@example.org",
            "name": "Bé Ö",
            "topics": ["agents", "vision"],
            "cadence": "daily",
            "status": "unsubscribed",
            "source": "cli",
            "created_at": None,
            "confirmed_at": None,
            "updated_at": None,
        }
        assert dt.datetime.fromisoformat(objects[0]["confirmed_at"]).tzinfo is not None
        # As a CSV, to import it back.
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["email", "name", "topics", "cadence", "status"])
        for o in objects:
            writer.writerow(
                [o["email"], o["name"] or "", ";".join(o["topics"]), o["cadence"], o["status"]]
            )
        text = out.getvalue()
    else:
        text = exported.stdout
        assert text.splitlines()[0] == (
            "email,name,topics,cadence,status,source,created_at,confirmed_at,updated_at"
        )
    second = tmp_path / "second"
    second.mkdir()
    # The other installation's file lists nobody (file@ is one more reader there).
    cfg2 = make_config(second, signup=False)
    cfg2.write_text(cfg2.read_text(encoding="utf-8").split("subscribers:")[0], encoding="utf-8")
    (second / "readers.csv").write_text(text, encoding="utf-8")
    result = cli(cfg2, "import", str(second / "readers.csv"), "--confirmed")
    assert result.returncode == 0, result.stderr
    assert rows(second) == {
        "a@example.org": ("active", "import", ("llm",), "daily"),
        "b@example.org": ("unsubscribed", "import", ("agents", "vision"), "daily"),
        "file@example.org": ("active", "import", ("llm",), "daily"),
    }
    with SqliteStore(second / "state.db", read_only=True) as store:
        b = store.subscriber_by_email("b@example.org")
        assert b is not None and b.name == "Bé Ö"


def test_remove_keeps_only_a_hash_and_add_again_brings_them_back(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, signup=False)
    assert (
        cli(
            cfg, "add", "ada@example.org", "--topics", "llm", "--confirmed", "--name", "Ada"
        ).returncode
        == 0
    )
    result = cli(cfg, "remove", "Ada@example.org")
    assert result.returncode == 0, result.stderr
    assert "only a keyed hash" in result.stdout
    raw = (tmp_path / "state.db").read_bytes()
    for wal in tmp_path.glob("state.db-*"):
        raw += wal.read_bytes()
    assert b"ada@example.org" not in raw.lower() and b"Ada" not in raw
    assert rows(tmp_path) == {}
    by_mistake = cli(cfg, "add", "ada@example.org", "--topics", "llm", "--confirmed")
    assert by_mistake.returncode == 2
    assert "add it again only on purpose" in by_mistake.stderr
    on_purpose = cli(cfg, "add", "ada@example.org", "--topics", "llm", "--confirmed", "--again")
    assert on_purpose.returncode == 0, on_purpose.stderr
    assert rows(tmp_path) == {"ada@example.org": ("active", "cli", ("llm",), "daily")}
    unknown = cli(cfg, "remove", "nobody@example.org")
    assert unknown.returncode == 0 and "not a subscriber here" in unknown.stdout


def _add(store: SqliteStore, address: str, status: str, source: str, when: dt.datetime) -> None:
    store.add_subscriber(
        SubscriberRecord(address, ("llm",), status=status, source=source, created_at=when),  # type: ignore[arg-type]
    )


def test_status_counts_every_reader_not_only_the_files(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, signup=False)
    now = dt.datetime.now(dt.UTC)
    with SqliteStore(tmp_path / "state.db") as store:
        for address, status, source in [
            ("active@example.org", "active", "web"),
            ("paused@example.org", "paused", "web"),
            ("unsub@example.org", "unsubscribed", "cli"),
            ("bounced@example.org", "bounced", "import"),
            ("complained@example.org", "complained", "web"),
            ("pending@example.org", "pending", "web"),
            ("left-the-file@example.org", "active", "config"),  # nobody's: not counted
            ("FILE@example.org", "paused", "web"),  # the file's: counted once, as the file's
        ]:
            _add(store, address, status, source, now)
    result = subprocess.run(
        [sys.executable, "-m", "newsletter", "status", "-c", str(cfg)],
        env={**os.environ, "NEWSLETTER_SECRET": SECRET},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (
        "subscribers: 1 active, 1 unsubscribed, 1 bounced, 2 paused, 1 complained, "
        "1 pending confirmation\n"
    ) in result.stdout


@pytest.mark.parametrize("command", ["send", "run"])
def test_send_and_run_purge_sign_ups_never_confirmed(tmp_path: Path, command: str) -> None:
    now = dt.datetime.now(dt.UTC)
    with SmtpServer() as server:
        cfg = make_config(tmp_path, server.port)
        if command == "run":  # nobody due whatever the time: no fetch from the network
            cfg.write_text(cfg.read_text(encoding="utf-8").split("subscribers:")[0])
        with SqliteStore(tmp_path / "state.db") as store:
            _add(store, "stale@example.org", "pending", "web", now - dt.timedelta(hours=25))
            _add(store, "fresh@example.org", "pending", "web", now - dt.timedelta(hours=23))
        args = (
            ["--from", str(fixture_path(SAVED)), "--date", "2026-05-08"]
            if command == "send"
            else []
        )
        result = subprocess.run(
            [sys.executable, "-m", "newsletter", command, "-c", str(cfg), *args],
            env={**os.environ, "NEWSLETTER_SECRET": SECRET},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
    assert rows(tmp_path) == {"fresh@example.org": ("pending", "web", ("llm",), "daily")}
    # Neither was mailed a digest.
    assert {r.rcpt_tos[0] for r in server.received} <= {"file@example.org"}


def test_unsubscribe_and_resubscribe_work_on_a_readers_status(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, signup=False)
    now = dt.datetime.now(dt.UTC)
    with SqliteStore(tmp_path / "state.db") as store:
        _add(store, "reader@example.org", "active", "web", now)
        _add(store, "paused@example.org", "paused", "web", now)
        _add(store, "pending@example.org", "pending", "web", now)
    done = cli(cfg, "unsubscribe", "Reader@example.org")
    assert done.returncode == 0, done.stderr
    assert rows(tmp_path)["reader@example.org"][0] == "unsubscribed"
    for address in ("reader@example.org", "paused@example.org"):
        again = cli(cfg, "resubscribe", address)
        assert again.stdout == f"{address}: active again\n", again.stderr
        assert rows(tmp_path)[address][0] == "active"
    pending = cli(cfg, "resubscribe", "pending@example.org")
    assert "has not confirmed yet" in pending.stdout
    assert rows(tmp_path)["pending@example.org"][0] == "pending"
