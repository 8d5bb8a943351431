"""The only module that talks HTTP: timeouts, retries with backoff, Retry-After, the cache.

Everything above it sees a ``Response`` (status, body, headers) or a ``FetchError`` naming
the URL; nobody else imports the HTTP client. With a ``ResponseStore`` every response is
kept raw: the next fetch of the same URL is a conditional GET (ETag / Last-Modified), and
``ReplayClient`` answers from the store alone, so parsers can run again without the network.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import httpx

from newsletter import __version__
from newsletter.errors import FetchError

log = logging.getLogger(__name__)

USER_AGENT = (
    f"papers-newsletter/{__version__} (self-hosted newsletter of trending papers; "
    "+https://pypi.org/project/papers-newsletter/)"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Params = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class Response:
    url: str  # the request URL, query included: the key the store keeps it under
    status: int
    body: bytes
    headers: Mapping[str, str]
    from_store: bool = False  # the body came from the store (304 Not Modified, or a replay)


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
    ) -> None:
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
        parser to read instead of raising.
        """
        shown = full_url(url, params)
        cached = self.store.load_response(shown) if self.store else None
        headers = _conditional_headers(cached)
        attempt = 0
        while True:
            delay: float | None = None
            status: int | None = None
            try:
                r = self._client.get(url, params=params, headers=headers)
                body = r.content
            except httpx.TimeoutException as e:
                problem = f"timed out ({type(e).__name__})"
            except httpx.TransportError as e:
                # Includes a body cut short of its Content-Length (RemoteProtocolError).
                problem = f"connection failed: {e or type(e).__name__}"
            else:
                if r.status_code == 304 and cached is not None:
                    log.debug("http.not_modified url=%s", shown)
                    return replace(cached, from_store=True)
                if r.status_code < 400 or r.status_code in accept:
                    response = Response(shown, r.status_code, body, dict(r.headers))
                    if self.store is not None:
                        self.store.save_response(response, self._clock())
                    return response
                status = r.status_code
                problem = f"HTTP {status} {r.reason_phrase}".rstrip()
                if r.status_code not in RETRY_STATUSES:
                    raise FetchError(shown, problem, status=r.status_code)
                delay = _retry_after(r.headers.get("Retry-After"))
            if attempt >= self.retries:
                tries = f"{attempt + 1} attempt{'s' if attempt else ''}"
                raise FetchError(shown, f"{problem} (after {tries})", status=status)
            if delay is None:
                # Exponential backoff with full jitter, so parallel clients spread out.
                delay = random.uniform(0, self.backoff * 2**attempt)
            delay = min(delay, self.max_backoff)
            log.info(
                "http.retry url=%s problem=%r delay=%.1f attempt=%d",
                shown,
                problem,
                delay,
                attempt + 1,
            )
            self._sleep(delay)
            attempt += 1


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
