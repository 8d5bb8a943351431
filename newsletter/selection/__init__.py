"""Which papers each subscriber gets. Pure: no clock, disk or network in here.

    matches = match_topics(papers, topics_for_run(topics, subscribers), trends=...)  (match.py)
    digest  = select(matches, subscriber, sent_ids, now, since=...)                  (rank.py)

``match.py`` turns topics into matches once per run (how keywords match: its docstring);
``rank.py`` builds each subscriber's digest from them (the score, sections and reason
lines: its docstring). Each has a ``reference=True`` switch for the slow, plain path the
tests compare the fast one with.
"""

from newsletter.selection.match import (
    Match,
    Matches,
    compile_terms,
    match_topics,
    personal_topic_name,
    topics_for_run,
)
from newsletter.selection.rank import (
    Request,
    Selecting,
    is_due,
    reason,
    score,
    select,
    window_start,
)

__all__ = [
    "Match",
    "Matches",
    "Request",
    "Selecting",
    "compile_terms",
    "is_due",
    "match_topics",
    "personal_topic_name",
    "reason",
    "score",
    "select",
    "topics_for_run",
    "window_start",
]
