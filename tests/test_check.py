"""`newsletter check`: a preflight a cron job can trust, against real servers on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from newsletter.cli import cli
from newsletter.compose import templates
from tests.conftest import write_config
from tests.httpserver import FixtureServer
from tests.smtpserver import SmtpServer, free_port, make_test_ca, password_authenticator

KEY = "k" * 32
MAKE_KEY = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
LOGIN = "  username: mailer\n  password_env: TEST_SMTP_PASSWORD\n"


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEWSLETTER_SECRET", KEY)
    monkeypatch.delenv("TEST_SMTP_PASSWORD", raising=False)


def config(
    tmp_path: Path, *, hf_url: str = "http://127.0.0.1:9", smtp: str = "", newsletter: str = ""
) -> Path:
    path = write_config(tmp_path / "subs.yaml", hf_url=hf_url, extra=smtp)
    if newsletter:
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("  state: state.db\n", newsletter), encoding="utf-8")
    return path


def smtp_block(port: int, security: str = "none", extra: str = "") -> str:
    return (
        f"smtp:\n  host: 127.0.0.1\n  port: {port}\n  security: {security}\n  timeout: 5\n{extra}"
    )


def check(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["check", "-c", str(cfg), *args])


def test_a_good_file_passes(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    result = check(cfg)
    assert result.exit_code == 0, result.output
    assert result.output == f"{cfg}: ok: 3 topics, 3 subscribers\n"
    assert not (tmp_path / "state.db").exists()  # checked, not created


def test_the_sample_digests_are_rendered_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """For the problems and the warnings both (each rendering is ~0.1 s of a 1 s check)."""
    from newsletter import compose

    calls: list[Path | None] = []
    real = compose.check_templates

    def counted(templates_dir: Path | None) -> list[str]:
        calls.append(templates_dir)
        return real(templates_dir)

    monkeypatch.setattr(compose, "check_templates", counted)
    assert check(config(tmp_path)).exit_code == 0
    assert calls == [None]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "$NEWSLETTER_SECRET is not set"),
        ("", "$NEWSLETTER_SECRET is not set"),
        ("short", "$NEWSLETTER_SECRET is too short (5 bytes; at least 32)"),
    ],
)
def test_the_signing_key_must_be_set_and_strong(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
) -> None:
    if value is None:
        monkeypatch.delenv("NEWSLETTER_SECRET")
    else:
        monkeypatch.setenv("NEWSLETTER_SECRET", value)
    cfg = config(tmp_path)
    result = check(cfg)
    assert result.exit_code == 2, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"{cfg}: newsletter.secret_env: {expected}")
    assert MAKE_KEY in line


def test_the_smtp_password_variable_when_a_username_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = config(tmp_path, smtp=smtp_block(25, extra=LOGIN))
    result = check(cfg)
    assert result.exit_code == 2
    assert result.output == (
        f"{cfg}: smtp.password_env: $TEST_SMTP_PASSWORD is not set (smtp.username is 'mailer')\n"
    )
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    assert check(cfg).exit_code == 0


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("nowhere/state.db", "its folder {tmp}/nowhere does not exist"),
        ("a-file/state.db", "its folder {tmp}/a-file is not a folder"),
        ("a-folder", "not a file"),
    ],
)
def test_the_state_file_must_be_writable(tmp_path: Path, state: str, expected: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    cfg = config(tmp_path, newsletter=f"  state: {state}\n")
    result = check(cfg)
    assert result.exit_code == 2
    want = expected.format(tmp=tmp_path)  # every command refuses it: a config error, with its line
    assert result.output == f"{cfg}:5: newsletter.state: {tmp_path / state}: {want}\n"
    assert not (tmp_path / "nowhere").exists()


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder nobody can write to: a read-only tmpfs (root ignores permission bits)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "none", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_state_folder(tmp_path: Path, read_only_folder: Path) -> None:
    cfg = config(tmp_path, newsletter="  state: ro/state.db\n")
    result = check(cfg)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(
        f"{cfg}: newsletter.state: {read_only_folder / 'state.db'}: "
        f"its folder {read_only_folder} is not writable: "
    )


def test_a_broken_template_and_a_missing_key_are_both_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEWSLETTER_SECRET")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "_paper.txt.j2").write_text("{{ pick.why }}\n")
    cfg = config(tmp_path, newsletter="  state: state.db\n  templates_dir: mine\n")
    result = check(cfg)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert len(lines) == 2
    assert "newsletter.secret_env:" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'mine' / '_paper.txt.j2'}:1: ")


def test_an_unknown_template_name_is_a_warning(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    builtin = templates.builtin_templates_dir()
    (mine / "digest.htm.j2").write_text("misspelt: never used\n")
    # A partial of the operator's own, included by an override, is in use.
    card = (builtin / "_paper.txt.j2").read_text(encoding="utf-8")
    (mine / "_paper.txt.j2").write_text(card + '{% include "_extra.txt.j2" %}\n')
    (mine / "_extra.txt.j2").write_text("\n")
    cfg = config(tmp_path, newsletter="  state: state.db\n  templates_dir: mine\n")
    result = check(cfg)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [
        # Each recipient's text is rendered in full: their text blocks could differ.
        "warning: digest.txt.j2: cannot be rendered once for many recipients, so each one's "
        "email is rendered in full (slower): _paper.txt.j2 includes or imports another "
        "template (which may print the recipient)",
        f"warning: {mine / 'digest.htm.j2'}: not a template this program uses "
        "(_paper.html.j2, _paper.txt.j2, already.html.j2, already.txt.j2, confirm.html.j2, "
        "confirm.txt.j2, digest.html.j2, digest.txt.j2) "
        "and not included by one: it is ignored",
    ]
    assert result.output.endswith(": ok: 3 topics, 3 subscribers\n")


# -- check --connect --------------------------------------------------------------------


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A server that greets with 421 (busy) and hangs up: unreachable for now, not misconfigured."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"421 4.3.2 Too busy, try later\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


AUTH = dict(
    authenticator=password_authenticator("mailer", "s3cret"),
    auth_required=True,
    auth_require_tls=False,
)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_connect_logs_in_and_fetches_without_sending(
    tmp_path: Path, hf_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    with SmtpServer(**AUTH) as server:
        cfg = config(tmp_path, hf_url=hf_server.url, smtp=smtp_block(server.port, extra=LOGIN))
        result = check(cfg, "--connect")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == (
        f"smtp: ok: 127.0.0.1:{server.port}: EHLO, AUTH as 'mailer', QUIT (nothing sent)"
    )
    assert lines[1].startswith("huggingface: ok: 0 papers for ")
    assert lines[2] == f"{cfg}: ok: 3 topics, 3 subscribers"
    assert server.received == []
    assert len(hf_server.requests) == 1  # one source URL


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_rejected_login_is_a_configuration_error(
    tmp_path: Path, hf_server: FixtureServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    with SmtpServer(**AUTH) as server:
        cfg = config(tmp_path, hf_url=hf_server.url, smtp=smtp_block(server.port, extra=LOGIN))
        result = check(cfg, "--connect")
    assert result.exit_code == 2, result.output
    assert f"smtp: failed: 127.0.0.1:{server.port}: SMTP AUTH as 'mailer' refused: 535" in (
        result.output
    )


def test_an_untrusted_certificate_is_a_configuration_error(
    tmp_path: Path, hf_server: FixtureServer
) -> None:
    _, context = make_test_ca(tmp_path)  # the server's CA, not given as smtp.ca_file
    with SmtpServer(tls_context=context, require_starttls=True) as server:
        smtp = smtp_block(server.port, security="starttls")
        cfg = config(tmp_path, hf_url=hf_server.url, smtp=smtp)
        result = check(cfg, "--connect")
        assert result.exit_code == 2, result.output
        assert "smtp: failed: " in result.output
        assert "TLS certificate not trusted (smtp.ca_file?)" in result.output
        ca_file = tmp_path / "ca.pem"
        trusted = smtp_block(server.port, security="starttls", extra=f"  ca_file: {ca_file}\n")
        cfg = config(tmp_path, hf_url=hf_server.url, smtp=trusted)
        ok = check(cfg, "--connect")
        assert ok.exit_code == 0, ok.output
        assert "EHLO, STARTTLS, QUIT (nothing sent)" in ok.output


def test_a_refused_connection_or_a_busy_greeting_is_exit_1(
    tmp_path: Path, hf_server: FixtureServer, busy_port: int
) -> None:
    closed = free_port()
    refused = check(config(tmp_path, hf_url=hf_server.url, smtp=smtp_block(closed)), "--connect")
    assert refused.exit_code == 1, refused.output
    assert refused.output.startswith(f"smtp: failed: 127.0.0.1:{closed}: cannot connect")
    busy = check(config(tmp_path, hf_url=hf_server.url, smtp=smtp_block(busy_port)), "--connect")
    assert busy.exit_code == 1, busy.output
    assert busy.output.startswith(f"smtp: failed: 127.0.0.1:{busy_port}: 421 4.3.2 Too busy")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_an_unreachable_source_is_exit_1_and_the_higher_code_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SmtpServer(**AUTH) as server:
        cfg = config(tmp_path, smtp=smtp_block(server.port))  # no login: accepted as is
        result = check(cfg, "--connect")
        assert result.exit_code == 1, result.output
        assert "huggingface: failed: http://127.0.0.1:9/api/daily_papers" in result.output
        monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
        cfg = config(tmp_path, smtp=smtp_block(server.port, extra=LOGIN))
        both = check(cfg, "--connect")
    assert both.exit_code == 2, both.output  # a refused login (2) and a source down (1)
    assert "smtp: failed:" in both.output and "huggingface: failed:" in both.output
