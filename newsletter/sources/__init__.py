"""Where papers come from: the ``Source`` protocol and the sources that implement it.

A source answers "which papers were on the daily list of this day?". The Hugging Face API
source fetches over HTTP; ``FileSource`` reads a saved capture (``--from FILE``), so a
preview works offline. Parsers are pure and live beside their URL constants.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from newsletter.errors import FetchError
from newsletter.models import PaperData
from newsletter.sources import huggingface
from newsletter.sources.http import HttpClient

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str
    #: A live source's past days settle, so the store need not fetch them again; a file's
    #: content is what the operator asked for and is always read.
    live: bool

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        """The papers on ``day``'s daily list; [] for a day without papers."""
        ...

    def latest_day(self, today: dt.date) -> dt.date | None:
        """The most recent day up to ``today`` that has papers, or None."""
        ...


class HuggingFaceApi:
    """``GET {base_url}/api/daily_papers?date=YYYY-MM-DD``."""

    name = "huggingface"
    live = True
    LOOKBACK_DAYS = 7  # weekends and holidays leave days empty

    def __init__(self, base_url: str, client: HttpClient) -> None:
        self.url = huggingface.api_url(base_url)
        self.client = client

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        response = self.client.get(self.url, params={"date": day.isoformat(), "limit": 100})
        papers = huggingface.parse(response.body, response.url, day=day)
        log.info("fetch.day source=%s day=%s papers=%d", self.name, day, len(papers))
        return papers

    def latest_day(self, today: dt.date) -> dt.date | None:
        for back in range(self.LOOKBACK_DAYS + 1):
            day = today - dt.timedelta(days=back)
            if self.fetch_day(day):
                return day
        return None


class FileSource:
    """A saved API response or papers page, read instead of the network."""

    name = "file"
    live = False

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            body = path.read_bytes()
        except OSError as e:
            raise FetchError(str(path), f"cannot read: {e.strerror or e}") from e
        self.papers = huggingface.parse_any(body, str(path))

    def fetch_day(self, day: dt.date) -> list[PaperData]:
        return [p for p in self.papers if p.day == day]

    def latest_day(self, today: dt.date) -> dt.date | None:
        # A capture is a moment in the past: its own newest day is "the most recent".
        return max((p.day for p in self.papers), default=None)


def fetch(source: Source, days: Iterable[dt.date]) -> list[PaperData]:
    """Every paper of ``days``; one request per day."""
    papers: list[PaperData] = []
    for day in sorted(set(days)):
        papers.extend(source.fetch_day(day))
    return papers
