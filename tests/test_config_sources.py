"""The sources section of the config: new keys, defaults, errors, and their documentation."""

from __future__ import annotations

import pytest

from newsletter import config
from newsletter.errors import ConfigError
from tests.conftest import ROOT

BASE = """\
sources:
{sources}
topics:
  t:
    keywords: [x]
subscribers:
  - email: a@example.org
    topics: [t]
"""


def load(sources: str) -> config.Config:
    return config.parse(BASE.format(sources=sources), "c.yaml")


def problems(sources: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(sources)
    return info.value.problems


def test_defaults() -> None:
    settings = load("  huggingface: {}").sources
    assert settings.huggingface.mode == "api"
    assert settings.arxiv.enabled is False
    assert settings.arxiv.delay_seconds == 3
    assert settings.arxiv.announce_types == ["new", "cross"]
    assert settings.arxiv.api_url == "https://export.arxiv.org/api/query"
    assert settings.arxiv.rss_url == "https://rss.arxiv.org/rss"
    # Fetching is bounded: per answer, and for the whole of a run's fetching.
    assert settings.huggingface.max_response_bytes == settings.arxiv.max_response_bytes == 10**7
    assert settings.fetch_deadline_seconds == 300


def test_arxiv_enabled() -> None:
    arxiv = load(
        "  arxiv:\n    enabled: true\n    categories: [cs.CL, stat.ML, hep-th]\n"
        "    announce_types: [new, replace]\n    delay_seconds: 0\n"
    ).sources.arxiv
    assert arxiv.categories == ["cs.CL", "stat.ML", "hep-th"]
    assert arxiv.announce_types == ["new", "replace"]
    assert arxiv.delay_seconds == 0


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (
            "  huggingface:\n    mode: html\n",
            "c.yaml:3: sources.huggingface.mode: input should be 'api' or 'page'",
        ),
        (
            "  arxiv:\n    enabled: true\n",
            "c.yaml:3: sources.arxiv.categories: list at least one category",
        ),
        (
            "  arxiv:\n    categories: [cs CL]\n",
            "c.yaml:3: sources.arxiv.categories: not an arXiv category like cs.CL: 'cs CL'",
        ),
        (
            "  arxiv:\n    announce_types: [fresh]\n",
            "c.yaml:3: sources.arxiv.announce_types[0]: input should be 'new', 'cross' or 'replace'",
        ),
        (
            "  arxiv:\n    delay_seconds: -1\n",
            "c.yaml:3: sources.arxiv.delay_seconds: input should be greater than or equal to 0",
        ),
        (
            "  arxiv:\n    rss_url: rss.arxiv.org\n",
            "c.yaml:3: sources.arxiv.rss_url: must be an http(s) URL",
        ),
        ("  arxiv:\n    delay: 3\n", "c.yaml:3: sources.arxiv.delay: unknown key"),
        (
            "  fetch_deadline_seconds: 0\n",
            "c.yaml:2: sources.fetch_deadline_seconds: input should be greater than 0",
        ),
        (
            "  huggingface:\n    max_response_bytes: 10\n",
            "c.yaml:3: sources.huggingface.max_response_bytes: input should be greater than or equal to 1024",
        ),
    ],
)
def test_errors_name_line_and_key(sources: str, expected: str) -> None:
    assert any(p.startswith(expected) for p in problems(sources)), problems(sources)


def test_every_source_key_is_documented_in_the_example() -> None:
    example = (ROOT / "subscribers.example.yaml").read_text("utf-8")
    loaded = config.load(ROOT / "subscribers.example.yaml")
    assert loaded.sources.huggingface.mode == "api"
    for model in (config.Sources, config.HuggingFaceSettings, config.ArxivSettings):
        for key in model.model_fields:
            line = next(
                (ln for ln in example.splitlines() if ln.strip().startswith(f"{key}:")), None
            )
            assert line is not None, f"{model.__name__}.{key} is not in subscribers.example.yaml"
    keys = ("mode:", "announce_types:", "delay_seconds:", "rss_url:", "api_url:")
    for key in (*keys, "max_response_bytes:", "fetch_deadline_seconds:"):
        line = next(ln for ln in example.splitlines() if ln.strip().startswith(key))
        assert "#" in line, f"{key} has no comment"
