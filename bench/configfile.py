"""A newsletter config of the benchmark's workload: its 50 topics and N subscribers.

``write(path, subscribers, port)`` writes it as an operator would (block style, one key a
line; about 190 bytes per subscriber), with SMTP on 127.0.0.1:``port`` and no TLS. The
subscribers are the workload's (``bench.workload.subscribers``), in order.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench import workload

TOPIC_NAMES = [*workload.TOPIC_KEYWORDS, *workload.TOPIC_ORGANIZATIONS]


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted one


def text(subscribers: int, port: int, *, state: str = "newsletter.db") -> str:
    lines = [
        "newsletter:",
        "  title: Trending Papers",
        '  from: "Trending Papers <papers@example.org>"',
        "  base_url: https://papers.example.org",
        "  secret_env: NEWSLETTER_SECRET",
        f"  state: {state}",
        "smtp:",
        "  host: 127.0.0.1",
        f"  port: {port}",
        "  security: none",
        "  connections: 4",
        "topics:",
    ]
    for name, kw in workload.TOPIC_KEYWORDS.items():
        lines += [f"  {name}:", f"    keywords: [{', '.join(_q(k) for k in kw)}]"]
    for name, orgs in workload.TOPIC_ORGANIZATIONS.items():
        lines += [f"  {name}:", f"    organizations: [{', '.join(_q(o) for o in orgs)}]"]
    lines.append("subscribers:" if subscribers else "subscribers: []")
    for sub in workload.subscribers(subscribers, TOPIC_NAMES):
        lines.append(f"  - email: {sub.email}")
        if sub.name:
            lines.append(f"    name: {_q(sub.name)}")
        lines.append(f"    topics: [{', '.join(sub.topics)}]")
        if sub.max_papers != 10:
            lines.append(f"    max_papers: {sub.max_papers}")
        if sub.min_upvotes:
            lines.append(f"    min_upvotes: {sub.min_upvotes}")
        if sub.keywords:
            lines.append(f"    keywords: [{', '.join(_q(k) for k in sub.keywords)}]")
        if sub.exclude:
            lines.append(f"    exclude: [{', '.join(_q(k) for k in sub.exclude)}]")
        if sub.sections:
            lines.append("    sections: true")
    return "\n".join(lines) + "\n"


def write(path: Path, subscribers: int, port: int) -> Path:
    path.write_text(text(subscribers, port), encoding="utf-8")
    return path
