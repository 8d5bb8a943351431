"""The web application of `serve` on a real socket (127.0.0.1), for tests: a minimal config
file beside the state file, the app in a thread as the daemon runs it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from newsletter import config
from newsletter.web.app import Site
from newsletter.web.server import WebServer

MINIMAL = """\
newsletter:
  title: {title}
  state: {state}
  base_url: http://127.0.0.1
topics:
  everything:
    keywords: [the]
subscribers: []
"""


def minimal_config(state: Path, title: str = "Trending Papers", extra: str = "") -> config.Config:
    """A config whose state file is ``state`` (written beside it as web-test.yaml)."""
    path = state.parent / "web-test.yaml"
    path.write_text(MINIMAL.format(title=title, state=state.name) + extra, encoding="utf-8")
    return config.load(path)


@contextmanager
def running(
    cfg: config.Config,
    key: bytes,
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> Iterator[str]:
    """The app on a free port; yields its root URL."""
    server = WebServer("127.0.0.1", 0, Site(config=lambda: cfg, keys=(key,), clock=clock))
    server.start()
    host, port = server.address
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
