"""The HTML part: skeletons inlined once per layout (fast), and in full per message (reference).

Inlining CSS with premailer is slow, so the fast path does not do it once per recipient.
Instead the HTML template is rendered as a *skeleton*: every printed ``{{ value }}`` becomes
a placeholder token, so the skeleton only depends on the template's structure, not on the
data. Skeletons are inlined once and cached; the values go in afterwards, escaped. Paper
cards are rendered the same way, separately (``{{ card(pick) }}`` in ``digest.html.j2``),
with the stylesheet of the digest, so a card is inlined once per card layout, however many
subscribers get it. Values marked safe (macros, ``|safe``) stay in the skeleton so that any
HTML in them is styled too.

    skeleton = template.render(context, every {{ value }} -> token)
    inlined  = cache[skeleton] or premailer(skeleton)
    html     = inlined with each token -> escape(value); card tokens -> the filled card

``reference_html`` renders the page in one go, cards included, and runs premailer on it:
what the fast path is tested against (lxml writes a quote in text as ``"`` where the fast
path's escaping writes ``&#34;``; the elements are the same).
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import cssutils
import jinja2
import premailer
from markupsafe import Markup, escape

from newsletter.compose import templates
from newsletter.compose.partials import Partials
from newsletter.compose.templates import CARD_TEMPLATE, HTML_TEMPLATE
from newsletter.errors import TemplateError
from newsletter.models import Pick

# cssutils checks each property's value against its CSS profiles only to log what it finds
# invalid, and inline_css silences its log; without profiles it skips that check (compiling
# their patterns was 50 ms of every process that composes). What it parses and writes is the
# same: it writes invalid values too (its serializer's validOnly is off).
cssutils.profile.removeProfile(all=True)

_CACHE_SIZE = 256
_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_STYLE_RE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)
_CARD_START, _CARD_END = "<!--newsletter-card-start-->", "<!--newsletter-card-end-->"


class Placeholders:
    """The tokens that stand for values ("x"), cards ("c") and runs of cards ("r").

    The prefix is random per composer so that no text in a template or a paper can be
    mistaken for a placeholder. Tokens are made once and reused, so a skeleton's pieces are
    the same objects from one recipient to the next and a layout can be looked up by its
    pieces (a tuple of strings whose hashes are cached) instead of by a joined 20 KB string.
    """

    def __init__(self) -> None:
        self.prefix = "nlslot" + secrets.token_hex(6)
        self.slot_re = re.compile(re.escape(self.prefix) + r"(\d+)([xc])")
        # A run of cards, wherever the template prints them, is inlined as one placeholder,
        # so the number of papers in a digest does not make a new layout.
        # Written to start with the literal prefix: the regex engine then searches for it
        # (fast) instead of trying the group at every position of a 20 KB skeleton.
        card = re.escape(self.prefix) + r"\d+c\s*"
        self.card_run_re = re.compile(card + "(?:" + card + ")*")
        self.layout_token_re = re.compile("(" + re.escape(self.prefix) + r"(\d+)([xcr]))")
        self.made: dict[str, list[str]] = {"x": [], "c": [], "r": []}
        self.card_numbers: dict[str, int] = {}

    def token(self, index: int, kind: str) -> str:
        """The placeholder for value, card or run number ``index`` (one object per token)."""
        made = self.made[kind]
        while len(made) <= index:
            made.append(f"{self.prefix}{len(made)}{kind}")
            if kind == "c":
                self.card_numbers[made[-1]] = len(made) - 1
        return made[index]


@dataclass(frozen=True, slots=True)
class _Card:
    """What ``card(pick)`` prints: a slot filled with the separately inlined card."""

    pick: Pick
    show_summary: bool


class _Slots:
    """The values and cards printed while rendering one skeleton, in order.

    Cards are numbered apart from values (tokens ending in "c" and "x"), so that the tokens
    of the values after the cards do not depend on how many cards there are.
    """

    def __init__(self, placeholders: Placeholders) -> None:
        self.token = placeholders.token
        self.value_tokens = placeholders.made["x"]
        self.values: list[str] = []
        self.cards: list[_Card] = []

    def add(self, value: str | _Card) -> str:
        if isinstance(value, _Card):
            self.cards.append(value)
            return self.token(len(self.cards) - 1, "c")
        return self.value(value)

    def value(self, value: str) -> str:
        values = self.values
        values.append(value)
        i = len(values) - 1
        # Called for every printed value: the made token without a call, when there is one.
        return self.value_tokens[i] if i < len(self.value_tokens) else self.token(i, "x")


#: A run of cards as it is filled in: card numbers and the whitespace between them.
_Run = list[int | str]


@dataclass(frozen=True, slots=True)
class _Layout:
    parts: list[tuple[str, int, str, str]]  # literal before a token, its index, kind, token
    tail: str
    css: str  # the digest's stylesheet, for inlining its cards


class Inliner:
    """premailer's results by skeleton: one run per layout, however many recipients."""

    def __init__(self) -> None:
        self.done: OrderedDict[str, str] = OrderedDict()
        self.runs = 0  # premailer runs, for tests and benchmarks

    def inline(self, key: str, html: str) -> str:
        done = self.done
        cached = done.get(key)
        if cached is not None:
            done.move_to_end(key)
            return cached
        result = inline_css(html)
        self.runs += 1
        done[key] = result
        if len(done) > _CACHE_SIZE:
            done.popitem(last=False)
        return result


class Layouts:
    """Inlined digest skeletons split at their tokens, by skeleton and by its pieces."""

    def __init__(self, placeholders: Placeholders, inliner: Inliner) -> None:
        self.placeholders = placeholders
        self.inliner = inliner
        self.by_string: dict[str, _Layout] = {}
        self.by_pieces: OrderedDict[tuple[str, ...], _Layout] = OrderedDict()

    def of_pieces(self, pieces: list[str], cards: int) -> tuple[list[_Run], _Layout] | None:
        """The layout of a skeleton given as pieces, looked up by the pieces themselves.

        The same as ``of_string`` of their join, without joining, searching and hashing
        some 20 KB per recipient: a run of card tokens (with the whitespace after each, as
        ``card_run_re`` takes it) becomes a run token. None when some card token is not a
        piece of its own (printed inside a macro's HTML): the string way finds those.
        """
        numbers = self.placeholders.card_numbers
        token = self.placeholders.token
        key: list[str] = []
        runs: list[_Run] = []
        run: _Run | None = None
        found = 0
        for piece in pieces:
            number = numbers.get(piece)
            if number is not None:
                if run is None:
                    run = []
                    key.append(token(len(runs), "r"))
                    runs.append(run)
                run.append(number)
                found += 1
                continue
            if run is not None:
                if piece.isspace():
                    run.append(piece)
                    continue
                rest = piece.lstrip()  # str whitespace is the regex's \s
                if len(rest) < len(piece):
                    run.append(piece[: len(piece) - len(rest)])
                piece = rest
                run = None
            key.append(piece)
        if found != cards:
            return None
        shape = tuple(key)
        by_pieces = self.by_pieces
        layout = by_pieces.get(shape)
        if layout is None:
            layout = by_pieces[shape] = self._layout("".join(shape))
            if len(by_pieces) > _CACHE_SIZE:
                by_pieces.popitem(last=False)
        return runs, layout

    def of_string(self, skeleton: str) -> tuple[list[_Run], _Layout]:
        """Runs of card tokens found in the joined skeleton, and its layout."""
        runs: list[_Run] = []
        placeholders = self.placeholders

        def run(m: re.Match[str]) -> str:
            items: _Run = []
            at = 0
            text = m.group(0)
            for t in placeholders.slot_re.finditer(text):
                items.append(text[at : t.start()])
                items.append(int(t.group(1)))
                at = t.end()
            items.append(text[at:])
            runs.append(items)
            return placeholders.token(len(runs) - 1, "r")

        return runs, self._layout(placeholders.card_run_re.sub(run, skeleton))

    def _layout(self, layout: str) -> _Layout:
        """The layout inlined (cached) and split at its tokens, once per layout."""
        found = self.by_string.get(layout)
        if found is not None:
            return found
        inlined = self.inliner.inline(layout, layout)
        pieces = self.placeholders.layout_token_re.split(inlined)
        parts = [
            (pieces[i], int(pieces[i + 2]), pieces[i + 3], pieces[i + 1])
            for i in range(0, len(pieces) - 1, 4)
        ]
        # Not the <style> inside <!--[if mso]>: only Outlook reads that one.
        css = "\n".join(_STYLE_RE.findall(_COMMENT_RE.sub("", layout)))
        found = self.by_string[layout] = _Layout(parts, pieces[-1], css)
        if len(self.by_string) > _CACHE_SIZE:
            self.by_string.pop(next(iter(self.by_string)))
        return found


class HtmlRenderer:
    """The fast HTML path for one environment: skeletons, inlined layouts, cached cards.

    It installs its ``finalize`` on the environment, which must not have compiled a template
    yet (``templates.read`` comes after): while a skeleton renders, every printed value goes
    to its slots.
    """

    def __init__(self, env: jinja2.Environment, partials: Partials) -> None:
        self.env = env
        self.partials = partials
        self.placeholders = Placeholders()
        self.inliner = Inliner()
        self.layouts = Layouts(self.placeholders, self.inliner)
        self.active: _Slots | None = None  # set while a skeleton renders
        env.finalize = self.finalize

    def finalize(self, value: object) -> object:
        slots = self.active
        if slots is None:
            return value  # a plain render (the text part)
        if type(value) is str:  # the usual case
            return slots.value(value)
        if isinstance(value, _Card):
            return slots.add(value)
        if hasattr(value, "__html__"):
            return value  # HTML from a macro or |safe: inline it with the template
        # str() here, not later, so an undefined value fails with its template and line.
        return slots.value(str(value))

    def render(
        self,
        context: dict[str, Any],
        *,
        with_summary: set[int],
        template: jinja2.Template | None = None,
    ) -> list[str]:
        """The HTML's pieces; ``with_summary``: the ``id()`` of each pick that keeps its summary.

        ``template``: this one instead of the digest template (a split of it, ``once``).
        """

        def card(pick: Pick) -> _Card:
            return _Card(pick, id(pick) in with_summary)

        slots = _Slots(self.placeholders)
        pieces = self._skeleton(HTML_TEMPLATE, context | {"card": card}, slots, template)
        found = self.layouts.of_pieces(pieces, len(slots.cards))
        if found is None:  # a card printed inside other HTML (a macro): the string way
            runs, layout = self.layouts.of_string("".join(pieces))
        else:
            runs, layout = found
        css = layout.css

        # The inlined layout, split once at its tokens: literal, index, kind (x value, r run).
        out: list[str] = []
        values = slots.values
        cards = slots.cards
        for literal, index, kind, token in layout.parts:
            out.append(literal)
            if kind == "x" and index < len(values):
                out.append(escaped(values[index]))
            elif kind == "r" and index < len(runs):
                for item in runs[index]:
                    out.append(
                        self._cached_card(css, context, cards[item])
                        if isinstance(item, int)
                        else item
                    )
            else:
                out.append(token)
        out.append(layout.tail)
        return out

    def _skeleton(
        self,
        name: str,
        context: dict[str, Any],
        slots: _Slots,
        template: jinja2.Template | None = None,
    ) -> list[str]:
        """The template's pieces with every printed value (and card) replaced by a token."""
        outer, self.active = self.active, slots
        try:
            return templates.render_pieces(self.env, name, context, template)
        finally:
            self.active = outer

    def _cached_card(self, css: str, context: dict[str, Any], slot: _Card) -> str:
        return self.partials.cached(
            CARD_TEMPLATE,
            context,
            slot.pick,
            (css, slot.show_summary),
            lambda: self._card(css, context, slot),
        )

    def _card(self, css: str, context: dict[str, Any], slot: _Card) -> str:
        slots = _Slots(self.placeholders)
        card_context = context | {
            "pick": slot.pick,
            "paper": slot.pick.paper,
            "show_summary": slot.show_summary,
        }
        skeleton = "".join(self._skeleton(CARD_TEMPLATE, card_context, slots))
        # The card is inlined on its own, inside a table as in the digest, with the digest's
        # stylesheet; so its rules must not depend on elements outside the card.
        page = (
            f"<html><head><style>{css}</style></head><body><table>"
            f"{_CARD_START}{skeleton}{_CARD_END}</table></body></html>"
        )
        inlined = self.inliner.inline("card\0" + page, page)
        start, end = inlined.find(_CARD_START), inlined.find(_CARD_END)
        if start < 0 or end < start:
            raise TemplateError(CARD_TEMPLATE, None, "the card is not valid inside a <table>")
        return self._fill(inlined[start + len(_CARD_START) : end], slots)

    def _fill(self, inlined: str, slots: _Slots) -> str:
        """The card's values in place of their tokens (a card holds no card)."""

        def value(m: re.Match[str]) -> str:
            index, kind = int(m.group(1)), m.group(2)
            if kind == "c" and index < len(slots.cards):
                return ""
            if kind == "x" and index < len(slots.values):
                return escaped(slots.values[index])
            return m.group(0)

        return self.placeholders.slot_re.sub(value, inlined)


_HTML_SPECIAL = re.compile(r"[&<>'\"]")


def escaped(value: str) -> str:
    """``str(escape(value))``, without its cost for the many values with nothing to escape."""
    return str(escape(value)) if _HTML_SPECIAL.search(value) else value


def reference_html(
    env: jinja2.Environment, context: dict[str, Any], *, with_summary: set[int]
) -> str:
    """The page rendered in one go, cards included, then inlined: the reference."""

    def card(pick: Pick) -> Markup:
        card_context = context | {
            "pick": pick,
            "paper": pick.paper,
            "show_summary": id(pick) in with_summary,
        }
        return Markup(templates.render(env, CARD_TEMPLATE, card_context))

    return inline_css(templates.render(env, HTML_TEMPLATE, context | {"card": card}))


def inline_css(html: str) -> str:
    """Inline the <style> rules into style attributes; media queries stay in <style>.

    No network (a linked stylesheet is left alone), ``!important`` kept (the mobile and
    dark-mode rules need it to beat the inlined styles), cssutils quiet: its warnings
    about email-only properties (mso-hide) are noise for an operator.
    """
    try:
        return str(
            premailer.Premailer(
                html,
                allow_network=False,
                allow_loading_external_files=False,
                strip_important=False,
                keep_style_tags=False,
                remove_classes=False,
                cssutils_logging_level=logging.CRITICAL,
                disable_validation=True,
                # Keep the template's width/height attributes: Outlook sizes images by them
                # (width="552"), where the CSS says width: 100% for everyone else.
                disable_basic_attributes=["width", "height"],
            ).transform()
        )
    except Exception as e:  # premailer raises bare exceptions from lxml and cssutils
        raise TemplateError(HTML_TEMPLATE, None, f"cannot inline CSS: {e}") from e
