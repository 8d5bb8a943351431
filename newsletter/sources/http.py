"""The only module that talks HTTP: timeouts, retries with backoff, Retry-After, the cache,
and the bounds: a size cap per response and one deadline for a run's fetching.

Everything above it sees a ``Response`` (status, body, headers) or a ``FetchError`` naming
the URL; nobody else imports the HTTP client. Bodies are streamed (and decompressed here, a
bounded piece at a time), so a huge or endless answer stops at the cap or the deadline
instead of filling the memory or holding the run. With a ``ResponseStore`` every response is
kept raw: the next fetch of the same URL is a conditional GET (ETag / Last-Modified), and
``ReplayClient`` answers from the store alone, so parsers can run again without the network.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import math
import random
import time
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from typing import Protocol

import httpx

from newsletter import __version__
from newsletter.errors import FetchError
from newsletter.models import Response

log = logging.getLogger(__name__)

USER_AGENT = (
    f"papers-newsletter/{__version__} (self-hosted newsletter of trending papers; "
    "+https://pypi.org/project/papers-newsletter/)"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DEFAULT_MAX_RESPONSE_BYTES = 10_000_000  # a daily list is well under 1 MB
DEFAULT_FETCH_DEADLINE_SECONDS = 300.0

Params = Mapping[str, str | int]


class ResponseStore(Protocol):
    """Where raw responses are kept; ``store.SqliteStore`` is one."""

    def save_response(self, response: Response, now: dt.datetime) -> None: ...

    def load_response(self, url: str) -> Response | None: ...


class Fetcher(Protocol):
    """What a source needs: ``HttpClient`` over the network, ``ReplayClient`` from the store."""

    def get(
        self, url: str, params: Params | None = None, *, accept: Collection[int] = ()
    ) -> Response: ...


def full_url(url: str, params: Params | None = None) -> str:
    return str(httpx.URL(url, params=params)) if params else url


class Deadline:
    """How long one run may spend fetching, shared by its clients.

    It starts at the first request, not when the sources are opened: a run may wait for the
    send lock first. httpx's timeouts bound each read, not a whole answer; this bounds all.
    """

    def __init__(
        self,
        seconds: float,
        *,
        setting: str = "sources.fetch_deadline_seconds",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.seconds = seconds
        self.setting = setting
        self._clock = clock
        self._end: float | None = None

    def remaining(self) -> float:
        now = self._clock()
        if self._end is None:
            self._end = now + self.seconds
        return self._end - now

    def error(self, url: str, problem: str = "") -> FetchError:
        passed = f"the fetch deadline of {self.seconds:g} s ({self.setting}) passed"
        return FetchError(url, f"{problem}; {passed}" if problem else passed, timed_out=True)


class HttpClient:
    """A small synchronous client; one per run, closed at the end."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        store: ResponseStore | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        cap_setting: str = "max_response_bytes",
        deadline: Deadline | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.cap_setting = cap_setting  # the config key named when a response is too big
        self.deadline = deadline
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.store = store
        self._sleep = sleep
        self._clock = clock
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
            follow_redirects=True,
        )

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def get(
        self, url: str, params: Params | None = None, *, accept: Collection[int] = ()
    ) -> Response:
        """GET with retries on connection errors, 429 and 5xx; other statuses raise at once.

        A status in ``accept`` (say arXiv's 400 with an error feed) is returned for the
        parser to read instead of raising. A body over ``max_response_bytes`` or the run's
        deadline passing is a ``FetchError`` at once, never retried.
        """
        shown = full_url(url, params)
        cached = self.store.load_response(shown) if self.store else None
        headers = _conditional_headers(cached)
        attempt = 0
        while True:
            delay: float | None = None
            status: int | None = None
            timed_out = False
            # No read may outlast the deadline by more than what was left when it began.
            timeout = min(self.timeout, self._time_left(shown))
            try:
                with self._client.stream(
                    "GET", url, params=params, headers=headers, timeout=timeout
                ) as r:
                    if r.status_code == 304 and cached is not None:
                        log.debug("http.not_modified url=%s", shown)
                        return replace(cached, from_store=True)
                    if r.status_code < 400 or r.status_code in accept:
                        body = self._read(r, shown)
                        response = Response(shown, r.status_code, body, dict(r.headers))
                        if self.store is not None:
                            self.store.save_response(response, self._clock())
                        return response
                    status = r.status_code
                    problem = f"HTTP {status} {r.reason_phrase}".rstrip()
                    if r.status_code not in RETRY_STATUSES:
                        raise FetchError(shown, problem, status=r.status_code)
                    delay = _retry_after(r.headers.get("Retry-After"))
            except httpx.TimeoutException as e:
                problem, timed_out = f"timed out ({type(e).__name__})", True
                if self.deadline is not None and self.deadline.remaining() <= 0:
                    raise self.deadline.error(shown, problem) from e
            except httpx.TransportError as e:
                # Includes a body cut short of its Content-Length (RemoteProtocolError).
                problem = f"connection failed: {e or type(e).__name__}"
            if attempt >= self.retries:
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise FetchError(
                    shown, f"{problem} (after {tries})", status=status, timed_out=timed_out
                )
            if delay is None:
                # Exponential backoff with full jitter, so parallel clients spread out.
                delay = random.uniform(0, self.backoff * 2**attempt)
            delay = min(delay, self.max_backoff)
            if self.deadline is not None and delay >= self.deadline.remaining():
                raise self.deadline.error(shown, f"{problem}; no time left to try again")
            log.info(
                "http.retry url=%s problem=%r delay=%.1f attempt=%d",
                shown,
                problem,
                delay,
                attempt + 1,
            )
            self._sleep(delay)
            attempt += 1

    def _time_left(self, url: str) -> float:
        """Seconds until the deadline (infinite without one); none left raises."""
        if self.deadline is None:
            return math.inf
        left = self.deadline.remaining()
        if left <= 0:
            raise self.deadline.error(url)
        return left

    def _read(self, r: httpx.Response, url: str) -> bytes:
        """The body, decompressed, up to the cap; checked against the deadline chunk by chunk."""
        cap = self.max_response_bytes
        encoding = r.headers.get("Content-Encoding", "").strip().lower()
        decoder = None
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoder = zlib.decompressobj(wbits=47)  # 32 + 15: a gzip or a zlib header
        elif encoding not in ("", "identity"):
            raise FetchError(url, f"unsupported Content-Encoding {encoding[:40]!r}")
        elif (length := r.headers.get("Content-Length", "")).isdigit() and int(length) > cap:
            raise self._too_big(url)  # said so before sending it: not read at all
        body = bytearray()
        try:
            for raw in r.iter_raw():  # as it arrives (a chunk size would wait to fill it)
                self._time_left(url)
                # max_length: a small compressed chunk cannot inflate past the cap in memory.
                body += decoder.decompress(raw, cap - len(body) + 1) if decoder else raw
                if len(body) > cap:
                    raise self._too_big(url)
            if decoder is not None:
                body += decoder.flush()
        except zlib.error as e:
            raise FetchError(url, f"cannot decompress the {encoding} body: {e}") from e
        if len(body) > cap:
            raise self._too_big(url)
        return bytes(body)

    def _too_big(self, url: str) -> FetchError:
        return FetchError(
            url,
            f"response larger than {self.max_response_bytes:,} bytes ({self.cap_setting}); "
            "not read further",
        )


class ReplayClient:
    """Answers from the stored responses only (``newsletter fetch --replay``)."""

    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    def get(
        self, url: str, params: Params | None = None, *, accept: Collection[int] = ()
    ) -> Response:
        shown = full_url(url, params)
        response = self.store.load_response(shown)
        if response is None:
            raise FetchError(shown, "no stored response to replay (fetch it once without --replay)")
        if response.status >= 400 and response.status not in accept:
            raise FetchError(shown, f"stored response is HTTP {response.status}")
        return response

    def close(self) -> None:
        pass


def _conditional_headers(cached: Response | None) -> dict[str, str]:
    if cached is None or cached.status != 200:
        return {}
    lowered = {k.lower(): v for k, v in cached.headers.items()}
    headers = {}
    if "etag" in lowered:
        headers["If-None-Match"] = lowered["etag"]
    if "last-modified" in lowered:
        headers["If-Modified-Since"] = lowered["last-modified"]
    return headers


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
