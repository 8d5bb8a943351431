"""The ``newsletter`` command. Thin: parse options, wire the stages, report.

Every failure goes through ``abort()`` (``common.py``): one line naming the file, key, URL
or recipient, and an exit code (0 success, 1 a run failed, 2 usage or configuration error).
Only this package configures logging handlers (``-v``, ``-vv``).

The commands live in modules by what they do: ``run.py`` (preview, send, run),
``archive.py`` (the static archive),
``serve.py``, ``status.py``, ``subscribers.py``, ``check.py`` (with ``preflight.py``),
``fetch.py``, ``inbound.py`` and ``state.py`` (copy the state between SQLite and
PostgreSQL). Each imports the stages inside its command, so ``newsletter --help`` loads no
template engine, SMTP or HTTP client (``tests/test_imports.py``).
"""

from __future__ import annotations

import gc
import logging
import sys

import click

from newsletter import __version__
from newsletter.cli import (
    archive,
    check,
    fetch,
    inbound,
    run,
    serve,
    state,
    status,
    subscribers,
)
from newsletter.cli.common import abort


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", help="Show the version and exit.")
@click.option(
    "-v", "--verbose", count=True, help="Log what happens (-v info, -vv debug) to stderr."
)
def cli(verbose: int) -> None:
    """Get trending papers in your email inbox: a self-hosted newsletter of the
    Hugging Face Daily Papers, configured in one YAML file."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s %(message)s", stream=sys.stderr)


for command in (
    archive.archive,
    check.check,
    fetch.fetch,
    inbound.inbound,
    run.preview,
    run.run,
    run.send,
    serve.serve,
    state.state,
    status.status,
    subscribers.subscribers,
):
    cli.add_command(command)


def main() -> None:
    # A run makes a few objects per subscriber and paper that live until it ends, and hardly
    # any cycles: collecting every 700 allocations (the default) walked them again and again
    # (~1 of 5 s of CPU before a send's first message, for 20,000 subscribers).
    gc.set_threshold(20_000, 20, 20)
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        abort("interrupted", 130)
