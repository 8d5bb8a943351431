"""The fetch layer against faults served by a real HTTP server on 127.0.0.1.

Retries never sleep for real: ``sleep`` is a list's ``append``, which also records the
delays asked for.
"""

from __future__ import annotations

import datetime as dt
import gzip
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import pytest

from newsletter.errors import FetchError
from newsletter.models import Response
from newsletter.sources.http import USER_AGENT, Deadline, HttpClient, ReplayClient
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


# --- bounds: the size cap and the run's fetch deadline ---------------------------------------

T = TypeVar("T")


def within(seconds: float, fn: Callable[[], T]) -> T:
    """``fn()``, failing the test instead of hanging the suite if it runs past ``seconds``."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the test's thread
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"still running after {seconds} s")
    if "error" in box:
        raise box["error"]
    return cast(T, box["value"])


def capped(**kwargs: Any) -> HttpClient:
    return client(
        [], max_response_bytes=1_000_000, cap_setting="sources.x.max_response_bytes", **kwargs
    )


def test_a_response_announced_over_the_cap_is_refused_and_not_retried(
    server: FixtureServer,
) -> None:
    server.routes["/x"] = in_turn(Reply(200, b"x" * 1_000_001))
    with capped(retries=2) as c, pytest.raises(FetchError) as info:
        c.get(f"{server.url}/x")
    assert "larger than 1,000,000 bytes (sources.x.max_response_bytes)" in str(info.value)
    assert len(server.requests) == 1
    assert not info.value.timed_out


def test_a_body_without_a_length_stops_at_the_cap(server: FixtureServer) -> None:
    # 50 MB, sent until the client hangs up; its length is not announced.
    server.routes["/x"] = in_turn(Reply(200, chunks=(b"x" * 65536 for _ in range(800))))
    with capped(retries=0) as c, pytest.raises(FetchError, match="larger than 1,000,000"):
        within(60, lambda: c.get(f"{server.url}/x"))
    assert server.chunks_sent < 100  # not read to the end: ~16 chunks and the socket buffers


def test_a_compressed_body_stops_at_the_cap_decompressed(server: FixtureServer) -> None:
    bomb = gzip.compress(b"\0" * 50_000_000)  # 50 KB on the wire
    server.routes["/x"] = in_turn(Reply(200, bomb, {"Content-Encoding": "gzip"}))
    with capped(retries=0) as c, pytest.raises(FetchError, match="larger than 1,000,000"):
        c.get(f"{server.url}/x")


def test_a_compressed_body_is_decompressed(server: FixtureServer) -> None:
    body = b"[" + b"1," * 50_000 + b"1]"
    server.routes["/x"] = in_turn(Reply(200, gzip.compress(body), {"Content-Encoding": "gzip"}))
    with capped(retries=0) as c:
        assert c.get(f"{server.url}/x").body == body


def test_a_trickling_server_is_cut_off_at_the_deadline(server: FixtureServer) -> None:
    # 100 bytes a second: each read is quick (no read timeout), the whole would take 10 min.
    trickle = Reply(200, chunks=(b"[1,1,1,1,]" for _ in range(6000)), chunk_delay=0.1)
    server.routes["/x"] = in_turn(trickle)
    deadline = Deadline(1.0)
    with client([], retries=3, deadline=deadline) as c, pytest.raises(FetchError) as info:
        within(60, lambda: c.get(f"{server.url}/x"))
    assert info.value.timed_out
    assert "fetch deadline of 1 s (sources.fetch_deadline_seconds) passed" in str(info.value)
    assert len(server.requests) == 1  # and not retried


def test_no_retry_waits_past_the_deadline(server: FixtureServer) -> None:
    server.routes["/x"] = in_turn(Reply(503, b"", {"Retry-After": "30"}))
    sleeps: list[float] = []
    with client(sleeps, retries=3, deadline=Deadline(10)) as c, pytest.raises(FetchError) as info:
        c.get(f"{server.url}/x")
    assert sleeps == []
    assert info.value.timed_out and "HTTP 503" in str(info.value)


def test_a_passed_deadline_stops_every_client_before_it_asks(server: FixtureServer) -> None:
    now = [0.0]
    deadline = Deadline(10, clock=lambda: now[0])
    server.routes["/x"] = in_turn(Reply(200, b"ok"))
    with client([], deadline=deadline) as first, client([], deadline=deadline) as second:
        assert first.get(f"{server.url}/x").body == b"ok"  # the deadline starts here
        now[0] = 10.5
        for c in (first, second):
            with pytest.raises(FetchError, match="fetch deadline of 10 s") as info:
                c.get(f"{server.url}/x")
            assert info.value.timed_out
    assert len(server.requests) == 1
