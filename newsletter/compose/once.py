"""Digest templates rendered once for everyone who gets the same papers.

Subscribers who get the same papers get the same email but for where it prints them, so a
digest template that ``split.split`` can split is rendered (the fast way, skeletons and all)
once per distinct digest, and only its recipient outputs are evaluated per recipient.
``RenderedOnce`` keeps those renders, by what the rest of the template reads; a composer owns
one. When a template cannot be split, or a recipient's value needs the full render, it says
why once per template (``reasons``) and the template is rendered in full for each recipient.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jinja2

from newsletter.compose import qp, split
from newsletter.compose.html import escaped
from newsletter.compose.partials import Partials
from newsletter.compose.templates import (
    CARD_TEMPLATE,
    HTML_TEMPLATE,
    TEXT_CARD_TEMPLATE,
    TEXT_TEMPLATE,
)
from newsletter.models import Pick

#: A few KB each; 2,048 catch ~87% of the repeats of the 100,000-subscriber bench (4,096:
#: ~91%) for ~10 MB per worker.
_CACHE_SIZE = 2048
#: Given by the renderer, not read from the context: ``card`` and ``paper_text`` render
#: these partials, so what those read joins the key instead.
_RENDERER_NAMES = frozenset({"card", "paper_text"})
_PARTIALS = {HTML_TEMPLATE: (CARD_TEMPLATE,), TEXT_TEMPLATE: (TEXT_CARD_TEMPLATE,)}

#: Renders template ``name`` (as ``template``, its split) with the first ``summaries`` picks'
#: summaries: the pieces of the fast path.
Render = Callable[[str, dict[str, Any], int, jinja2.Template], list[str]]


@dataclass(frozen=True, slots=True)
class _SplitTemplate:
    """A digest template split at its recipient outputs."""

    split: split.Split
    key_names: tuple[str, ...]  # what the rest reads, its cards and text blocks included
    markers: tuple[str, ...]  # what slot i prints in the rendered-once pieces


@dataclass(frozen=True, slots=True)
class _Rendered:
    picks: tuple[Pick, ...]  # checked on a hit: the key holds the papers by id
    pieces: list[str]
    positions: list[tuple[int, int]]  # (piece, output) to fill in per recipient
    shared: qp.Shared  # the encoding of the lines without a recipient's value, once


class RenderedOnce:
    """The digest templates' renders, shared by everyone with the same digest."""

    def __init__(
        self, env: jinja2.Environment, partials: Partials, marker_prefix: str, render: Render
    ) -> None:
        self.env = env
        self.render = render
        self.marker_prefix = marker_prefix
        self.done: OrderedDict[tuple[object, ...], _Rendered] = OrderedDict()
        self.renders = 0  # for tests and benchmarks
        #: Why a template is rendered in full for every recipient (or for some), by name.
        self.reasons: dict[str, str] = {}
        self.splits = {name: self._split(name, partials) for name in _PARTIALS}

    def _split(self, name: str, partials: Partials) -> _SplitTemplate | None:
        try:
            found = split.split(self.env, name)
        except split.CannotSplit as e:
            if e.reason is not None:
                self.reasons[name] = e.reason
            return None
        names = set(found.reads) - _RENDERER_NAMES
        for partial in _PARTIALS[name]:
            reads = partials.reads(partial)
            if reads is None:
                self.reasons[name] = (
                    f"{partial} includes or imports another template (which may print the recipient)"
                )
                return None
            recipient = set(reads.names) & split.RECIPIENT
            if recipient:
                self.reasons[name] = f"{partial} prints {', '.join(sorted(recipient))}"
                return None
            names |= set(reads.names)
        markers = tuple(f"{self.marker_prefix}{i}q" for i in range(found.count))
        return _SplitTemplate(found, tuple(sorted(names)), markers)

    def pieces(self, name: str, context: dict[str, Any], summaries: int) -> list[str] | None:
        """The template's pieces for this recipient, rendered once for everyone with the same
        digest; None when the template cannot be split or a value needs the full render."""
        once = self.splits[name]
        if once is None:
            return None
        found = once.split
        picks: tuple[Pick, ...] = context.get("picks", ())
        try:
            key = (
                name,
                summaries,
                *[_key_value(context.get(n)) for n in once.key_names],
                *[bool(context.get(t)) for t in found.tested],
            )
            rendered = self.done.get(key)
        except TypeError as e:  # an unhashable value in the context
            self._full(name, f"a value cannot key the cache ({e})")
            return None
        try:
            if rendered is None or rendered.picks != picks:
                rendered = self._render(name, once, context, summaries)
                self.done[key] = rendered
                if len(self.done) > _CACHE_SIZE:
                    self.done.popitem(last=False)
            else:
                self.done.move_to_end(key)
            values = split.evaluate(found, context)
        except Exception as e:  # any problem: the full render reports it, with file and line
            self._full(name, f"{type(e).__name__}: {e}")
            return None
        out = qp.Pieces(rendered.pieces)
        out.shared = rendered.shared
        html = name == HTML_TEMPLATE
        for position, i in rendered.positions:
            value = values[i]
            if type(value) is not str:
                if html and hasattr(value, "__html__"):
                    # Safe HTML is inlined with the layout: the full render does that.
                    self._full(name, "a recipient output is safe HTML (|safe, a macro)")
                    return None
                try:
                    value = str(value)
                except Exception as e:
                    self._full(name, f"a recipient output: {type(e).__name__}: {e}")
                    return None
            out[position] = escaped(value) if html else value
        return out

    def _full(self, name: str, reason: str) -> None:
        self.reasons.setdefault(name, reason)
        return None

    def _render(
        self, name: str, once: _SplitTemplate, context: dict[str, Any], summaries: int
    ) -> _Rendered:
        markers = once.markers
        shared = {k: v for k, v in context.items() if k not in split.RECIPIENT}
        shared |= split.flags(once.split, context)
        shared[split.SLOT] = markers.__getitem__
        self.renders += 1
        pieces = self.render(name, shared, summaries, once.split.template)
        index = {m: i for i, m in enumerate(markers)}
        positions = [(k, index[p]) for k, p in enumerate(pieces) if p in index]
        encoding = qp.Shared([k for k, _ in positions])
        return _Rendered(context.get("picks", ()), pieces, positions, encoding)


def _key_value(value: object) -> object:
    """A context value for the memo key. Picks go in as one number, a hash of what they
    hold with their papers by id (hashing a whole PaperData per pick costs more than the
    rest, and a key that held them all would take kilobytes); checked in full on a hit."""
    if type(value) is tuple and value and type(value[0]) is Pick:
        return hash(
            tuple(
                (id(p.paper), p.topic, p.keyword, p.field, p.reason, p.score, p.section, p.rising)
                for p in value
            )
        )
    return value
