"""Topics -> matches, once per run. Pure: no clock, disk or network in here.

``match_topics(papers, topics)`` compiles each topic's keywords into one pattern, searched
for only in the papers whose text holds every word of a keyword (an index of the papers'
words, built once per run, tells which; ``reference=True`` searches every paper, which the
tests compare with). A subscriber's own keywords and excludes become topics of their own
(``topics_for_run``), shared by everyone with the same list, and each distinct keyword is
matched once, so the cost does not grow with the number of subscribers.

Keywords match whole words and phrases, case-insensitively, in the title, the AI keywords
and the abstract (the strongest field wins). "Whole word" means the keyword is not glued to
a letter or digit on either side: ``diffusion`` matches "Diffusion-based" and "(diffusion)"
but not "diffusions" or "superdiffusion". Plurals are not guessed: list "model" and
"models" if you want both. Whitespace inside a phrase matches any run of whitespace, and a
hyphen matches a hyphen or a space ("flow matching" also finds "flow-matching", and the
other way round). ``exclude`` terms veto a paper when they appear in any of those fields.
``authors`` and ``organizations`` match whole words of an author's or the organization's
name ("LeCun" finds "Yann LeCun"); ``categories`` match arXiv categories exactly ("cs.CL").
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from newsletter.models import PaperData, Subscriber, Topic, Trend

TEXT_FIELDS = ("title", "ai_keywords", "abstract")  # in order of strength
STRENGTH = {
    "title": 1.0,
    "authors": 1.0,
    "organization": 0.8,
    "ai_keywords": 0.6,
    "abstract": 0.4,
    "categories": 0.3,
}


@dataclass(frozen=True, slots=True)
class Match:
    """Why one paper matched one topic: the term and the strongest field it was in."""

    topic: str
    keyword: str
    field: str


@dataclass(frozen=True, slots=True)
class Matches:
    """The result of matching every topic against every paper, once per run."""

    papers: Mapping[str, PaperData]
    by_topic: Mapping[str, Mapping[str, Match]]  # topic -> paper id -> match
    trends: Mapping[str, Trend] = field(default_factory=dict)
    #: What a section heading calls a topic (``Topic.display_name``), for those that have one.
    names: Mapping[str, str] = field(default_factory=dict)
    #: Ranked hit lists, built on first use by ``select`` and shared by every subscriber.
    cache: dict[object, Any] = field(default_factory=dict, compare=False, repr=False)


#: Where a keyword first matched a paper: field index (TEXT_FIELDS), position, text found.
Hit = tuple[int, int, str]


class TopicMatches(Mapping[str, Mapping[str, Match]]):
    """Matches by topic; a personal topic's are assembled from its keywords when asked.

    Every subscriber with personal keywords has a topic of their own, so there can be as
    many as subscribers; matching each against every paper would cost a regex pass per
    subscriber. Instead each distinct keyword is matched once (``by_keyword``).
    """

    def __init__(
        self,
        fixed: dict[str, dict[str, Match]],
        personal: dict[str, Topic],
        by_keyword: dict[str, dict[str, Hit]],
    ) -> None:
        self.fixed = fixed
        self.personal = personal
        self.by_keyword = by_keyword

    def __getitem__(self, name: str) -> Mapping[str, Match]:
        found = self.fixed.get(name)
        if found is not None:
            return found
        topic = self.personal[name]
        best: dict[str, tuple[tuple[int, int, int], str]] = {}
        for term in distinct_terms(topic.keywords):
            for pid, (fi, start, text) in self.by_keyword[norm_term(term)].items():
                rank = (fi, start, -len(term))
                held = best.get(pid)
                if held is None or rank < held[0]:
                    best[pid] = (rank, text)
        return {
            pid: Match(name, canonical_term(text, topic.keywords), TEXT_FIELDS[rank[0]])
            for pid, (rank, text) in best.items()
        }

    def __iter__(self) -> Iterator[str]:
        yield from self.fixed
        yield from self.personal

    def __len__(self) -> int:
        return len(self.fixed) + len(self.personal)

    def hit(self, term: str, pid: str) -> Hit | None:
        return self.by_keyword[norm_term(term)].get(pid)


def distinct_terms(terms: Iterable[str]) -> list[str]:
    return sorted({t.strip() for t in terms if t.strip()}, key=lambda t: (-len(t), t))


def _is_personal(topic: Topic) -> bool:
    return topic.name.startswith("~") and not (
        topic.exclude or topic.authors or topic.organizations or topic.categories
    )


def compile_terms(terms: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive pattern for whole words and phrases (see the module docstring)."""
    return Terms(terms).pattern


def _term_words(terms: Iterable[str]) -> list[list[str]]:
    """Each distinct term's words, longest term first (the pattern tries them in this order)."""
    ordered = sorted({t.strip() for t in terms if t.strip()}, key=len, reverse=True)
    return [[w for w in re.split(r"[\s-]+", term) if w] for term in ordered]


class Terms:
    """``compile_terms``' pattern, and a faster way to search ASCII text with it.

    The pattern starts with a look-behind and ignores case, so the regex engine tries it at
    every character. For ASCII terms in ASCII text the same search runs on the lowercased
    text with a case-sensitive pattern that starts with a literal (which the engine skips
    to), checking the character before a match by hand. It finds the same leftmost match.
    """

    def __init__(self, terms: Iterable[str]) -> None:
        words = _term_words(terms)
        self.pattern: re.Pattern[str] | None = None
        self.lowered: re.Pattern[str] | None = None
        #: Per term, the tokens a text must hold for it to match (``_Postings``); None: any text.
        self.needs: list[frozenset[str]] | None = None
        if not words:
            return
        parts = [r"[\s-]+".join(re.escape(w) for w in ws) for ws in words]
        self.pattern = re.compile(
            r"(?<![^\W_])(?:" + "|".join(parts) + r")(?![^\W_])", re.IGNORECASE
        )
        if all(w.isascii() for ws in words for w in ws):
            lowered = [r"[\s-]+".join(re.escape(w.lower()) for w in ws) for ws in words]
            self.lowered = re.compile(r"(?:" + "|".join(lowered) + r")(?![^\W_])")
            needs = [frozenset(t for w in ws for t in _TOKEN.findall(w.lower())) for ws in words]
            if all(needs):  # a term of punctuation only ("++") can match without any token
                self.needs = needs

    def search(self, text: str, lowered: str | None) -> tuple[int, str] | None:
        """(start, text found) of the leftmost match; ``lowered``: text.lower() if ASCII."""
        if self.pattern is None:
            return None
        if self.lowered is None or lowered is None:
            m = self.pattern.search(text)
            return (m.start(), m.group(0)) if m else None
        pos = 0
        # Bounded: a term of hyphens only matches the empty string, also at the very end,
        # where searching from one past the end would find that same match again, forever.
        while pos <= len(lowered) and (m := self.lowered.search(lowered, pos)) is not None:
            start = m.start()
            if start == 0 or not lowered[start - 1].isalnum():  # the look-behind, for ASCII
                return start, text[start : m.end()]
            pos = start + 1
        return None


def norm_term(term: str) -> str:
    return " ".join(re.split(r"[\s-]+", term.casefold().strip()))


def canonical_term(found: str, terms: Sequence[str]) -> str:
    """The term as the operator wrote it, for the reason line."""
    norm = norm_term(found)
    return next((t for t in terms if norm_term(t) == norm), found)


# -- personal keywords and excludes become topics of their own --------------------------


def personal_topic_name(subscriber: Subscriber) -> str | None:
    return _list_name("keywords", subscriber.keywords) if subscriber.keywords else None


def personal_exclude_name(subscriber: Subscriber) -> str | None:
    return _list_name("exclude", subscriber.exclude) if subscriber.exclude else None


@functools.lru_cache(maxsize=8192)  # asked for on every select; lists repeat
def _list_name(kind: str, terms: tuple[str, ...]) -> str:
    digest = hashlib.sha1("\0".join(sorted(map(norm_term, terms))).encode()).hexdigest()
    return f"~{kind}:{digest[:16]}"


def topics_for_run(
    topics: Mapping[str, Topic], subscribers: Iterable[Subscriber]
) -> dict[str, Topic]:
    """The operator's topics plus one per distinct personal keyword or exclude list."""
    out = dict(topics)
    for sub in subscribers:
        name = personal_topic_name(sub)
        if name and name not in out:
            out[name] = Topic(name=name, keywords=sub.keywords)
        name = personal_exclude_name(sub)
        if name and name not in out:
            # Matching an exclude list tells which papers it vetoes.
            out[name] = Topic(name=name, keywords=sub.exclude)
    return out


# -- matching, once per run --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Text:
    fields: dict[str, str]  # TEXT_FIELDS -> text
    lowered: dict[str, str | None]  # text.lower() where it is ASCII, for Terms.search


def _texts(paper: PaperData) -> _Text:
    fields = {
        "title": paper.title,
        "ai_keywords": " · ".join(paper.ai_keywords),
        "abstract": paper.abstract,
    }
    return _Text(fields, {k: v.lower() if v.isascii() else None for k, v in fields.items()})


# A term's words, where they match, are bounded by characters that are not letters or digits
# (or the text's ends), so each run of letters and digits in an ASCII term is, lowercased, a
# whole run ("token") of the text. A text without all of a term's tokens cannot match it, and
# most papers lack most terms: ``_Postings`` says which papers to search at all.
_TOKEN = re.compile(r"[^\W_]+")  # what the pattern's look-arounds count as a letter or digit
#: The only non-ASCII characters that re.IGNORECASE matches with an ASCII letter or digit
#: ('İ' and 'ı' with i, LONG S with s, KELVIN SIGN with k; a test tries every code point).
IGNORECASE_ASCII = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
# Not str.lower(): 'İ'.lower() is two characters, the second not a letter.
_FOLD = str.maketrans({**{c: c.lower() for c in string.ascii_uppercase}, **IGNORECASE_ASCII})
_SPACE_OUT = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})


def _tokens(text: str, lowered: str | None) -> list[str]:
    """The text's runs of letters and digits, lowercased as an ASCII term's match would be."""
    if lowered is not None:  # ASCII: the same runs as _TOKEN finds, faster
        return lowered.translate(_SPACE_OUT).split()
    return _TOKEN.findall(text.translate(_FOLD))


class _Postings:
    """Per text field, the papers holding each token that some term needs."""

    def __init__(self, texts: Mapping[str, _Text], wanted: set[str]) -> None:
        self.by_field: list[dict[str, set[str]]] = [{} for _ in TEXT_FIELDS]
        if not wanted:
            return  # no term can be looked up by its tokens: no need to read the texts
        for index, fname in zip(self.by_field, TEXT_FIELDS, strict=True):
            for pid, text in texts.items():
                for token in wanted.intersection(_tokens(text.fields[fname], text.lowered[fname])):
                    index.setdefault(token, set()).add(pid)

    def candidates(self, terms: Terms) -> list[set[str]] | None:
        """Per field, the papers where ``terms`` may match (a superset); None: any paper."""
        if terms.needs is None:
            return None
        out: list[set[str]] = []
        for index in self.by_field:
            found: set[str] = set()
            for need in terms.needs:
                postings = sorted((index.get(t, set()) for t in need), key=len)
                found |= postings[0].intersection(*postings[1:])
            out.append(found)
        return out


def _wanted(terms: Iterable[Terms]) -> set[str]:
    return {t for ts in terms if ts.needs for need in ts.needs for t in need}


def match_topics(
    papers: Iterable[PaperData],
    topics: Mapping[str, Topic],
    *,
    trends: Mapping[str, Trend] | None = None,
    reference: bool = False,
) -> Matches:
    """Every topic against every paper (how: the module docstring). ``reference``: search
    every paper with every pattern, without the token prefilter (the slow path the tests
    compare the fast one with); the same matches either way."""
    by_id = {p.id: p for p in papers}
    texts = {pid: _texts(p) for pid, p in by_id.items()}
    fixed_terms: dict[str, tuple[Topic, Terms, Terms]] = {}
    personal: dict[str, Topic] = {}
    keywords: dict[str, Terms] = {}  # normalised -> the first spelling's pattern
    for name, topic in topics.items():
        if _is_personal(topic):
            personal[name] = topic
        else:
            fixed_terms[name] = (topic, Terms(topic.keywords), Terms(topic.exclude))
    for topic in personal.values():
        for term in distinct_terms(topic.keywords):
            key = norm_term(term)
            if key not in keywords:
                keywords[key] = Terms([term])
    postings = None
    if not reference:
        every = [
            *keywords.values(),
            *(t for _, inc, exc in fixed_terms.values() for t in (inc, exc)),
        ]
        postings = _Postings(texts, _wanted(every))
    fixed = {
        name: _match_topic(topic, include, exclude, by_id, texts, postings)
        for name, (topic, include, exclude) in fixed_terms.items()
    }
    by_keyword = {key: _match_keyword(terms, texts, postings) for key, terms in keywords.items()}
    by_topic = TopicMatches(fixed, personal, by_keyword)
    names = {name: t.display_name for name, t in topics.items() if t.display_name}
    return Matches(papers=by_id, by_topic=by_topic, trends=dict(trends or {}), names=names)


def _match_keyword(
    terms: Terms, texts: Mapping[str, _Text], postings: _Postings | None
) -> dict[str, Hit]:
    may = postings.candidates(terms) if postings else None
    pids: Iterable[str] = texts if may is None else _in_order(texts, may)
    found: dict[str, Hit] = {}
    for pid in pids:
        text = texts[pid]
        for fi, fname in enumerate(TEXT_FIELDS):
            if may is not None and pid not in may[fi]:
                continue
            m = terms.search(text.fields[fname], text.lowered[fname])
            if m:
                found[pid] = (fi, m[0], m[1])
                break
    return found


def _in_order(papers: Iterable[str], may: list[set[str]]) -> list[str]:
    """The papers that may match in some field, in their order (the results' order)."""
    anywhere = set().union(*may)
    return [pid for pid in papers if pid in anywhere]


def _match_topic(
    topic: Topic,
    include: Terms,
    exclude: Terms,
    papers: Mapping[str, PaperData],
    texts: Mapping[str, _Text],
    postings: _Postings | None,
) -> dict[str, Match]:
    authors = compile_terms(topic.authors)
    orgs = compile_terms(topic.organizations)
    categories = {c.casefold() for c in topic.categories}
    may_include = postings.candidates(include) if postings else None
    may_exclude = postings.candidates(exclude) if postings else None
    pids: Iterable[str] = papers
    if may_include is not None and authors is None and orgs is None and not categories:
        pids = _in_order(papers, may_include)  # only a keyword can make a match
    canonical: dict[str, str] = {}  # text found -> keyword; the same few texts recur
    found: dict[str, Match] = {}
    for pid in pids:
        paper = papers[pid]
        text = texts[pid]
        if exclude.pattern is not None and any(
            exclude.search(text.fields[f], text.lowered[f])
            for fi, f in enumerate(TEXT_FIELDS)
            if may_exclude is None or pid in may_exclude[fi]
        ):
            continue
        candidates: list[Match] = []
        if include.pattern is not None:
            for fi, fname in enumerate(TEXT_FIELDS):
                if may_include is not None and pid not in may_include[fi]:
                    continue
                found_at = include.search(text.fields[fname], text.lowered[fname])
                if found_at:
                    keyword = canonical.get(found_at[1]) or canonical.setdefault(
                        found_at[1], canonical_term(found_at[1], topic.keywords)
                    )
                    candidates.append(Match(topic.name, keyword, fname))
                    break
        if authors is not None:
            for author in paper.authors:
                m = authors.search(author)
                if m:
                    candidates.append(Match(topic.name, author, "authors"))
                    break
        if orgs is not None and paper.organization:
            m = orgs.search(paper.organization)
            if m:
                candidates.append(Match(topic.name, paper.organization, "organization"))
        if categories:
            hit = next((c for c in paper.categories if c.casefold() in categories), None)
            if hit:
                candidates.append(Match(topic.name, hit, "categories"))
        if candidates:
            found[pid] = max(candidates, key=lambda m: STRENGTH[m.field])
    return found
