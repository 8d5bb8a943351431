"""``newsletter check``: the preflight (``preflight.py``), one line per problem."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from newsletter.cli.common import EXIT_OK, EXIT_USAGE, config_option, handles_errors, load_config


@click.command()
@config_option
@click.option(
    "--connect",
    is_flag=True,
    help="Also log in to the SMTP server as a send would (then QUIT, sending nothing) "
    "and fetch one source URL.",
)
@handles_errors
def check(config_path: Path, connect: bool) -> None:
    """Preflight: validate the config file and what a run will need.

    Besides the file: the signing key ($NEWSLETTER_SECRET or newsletter.secret_env, set and
    at least 32 bytes), the SMTP password's variable when smtp.username is set, that the
    state file (or its folder) is writable, and sample digests rendered through the
    templates. Prints one line per problem and exits 2, or a one-line summary and exits 0;
    a template file with a name that is never used is a warning. --connect adds one line
    for the SMTP server and one for a source: exit 1 when one cannot be reached, 2 when it
    refuses the configuration (login, certificate); the higher code wins.

    Example: NEWSLETTER_SECRET=... newsletter check -c newsletter.yaml --connect
    """
    from newsletter.cli import preflight

    config = load_config(config_path)
    problems, rendered = preflight.problems(config)
    for line in preflight.warnings(config, rendered):
        click.echo(f"warning: {line}", err=True)
    for line in problems:
        click.echo(line, err=True)
    code = EXIT_USAGE if problems else EXIT_OK
    if connect:
        for line, line_code in preflight.connect_lines(config):
            click.echo(line, err=line_code != EXIT_OK)
            code = max(code, line_code)
    if not problems:
        subs = config.subscribers
        click.echo(
            f"{config_path}: ok: {len(config.topics)} topic{'s' if len(config.topics) != 1 else ''}, "
            f"{len(subs)} subscriber{'s' if len(subs) != 1 else ''}"
        )
    sys.exit(code)
