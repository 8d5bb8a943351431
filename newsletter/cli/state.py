"""``newsletter state copy``: move a state between SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import click

from newsletter.cli.common import EXIT_USAGE, abort, config_option, handles_errors, load_config


@click.group()
def state() -> None:
    """The state database: copy it to another backend."""


@state.command()
@config_option
@click.option(
    "--to",
    "target",
    required=True,
    metavar="URL|FILE",
    help="Where to copy the state: a postgresql:// URL or a SQLite file (created; its folder "
    "must exist). It must hold nothing yet.",
)
@handles_errors
def copy(config_path: Path, target: str) -> None:
    """Copy the state newsletter.state names into an empty target, then check it: each
    table's row count and a checksum of the send ledger. The password of a PostgreSQL
    target comes from the same place as the state's (newsletter.state_password_env, else
    libpq's PGPASSWORD or ~/.pgpass).

    Example: newsletter state copy --to postgresql://newsletter@db.example.org/newsletter
    """
    from newsletter import wiring
    from newsletter.store import is_url, open_store
    from newsletter.store.copy import TargetNotEmpty, copy_state

    config = load_config(config_path)
    if not is_url(target) and Path(target).is_dir():
        abort(f"{target}: a folder; give the SQLite file to create in it", EXIT_USAGE)
    with (
        wiring.open_state(config, read_only=True) as source,
        open_store(target, password=wiring.state_password(config)) as into,
    ):
        try:
            copied = copy_state(source, into)
        except TargetNotEmpty as e:
            abort(str(e), EXIT_USAGE)
    rows = sum(copied.rows.values())
    click.echo(f"copied {source.path} -> {into.path}: {rows} rows in {len(copied.rows)} tables")
    for table, count in copied.rows.items():
        click.echo(f"  {table:<18} {count}")
    click.echo(f"ledger checksum (sha256): {copied.checksum}, the same in both")
