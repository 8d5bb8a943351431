"""``newsletter serve``: the daemon (``schedule.Daemon``) with the signals wired to it."""

from __future__ import annotations

import errno
import logging
import signal
from pathlib import Path

import click

from newsletter.cli.common import (
    config_option,
    handles_errors,
    load_config,
    open_state,
    signing_keys,
)
from newsletter.errors import ConfigError


@click.command()
@config_option
@handles_errors
def serve(config_path: Path) -> None:
    """Run as a service: send on schedule and serve the web pages (unsubscribe, manage, and
    with signup.enabled the sign-up pages).

    One job per group of subscribers sharing cadence, send time and timezone; what today's
    run left unsent is resumed at the start and every 15 minutes. SIGHUP
    reloads the config file (a broken file is reported and the old one kept); SIGTERM or
    SIGINT finishes the message in flight and exits 0.
    """
    from newsletter import schedule, wiring

    config = load_config(config_path)
    keys = signing_keys(config, preview=False)
    wiring.smtp_settings(config)  # a missing password is a config error now, not at 08:00
    if config.inbound.imap is not None:
        wiring.imap_password(config)  # so is the bounce mailbox's
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("newsletter").setLevel(logging.INFO)  # a daemon says what it does
    try:
        daemon = schedule.Daemon(
            config_path, config, keys, echo=lambda line: click.echo(line, err=True)
        )
    except OSError as e:
        where = f"{config.server.host}:{config.server.port}"
        hint = (
            "server.port: cannot listen on {}: {} (another `newsletter serve`? "
            "set server.port to a free port)"
            if e.errno == errno.EADDRINUSE
            else "server.host: cannot listen on {}: {}"
        )
        line = f"{config.path}: {hint.format(where, e.strerror or e)}"
        raise ConfigError(str(config.path), [line]) from e
    with open_state(config):  # a state file that cannot be opened: said now, not at 08:00
        pass
    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, daemon.on_signal)
    daemon.start()
    host, port = daemon.web.address
    click.echo(f"serving: web pages on http://{host}:{port}/", err=True)
    for job_id, when in daemon.scheduler.next_runs():
        click.echo(
            f"  next {job_id}: {when:%Y-%m-%d %H:%M:%S %Z}" if when else f"  {job_id}: paused",
            err=True,
        )
    daemon.wait()
