"""Paper cards and text blocks, rendered once and reused for every subscriber who gets them.

A card (``_paper.html.j2``) or a text block (``_paper.txt.j2``) depends only on its own
arguments, the pick's attributes it prints and the context names it reads; those key its
cache, which a composer owns (``Partials``). What a partial reads is found in its syntax
tree once, when the composer is made; a partial that includes or imports another may read
anything, so it is rendered every time.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes

from newsletter.compose.templates import CARD_TEMPLATE, TEXT_CARD_TEMPLATE
from newsletter.models import PaperData, Pick

#: A few KB each: one is the same for every subscriber who gets that pick.
_CACHE_SIZE = 8192
_OWN = frozenset({"pick", "paper", "show_summary", "index"})


@dataclass(frozen=True, slots=True)
class Reads:
    """What a partial template reads besides its own names."""

    names: tuple[str, ...]  # context names
    pick_attrs: tuple[str, ...] | None  # attributes of ``pick``; None: the pick as a whole
    get_attrs: Callable[[Pick], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.pick_attrs:  # one C call per lookup instead of a generator
            object.__setattr__(self, "get_attrs", operator.attrgetter(*self.pick_attrs))
        elif self.pick_attrs is not None:
            object.__setattr__(self, "get_attrs", lambda pick: ())


class Partials:
    """Cards and text blocks rendered so far, by what they depend on."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        self.done: OrderedDict[tuple[object, ...], tuple[PaperData, str]] = OrderedDict()
        self.renders = 0  # paper cards and text blocks rendered, for tests and benchmarks
        self._reads: dict[str, Reads | None] = {}
        for name in (CARD_TEMPLATE, TEXT_CARD_TEMPLATE):
            self.reads(name)

    def reads(self, name: str) -> Reads | None:
        """What a partial template reads besides its own names; None: cannot tell.

        A partial's output depends only on these (and its own arguments), so they key its
        cache. A template that includes or imports another may read anything: no cache then.
        """
        if name not in self._reads:
            self._reads[name] = None
            env = self.env
            if env.loader is None:
                return None
            try:
                ast = env.parse(env.loader.get_source(env, name)[0])
                # Analysing compiles: an unknown filter or test is found here.
                names = jinja2.meta.find_undeclared_variables(ast) - _OWN
            except jinja2.TemplateError:
                return None  # rendering reports it, with file and line
            n = jinja2.nodes
            if not any(True for _ in ast.find_all((n.Include, n.Import, n.FromImport, n.Extends))):
                # pick.x, pick.y only: the key holds those, not the whole pick (its topic,
                # score and section differ between subscribers; a card need not).
                attrs = {
                    g.attr
                    for g in ast.find_all(n.Getattr)
                    if isinstance(g.node, n.Name) and g.node.name == "pick"
                }
                uses = sum(1 for x in ast.find_all(n.Name) if x.name == "pick")
                getattrs = sum(
                    1
                    for g in ast.find_all(n.Getattr)
                    if isinstance(g.node, n.Name) and g.node.name == "pick"
                )
                # pick.paper is in every key already (its id, the paper checked on a hit):
                # hashing a whole PaperData per lookup would cost more than the rest.
                pick_attrs = tuple(sorted(attrs - {"paper"})) if uses == getattrs else None
                self._reads[name] = Reads(tuple(sorted(names)), pick_attrs)
        return self._reads[name]

    def cached(
        self,
        name: str,
        context: dict[str, Any],
        pick: Pick,
        own: tuple[object, ...],
        render_it: Callable[[], str],
    ) -> str:
        """``render_it()``, once per partial, arguments (``own``) and what it reads."""
        reads = self.reads(name)
        if reads is None:
            return render_it()
        try:
            picked = pick if reads.get_attrs is None else reads.get_attrs(pick)
        except AttributeError:  # a typo in the template: rendering reports it, with the line
            return render_it()
        # Keyed by the paper's id, checked by the paper itself: hashing a whole PaperData per
        # card costs more than the lookup; the same object (the usual case) compares at once.
        paper = pick.paper
        if reads.names:
            key = (name, *own, paper.id, picked, *[context.get(n) for n in reads.names])
        else:
            key = (name, *own, paper.id, picked)
        done = self.done
        try:
            cached = done.get(key)
        except TypeError:  # an unhashable value in the context
            return render_it()
        if cached is not None and (cached[0] is paper or cached[0] == paper):
            done.move_to_end(key)
            return cached[1]
        self.renders += 1
        result = render_it()
        done[key] = (paper, result)
        if len(done) > _CACHE_SIZE:
            done.popitem(last=False)
        return result
