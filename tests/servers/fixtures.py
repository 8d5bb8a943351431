"""pytest fixtures for the real test servers. A test module asks for them with

    pytest_plugins = ["tests.servers.fixtures"]

Each server starts once per test session (on first use) and is stopped, its temp folder
removed, when the session ends, also when tests failed. What a test gets is its own:

- ``postgres_db``: a fresh empty database (``.url``, ``.password_url``), dropped after the test;
- ``store_url``: the state's location on each backend in turn (a test runs twice): the SQLite
  file ``state.db`` in the test's ``tmp_path``, then a fresh PostgreSQL database's URL;
- ``mailbox``: a fresh IMAP account ``userN@example.org`` (``.address``, ``.password``,
  ``.host``, ``.port``, ``.append(raw)``, ``.messages()``, ``.folders()``);
- ``postfix_relay``: the SMTP relay (``.host``, ``.port``, ``.send()``, ``.flush()``) that
  delivers ``example.org`` into those accounts and accepts, then bounces, mail for
  ``bounce.test`` (5.1.1), ``full.test`` (5.2.2) and ``blocked.test`` (5.7.1).

A missing server skips the test with the reason (fails it in CI), through
``tests.conftest.require``. When a test using a server fails, the end of the server's logs is
added to the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest

from tests.conftest import require
from tests.servers import dovecot, postfix, postgres
from tests.servers.dovecot import Dovecot, Mailbox
from tests.servers.postfix import Postfix
from tests.servers.postgres import Database, PostgresCluster
from tests.servers.process import Server, logs_text

S = TypeVar("S", bound=Server)

# The servers running now, by fixture name: their logs go into a failed test's report.
_running: dict[str, Server] = {}


@contextlib.contextmanager
def _serve(name: str, missing: Callable[[], str | None], make: Callable[[], S]) -> Iterator[S]:
    """Skip (in CI: fail) when the server cannot run here; else start it for the session."""
    reason = missing()
    require(reason is None, reason or "")
    with make() as server:
        _running[name] = server
        try:
            yield server
        finally:
            del _running[name]


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; ``create_database()`` -> ``Database``."""
    with _serve("postgres_cluster", postgres.missing, PostgresCluster) as cluster:
        yield cluster


@pytest.fixture
def postgres_db(postgres_cluster: PostgresCluster) -> Iterator[Database]:
    """A fresh empty database for this test, owned by ``newsletter``; ``.url`` connects."""
    db = postgres_cluster.create_database()
    yield db
    postgres_cluster.drop_database(db.name)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Where a state is, once per backend: ``newsletter.store.open_store(store_url)``."""
    if request.param == "sqlite":
        tmp_path: Path = request.getfixturevalue("tmp_path")
        return str(tmp_path / "state.db")
    db: Database = request.getfixturevalue("postgres_db")
    return db.url


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    """The IMAP (and LMTP) server for ``example.org``; ``add_user()`` -> ``Mailbox``."""
    with _serve("dovecot_server", dovecot.missing, Dovecot) as server:
        yield server


@pytest.fixture
def mailbox(dovecot_server: Dovecot) -> Mailbox:
    """A fresh, empty IMAP account for this test (``userN@example.org``)."""
    return dovecot_server.add_user()


@pytest.fixture(scope="session")
def postfix_relay(dovecot_server: Dovecot) -> Iterator[Postfix]:
    """The SMTP relay on 127.0.0.1 that delivers ``example.org`` into ``dovecot_server`` and
    bounces ``bounce.test`` (and the other ``DEFAULT_BOUNCES``) after accepting it."""
    make = partial(Postfix, dovecot_server.lmtp_port)
    with _serve("postfix_relay", postfix.missing, make) as relay:
        yield relay


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        used = getattr(item, "fixturenames", ())  # every fixture the test uses, indirect too
        for name, server in _running.items():
            if name in used:
                report.sections.append((f"{server.name} logs", logs_text(server.logs)))
    return report
