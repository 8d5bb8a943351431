"""``newsletter check``: what a run will need, checked before a cron job finds out.

Each check gives one line for the operator: ``problems`` (exit 2: the configuration cannot
work), ``warnings`` (exit 0) and, with ``--connect``, ``connect_lines`` (the SMTP server as a
send would see it, and one source). Nothing here writes the state or sends a message. The
command (``check.py``) imports this module when it runs: it loads Jinja and the SMTP client.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import jinja2
import jinja2.meta

from newsletter import compose, wiring
from newsletter.compose import templates
from newsletter.config import Config, state_path_problem
from newsletter.errors import ConfigError, SendError, TemplateError
from newsletter.web import tokens

if TYPE_CHECKING:
    from newsletter.deliver import SmtpSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def problems(config: Config) -> tuple[list[str], list[str]]:
    """One ``FILE: key: message`` line per thing a run would fail on; and the templates'
    warnings (``compose.check_templates``'s, for ``warnings``: they are rendered once)."""
    found: list[str] = []
    rendered: list[str] = []
    key = tokens.key_problem(config.newsletter.secret_env)
    if key is not None:
        found.append(f"{config.path}: newsletter.secret_env: {key}")
    password = wiring.password_problem(config)
    if password is not None:
        found.append(password)
    if config.state_url is not None:
        from newsletter.store import _postgres, shown_url

        _postgres(config.state_url)  # psycopg is there
        from newsletter.store.postgres import connect_problem

        state = connect_problem(config.state_url, wiring.state_password(config))
        where = shown_url(config.state_url)
    else:
        state, where = state_problem(config.state_path), str(config.state_path)
    if state is not None:
        found.append(f"{config.path}: newsletter.state: {where}: {state}")
    try:
        rendered = compose.check_templates(config.templates_path)
    except TemplateError as e:
        found.append(str(e))
    if config.archive.enabled:
        from newsletter.web.publish import ArchiveSite

        try:
            ArchiveSite.from_config(config).check_templates()
        except TemplateError as e:
            found.append(str(e))
    try:
        compose.load_masthead(config)  # a DKIM key that cannot sign
    except ConfigError as e:
        found.extend(e.problems)
    return found, rendered


def state_problem(path: Path) -> str | None:
    """Why a send could not write the state file, or None.

    Tried for real (as root, permission bits say little): the file opened for writing, a
    scratch file made and removed in its folder, where SQLite keeps its journal.
    """
    shape = state_path_problem(path)  # the config refuses these already, for every command
    if shape is not None:
        return shape
    if path.exists():
        try:
            with open(path, "r+b"):
                pass
        except OSError as e:
            return f"cannot be written: {e.strerror or e}"
    folder = path.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        return f"its folder {folder} is not writable: {e.strerror or e}"
    return None


def warnings(config: Config, rendered: Iterable[str]) -> Iterator[str]:
    """A template each recipient's email is rendered from in full (slower: ``rendered``,
    from ``problems``); a file in ``templates_dir`` that no template uses: most likely a
    misspelt name."""
    yield from rendered
    own = config.templates_path
    if own is None or not own.is_dir():
        return
    builtin = sorted(
        p.name for p in templates.builtin_templates_dir().iterdir() if p.name.endswith(".j2")
    )
    files = sorted(p.name for p in own.iterdir() if p.is_file() and not p.name.startswith("."))
    included = _included(templates.make_env(own), [*builtin, *files])
    for name in files:
        if name not in builtin and name not in included:
            yield (
                f"{own / name}: not a template this program uses ({', '.join(builtin)}) "
                "and not included by one: it is ignored"
            )


def _included(env: jinja2.Environment, names: list[str]) -> set[str]:
    """Names that the templates ``names`` include, import or extend (as loaded by ``env``)."""
    found: set[str] = set()
    for name in names:
        try:
            source = env.loader.get_source(env, name)[0] if env.loader else ""
            found.update(n for n in jinja2.meta.find_referenced_templates(env.parse(source)) if n)
        except (jinja2.TemplateError, OSError, UnicodeDecodeError):
            continue  # a broken template is reported by check_templates
    return found


def smtp_line(settings: SmtpSettings) -> tuple[str, int]:
    """Connect, TLS and AUTH as a send would, then QUIT: one line and its exit code."""
    from newsletter.deliver import SendAborted, SmtpSender  # the SMTP client: only --connect

    steps = ["EHLO"]
    if settings.security == "starttls":
        steps.append("STARTTLS")
    elif settings.security == "tls":
        steps.insert(0, "TLS")
    if settings.username:
        steps.append(f"AUTH as {settings.username!r}")
    try:
        SmtpSender(settings).probe()
    except SendAborted as e:  # the server refuses this configuration
        return f"smtp: failed: {e}", EXIT_USAGE
    except SendError as e:  # cannot be reached now
        return f"smtp: failed: {e}", EXIT_FAILED
    return f"smtp: ok: {settings.where}: {', '.join(steps)}, QUIT (nothing sent)", EXIT_OK


def connect_lines(config: Config) -> Iterator[tuple[str, int]]:
    """One line and exit code for the SMTP server, then one for the first source."""
    from newsletter import sources  # the HTML parsers: only with --connect

    try:
        settings = wiring.smtp_settings(config)
    except ConfigError:  # reported with the other problems
        yield (
            f"smtp: skipped: {config.smtp.host}:{config.smtp.port}: no password to log in with",
            EXIT_USAGE,
        )
    else:
        yield smtp_line(settings)
    with sources.open_sources(config.sources) as found:
        if not found:
            yield "sources: skipped: huggingface and arxiv are both disabled", EXIT_OK
            return
        report = sources.fetch_period(found[:1], sources.Period.day(dt.datetime.now(dt.UTC).date()))
    for status in report.statuses:
        yield status.line(), EXIT_OK if status.ok else EXIT_FAILED
