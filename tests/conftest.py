from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests.httpserver import FixtureServer, Reply, Request

# The run caches bytecode even where PYTHONDONTWRITEBYTECODE is set (as on the shared test
# machine): each `newsletter` subprocess, pool worker and xdist worker would otherwise compile
# the package again, an eighth of the suite's CPU.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Property tests: 100 examples each for CI and the README's test command (``ci``, also the
# default here); ``--hypothesis-profile=dev`` tries ten times as many. No deadline: the
# machine is shared and an example's time says nothing about its correctness.
settings.register_profile(
    "ci", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", settings.get_profile("ci"), max_examples=1000)
settings.load_profile("ci")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests first: pytest-xdist hands tests out in this order, so the workers end
    together instead of one running a minute-long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures"
DATA = Path(__file__).resolve().parent / "data"

# The real captures that answer ``/api/daily_papers?date=D``: date -> file.
HF_API_BY_DATE = {
    "2024-05-27": "hf_api_daily_papers_date_2024-05-27_13papers_reserialized.json",
    "2024-11-11": "hf_api_daily_papers_date_2024-11-11_8papers_reserialized.json",
    "2025-10-15": "hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json",
    "2026-05-08": "hf_api_daily_papers_date_2026-05-08_37papers.json",
    "2026-07-31": "hf_api_daily_papers_date_2026-07-31_5papers_trimmed_pretty.json",
}


def fixture_path(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"missing shared fixture {path}")
    return path


def hf_api_handler(req: Request) -> Reply:
    """The daily papers API: a known date gets its capture, any other date an empty list."""
    day = req.query.get("date", "")
    name = HF_API_BY_DATE.get(day)
    if name is None:
        return Reply(200, b"[]", {"Content-Type": "application/json"})
    return Reply(200, fixture_path(name).read_bytes(), {"Content-Type": "application/json"})


@pytest.fixture
def hf_server() -> Iterator[FixtureServer]:
    """A real HTTP server on 127.0.0.1 answering like huggingface.co from the fixtures."""
    with FixtureServer() as server:
        server.routes["/api/daily_papers"] = hf_api_handler
        yield server


def write_config(
    path: Path,
    *,
    hf_url: str,
    extra: str = "",
    subscribers: str | None = None,
    sources_extra: str = "",
) -> Path:
    """A small config pointing the Hugging Face source at a test server.

    ``sources_extra`` is YAML added under ``sources:`` (indented by two), e.g. an arxiv block.
    """
    subs = subscribers or DEFAULT_SUBSCRIBERS
    path.write_text(
        f"""\
newsletter:
  title: Test Papers
  from: "Test Papers <papers@example.org>"
  base_url: https://papers.example.org
  state: state.db
sources:
  huggingface:
    base_url: {hf_url}
    retries: 0
{sources_extra}topics:
  retrieval:
    keywords: [retrieval, "agentic search"]
  video:
    keywords: [video]
    exclude: [benchmark]
  robots:
    keywords: [quadruped, "robot arm"]
{extra}
subscribers:
{subs}""",
        encoding="utf-8",
    )
    return path


DEFAULT_SUBSCRIBERS = """\
  - email: ada@example.org
    name: Ada
    topics: [retrieval]
    max_papers: 3
  - email: bob@example.org
    topics: [video]
    min_upvotes: 5
  - email: carl@example.org
    topics: [robots]
"""


def load_json(name: str) -> object:
    return json.loads(fixture_path(name).read_text(encoding="utf-8"))


def ids_in(text: str) -> list[str]:
    """Paper ids linked from an email, in order, each once."""
    return list(dict.fromkeys(re.findall(r"huggingface\.co/papers/(\d{4}\.\d{4,5})", text)))


def require(ok: bool, reason: str) -> None:
    """Skip a test whose tool is missing, with the reason; in CI (CI=true) fail instead."""
    if ok:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing tool fails the run; see .ci/apt-packages)")
    pytest.skip(reason)


def hold(store: Any, email: str, status: str, reason: str, now: dt.datetime) -> None:
    """Give a subscriber a status other than active (a ``config`` row when they have none)."""
    from newsletter.models import SubscriberRecord

    row = store.subscriber_by_email(email)
    if row is None:
        row = SubscriberRecord(email, (), source="config", status="active")
        row = store.add_subscriber(row, now=now)
    store.set_subscriber_status(row.id, status, reason, now)


def held(store: Any) -> dict[str, tuple[str, str]]:
    """The subscribers who are not mailed, casefolded: address -> (status, reason)."""
    return {r.key: (r.status, r.reason) for r in store.subscribers() if r.status != "active"}
