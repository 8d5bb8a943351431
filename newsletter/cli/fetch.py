"""``newsletter fetch``: papers of a day, a week, a month or trending, into the state."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from newsletter.cli.common import (
    EXIT_FAILED,
    config_option,
    date_option,
    from_option,
    handles_errors,
    load_config,
    now_utc,
)

if TYPE_CHECKING:
    from newsletter import sources


@click.command()
@config_option
@date_option
@click.option("--week", metavar="YYYY-Www", help="An ISO week's papers, e.g. 2025-W40.")
@click.option("--month", metavar="YYYY-MM", help="A month's papers, e.g. 2025-10.")
@click.option("--trending", is_flag=True, help="The papers trending now.")
@from_option
@click.option(
    "--replay",
    is_flag=True,
    help="Parse the responses kept in the state database again instead of the network.",
)
@handles_errors
def fetch(
    config_path: Path,
    date_: dt.datetime | None,
    week: str | None,
    month: str | None,
    trending: bool,
    from_file: Path | None,
    replay: bool,
) -> None:
    """Fetch papers into the state database and print them (id, upvotes, title).

    Prints one status line per source and exits 1 if any source failed.
    """
    from newsletter import sources, wiring

    period = _period(date_, week, month, trending)
    config = load_config(config_path)
    with wiring.open_state(config) as store:
        with wiring.open_sources(config, from_file, store, replay=replay) as found:
            now = now_utc()
            if period is None:
                day = sources.latest_day(found, now.date())
                if day is None:
                    click.echo("no papers in the last week")
                    return
                period = sources.Period.day(day)
            report = sources.fetch_period(found, period)
        store.add_papers(report.papers, now)
        if period.kind == "date":
            day = period.days()[0]
            for status in report.statuses:
                if not status.skipped:
                    store.mark_fetched(status.name, day, status.papers, now, error=status.error)
    width = max((len(p.id) for p in report.papers), default=10)
    click.echo(f"{'id':<{width}}  {'upvotes':>7}  title")
    for p in report.papers:
        click.echo(f"{p.id:<{width}}  {p.upvotes:>7}  {p.title}")
    for status in report.statuses:
        click.echo(status.line(), err=not status.ok)
    if not report.ok:
        sys.exit(EXIT_FAILED)


def _period(
    date_: dt.datetime | None, week: str | None, month: str | None, trending: bool
) -> sources.Period | None:
    from newsletter import sources

    given = [
        p
        for p, v in (
            ("--date", date_),
            ("--week", week),
            ("--month", month),
            ("--trending", trending),
        )
        if v
    ]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be used together: pick one")
    try:
        if week:
            return sources.Period.parse("week", week)
        if month:
            return sources.Period.parse("month", month)
    except ValueError as e:
        raise click.UsageError(f"--{'week' if week else 'month'}: {e}") from None
    if trending:
        return sources.Period("trending")
    return sources.Period.day(date_.date()) if date_ else None
