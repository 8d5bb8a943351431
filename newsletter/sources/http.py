"""The only module that talks HTTP: timeouts, retries with backoff, Retry-After.

Everything above it sees a ``Response`` (status, body, headers) or a ``FetchError`` naming
the URL; nobody else imports the HTTP client.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from newsletter import __version__
from newsletter.errors import FetchError

log = logging.getLogger(__name__)

USER_AGENT = (
    f"papers-newsletter/{__version__} (self-hosted newsletter of trending papers; "
    "+https://pypi.org/project/papers-newsletter/)"
)
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class Response:
    url: str
    status: int
    body: bytes
    headers: Mapping[str, str]


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
    ) -> None:
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
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

    def get(self, url: str, params: Mapping[str, str | int] | None = None) -> Response:
        """GET with retries on connection errors, 429 and 5xx; other statuses raise at once."""
        shown = str(httpx.URL(url, params=params)) if params else url
        attempt = 0
        while True:
            delay: float | None = None
            try:
                r = self._client.get(url, params=params)
                body = r.content
            except httpx.TimeoutException as e:
                problem = f"timed out ({type(e).__name__})"
            except httpx.TransportError as e:
                problem = f"connection failed: {e or type(e).__name__}"
            else:
                if r.status_code < 400:
                    return Response(str(r.url), r.status_code, body, dict(r.headers))
                problem = f"HTTP {r.status_code} {r.reason_phrase}".rstrip()
                if r.status_code not in RETRY_STATUSES:
                    raise FetchError(shown, problem)
                delay = _retry_after(r.headers.get("Retry-After"))
            if attempt >= self.retries:
                raise FetchError(shown, f"{problem} (after {attempt + 1} attempts)")
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
