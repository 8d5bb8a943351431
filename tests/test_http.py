"""The fetch layer against faults served by a real HTTP server on 127.0.0.1.

Retries never sleep for real: ``sleep`` is a list's ``append``, which also records the
delays asked for.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from newsletter.errors import FetchError
from newsletter.sources.http import USER_AGENT, HttpClient, ReplayClient, Response
from newsletter.store import SqliteStore
from tests.httpserver import FixtureServer, Reply, Request, in_turn

NOW = dt.datetime(2026, 5, 8, 12, tzinfo=dt.UTC)


@pytest.fixture
def server() -> Iterator[FixtureServer]:
    with FixtureServer() as srv:
        yield srv


def client(sleeps: list[float], **kwargs: Any) -> HttpClient:
    return HttpClient(sleep=sleeps.append, backoff=0.01, **kwargs)


def test_429_honours_retry_after(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(429, b"slow down", {"Retry-After": "7"}), Reply(200, b"ok"))
    sleeps: list[float] = []
    with client(sleeps, retries=2) as c:
        response = c.get(f"{server.url}/x")
    assert response.body == b"ok"
    assert sleeps == [7.0]
    assert len(server.requests) == 2


def test_retry_after_is_capped(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(503, b"", {"Retry-After": "86400"}), Reply(200, b"ok"))
    sleeps: list[float] = []
    with client(sleeps, retries=1, max_backoff=30) as c:
        assert c.get(f"{server.url}/x").body == b"ok"
    assert sleeps == [30]


def test_500_then_200(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(500, b"oops"), Reply(200, b"[]"))
    sleeps: list[float] = []
    with client(sleeps, retries=3) as c:
        assert c.get(f"{server.url}/x").body == b"[]"
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= 0.01  # jittered, within the first backoff


def test_backoff_grows_and_gives_up_with_one_clear_line(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(502, b"bad gateway"))
    sleeps: list[float] = []
    with client(sleeps, retries=3) as c, pytest.raises(FetchError) as info:
        c.get(f"{server.url}/x", params={"date": "2026-05-08"})
    message = str(info.value)
    assert message == f"{server.url}/x?date=2026-05-08: HTTP 502 Bad Gateway (after 4 attempts)"
    assert "\n" not in message
    assert len(sleeps) == 3
    assert all(0 <= s <= 0.01 * 2**i for i, s in enumerate(sleeps))


def test_404_is_not_retried(server: FixtureServer) -> None:
    sleeps: list[float] = []
    with client(sleeps, retries=3) as c, pytest.raises(FetchError, match="HTTP 404"):
        c.get(f"{server.url}/missing")
    assert sleeps == []
    assert len(server.requests) == 1


def test_accepted_status_is_returned(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(400, b"<feed/>"))
    with client([], retries=0) as c:
        response = c.get(f"{server.url}/x", accept=(400,))
    assert (response.status, response.body) == (400, b"<feed/>")


def test_stalled_response_times_out(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(200, b"late", delay=2.0))
    sleeps: list[float] = []
    with client(sleeps, retries=1, timeout=0.1) as c, pytest.raises(FetchError) as info:
        c.get(f"{server.url}/x")
    assert "timed out" in str(info.value)
    assert len(sleeps) == 1  # retried once, then gave up


def test_truncated_body_is_a_connection_error_and_retried(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(200, b"[" + b"1," * 500 + b"1]", truncate=True))
    sleeps: list[float] = []
    with client(sleeps, retries=1) as c, pytest.raises(FetchError) as info:
        c.get(f"{server.url}/x")
    assert "connection failed" in str(info.value)
    assert len(server.requests) == 2


def test_truncated_then_whole(server: FixtureServer) -> None:
    body = b"[" + b"1," * 500 + b"1]"
    server.routes["/x"] = in_turn(Reply(200, body, truncate=True), Reply(200, body))
    with client([], retries=2) as c:
        assert c.get(f"{server.url}/x").body == body


def test_connection_refused(server: FixtureServer) -> None:
    url = server.url
    server.__exit__(None, None, None)  # nobody listens on that port any more
    sleeps: list[float] = []
    with client(sleeps, retries=2) as c, pytest.raises(FetchError, match="connection failed"):
        c.get(f"{url}/x")
    assert len(sleeps) == 2


def test_user_agent_is_descriptive(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(200, b"ok"))
    with client([], retries=0) as c:
        c.get(f"{server.url}/x")
    agent = server.requests[0].headers["User-Agent"]
    assert agent == USER_AGENT
    assert agent.startswith("papers-newsletter/") and "+https://" in agent


def test_conditional_get_and_replay(server: FixtureServer) -> None:
    def handler(req: Request) -> Reply:
        if req.headers.get("If-None-Match") == '"v1"':
            return Reply(304, b"")
        return Reply(
            200, b"[1]", {"ETag": '"v1"', "Last-Modified": "Fri, 08 May 2026 10:00:00 GMT"}
        )

    server.routes["/api"] = handler
    with SqliteStore(":memory:") as store:
        with client([], retries=0, store=store, clock=lambda: NOW) as c:
            first = c.get(f"{server.url}/api", params={"date": "2026-05-08"})
            second = c.get(f"{server.url}/api", params={"date": "2026-05-08"})
        assert (first.body, first.from_store) == (b"[1]", False)
        assert (second.body, second.from_store) == (b"[1]", True)
        revalidation = server.requests[1].headers
        assert revalidation["If-None-Match"] == '"v1"'
        assert revalidation["If-Modified-Since"] == "Fri, 08 May 2026 10:00:00 GMT"

        replay = ReplayClient(store)
        again = replay.get(f"{server.url}/api", params={"date": "2026-05-08"})
        assert again.body == b"[1]" and again.from_store
        with pytest.raises(FetchError, match="no stored response"):
            replay.get(f"{server.url}/api", params={"date": "2026-05-09"})
    assert len(server.requests) == 2  # the replay never touched the network


def test_store_keeps_the_raw_response() -> None:
    with SqliteStore(":memory:") as store:
        store.save_response(Response("http://x/a?b=1", 200, b"\x00raw", {"ETag": "e"}), NOW)
        loaded = store.load_response("http://x/a?b=1")
        assert loaded is not None
        assert (loaded.status, loaded.body, dict(loaded.headers)) == (
            200,
            b"\x00raw",
            {"ETag": "e"},
        )
        assert store.load_response("http://x/a?b=2") is None


def test_fetch_error_carries_the_status(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(503, b""))
    with client([], retries=1) as c:
        with pytest.raises(FetchError) as missing:
            c.get(f"{server.url}/nothing-here")
        with pytest.raises(FetchError) as down:
            c.get(f"{server.url}/x")
    assert (missing.value.status, down.value.status) == (404, 503)
