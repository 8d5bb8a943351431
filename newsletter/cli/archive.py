"""``newsletter archive build``: the public archive and its feeds as static files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import click

from newsletter.cli.common import config_option, handles_errors, load_config
from newsletter.errors import ConfigError

#: What an earlier build may have written that this one did not (a day purged, a topic
#: made private): removed, and nothing else in the folder.
_BUILT = re.compile(
    r"archive/(index\.html|style\.css|\d{4}-\d{2}-\d{2}/index\.html)"
    r"|topics/[^/]+/index\.html|topics/[^/]+\.atom|feed\.atom"
)


@click.group()
def archive() -> None:
    """The public archive: a page per day and per topic, and Atom feeds."""


@archive.command()
@config_option
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder to write to (made if missing); serve it with any web server.",
)
@handles_errors
def build(config_path: Path, out: Path) -> None:
    """Write the archive's pages and feeds as static files, from the state database.

    DIR/archive/index.html lists the days; DIR/archive/YYYY-MM-DD/index.html shows a
    day's papers by topic; DIR/topics/SLUG/index.html and DIR/topics/SLUG.atom a topic's
    newest papers; DIR/feed.atom every public topic's. The pages link to each other with
    relative paths, so the folder works from file:// and under any path of a web server.
    The same state gives the same bytes; files that did not change are not rewritten, and
    files of an earlier build that this one no longer has are removed.

    Example:

        newsletter archive build -c subscribers.yaml --out /var/www/papers
    """
    from newsletter import wiring
    from newsletter.web.publish import ArchiveSite

    config = load_config(config_path)
    if not config.archive.enabled:
        raise ConfigError(
            str(config.path),
            [
                f"{config.path}: archive.enabled is false: set it to true to publish the "
                "archive (digests then link to their day's page)"
            ],
        )
    with wiring.open_state(config, read_only=True) as store:
        docs = ArchiveSite.from_config(config).build(store)
    written = 0
    for path, doc in docs.items():
        target = out / path
        if target.is_file() and target.read_bytes() == doc.body:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(target.name + ".part")
        part.write_bytes(doc.body)
        os.replace(part, target)
        written += 1
    removed = _remove_stale(out, set(docs))
    click.echo(
        f"archive: {len(docs)} files in {out} ({written} written, {removed} removed)", err=True
    )


def _remove_stale(out: Path, kept: set[str]) -> int:
    removed = 0
    for top in ("archive", "topics"):
        for path in sorted((out / top).rglob("*"), reverse=True):
            name = path.relative_to(out).as_posix()
            if path.is_file() and _BUILT.fullmatch(name) and name not in kept:
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    feed = out / "feed.atom"
    if "feed.atom" not in kept and feed.is_file():
        feed.unlink()
        removed += 1
    return removed
