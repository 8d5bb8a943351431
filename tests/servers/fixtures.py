"""pytest fixtures for the real test servers. A test module asks for them with

    pytest_plugins = ["tests.servers.fixtures"]

Each server starts once per test session (on first use) and is stopped, its temp folder
removed, when the session ends, also when tests failed. What a test gets is its own:

- ``postgres_db``: a fresh empty database (``.url``, ``.password_url``), dropped after the test.

A missing server skips the test with the reason (fails it in CI), through
``tests.conftest.require``. When a test using a server fails, the end of the server's logs is
added to the report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from typing import TypeVar

import pytest

from tests.conftest import require
from tests.servers import postgres
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
