"""Digest -> Email: the Jinja environment, the templates, CSS inlining, the size guard.

Pure apart from reading templates when the environment is built (``make_env``). Templates
are autoescaped and use StrictUndefined, so a typo in a variable name is an error, not a
blank. An operator's ``newsletter.templates_dir`` is searched before the built-in templates,
file by file.

Inlining CSS with premailer is slow, so it is not done once per recipient. Instead the HTML
template is rendered as a *skeleton*: every printed ``{{ value }}`` becomes a placeholder
token, so the skeleton only depends on the template's structure, not on the data. Skeletons
are inlined once and cached on the environment; the values go in afterwards, escaped. Paper
cards are rendered the same way, separately (``{{ card(pick) }}`` in ``digest.html.j2``),
with the stylesheet of the digest, so a card is inlined once per card layout, however many
subscribers get it. Values marked safe (macros, ``|safe``) stay in the skeleton so that any
HTML in them is styled too.

    skeleton = template.render(context, every {{ value }} -> token)
    inlined  = cache[skeleton] or premailer(skeleton)
    html     = inlined with each token -> escape(value); card tokens -> the filled card

Subscribers who get the same papers get the same email but for where it prints them, so a
digest template that ``per_recipient.split`` can split is rendered (as above) once per
distinct digest, and only its recipient outputs are evaluated per recipient (``_once``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import operator
import re
import secrets
import textwrap
import unicodedata
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2
import jinja2.meta
import jinja2.nodes
import premailer
from markupsafe import escape

from newsletter import per_recipient, qp
from newsletter.errors import TemplateError
from newsletter.models import Digest, Email, PaperData, Pick, Subscriber

log = logging.getLogger(__name__)

HTML_TEMPLATE = "digest.html.j2"
TEXT_TEMPLATE = "digest.txt.j2"
CARD_TEMPLATE = "_paper.html.j2"
TEXT_CARD_TEMPLATE = "_paper.txt.j2"

#: Gmail clips a message whose HTML exceeds about 102 KB; stay clearly below. Measured as
#: the HTML part goes on the wire (quoted-printable: "=" and non-ASCII take 3 bytes, long
#: lines a soft break), which is what a receiving server counts.
HTML_LIMIT = 100_000

_CACHE_SIZE = 256
#: Paper cards (HTML) and text blocks kept per environment: one is the same for every
#: subscriber who gets that pick, so it is rendered once (a few KB each).
_PARTIAL_CACHE_SIZE = 8192
_PARTIAL_OWN = frozenset({"pick", "paper", "show_summary", "index"})
_COMMENT_RE = re.compile(r"<!--.*?-->", re.DOTALL)
_STYLE_RE = re.compile(r"<style\b[^>]*>(.*?)</style>", re.IGNORECASE | re.DOTALL)
_CARD_START, _CARD_END = "<!--newsletter-card-start-->", "<!--newsletter-card-end-->"


class Environment(jinja2.Environment):
    """A Jinja environment that also holds the cache of inlined skeletons.

    The token prefix is random per environment so that no text in a template or a paper
    can be mistaken for a placeholder.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.slot_prefix = "nlslot" + secrets.token_hex(6)
        self.slot_re = re.compile(re.escape(self.slot_prefix) + r"(\d+)([xc])")
        # A run of cards, wherever the template prints them, is inlined as one placeholder,
        # so the number of papers in a digest does not make a new layout.
        # Written to start with the literal prefix: the regex engine then searches for it
        # (fast) instead of trying the group at every position of a 20 KB skeleton.
        card = re.escape(self.slot_prefix) + r"\d+c\s*"
        self.card_run_re = re.compile(card + "(?:" + card + ")*")
        self.inlined: OrderedDict[str, str] = OrderedDict()
        self.layouts: dict[str, _Layout] = {}
        self.layout_token_re = re.compile("(" + re.escape(self.slot_prefix) + r"(\d+)([xcr]))")
        self.inline_count = 0  # premailer runs, for tests and benchmarks
        # Tokens are made once and reused, so a skeleton's pieces are the same objects from
        # one recipient to the next and a layout can be looked up by its pieces (a tuple of
        # strings whose hashes are cached) instead of by a joined 20 KB string.
        self.tokens: dict[str, list[str]] = {"x": [], "c": [], "r": []}
        self.card_numbers: dict[str, int] = {}
        self.piece_layouts: OrderedDict[tuple[str, ...], _Layout] = OrderedDict()
        self.active_slots: _Slots | None = None  # set while a skeleton renders
        # Digests rendered once for every recipient who gets the same papers.
        self.splits: dict[str, _Once | None] = {}
        self.once: OrderedDict[tuple[object, ...], _Rendered] = OrderedDict()
        self.once_renders = 0  # for tests and benchmarks
        self.partials: OrderedDict[tuple[object, ...], tuple[PaperData, str]] = OrderedDict()
        self.partial_renders = 0  # paper cards and text blocks rendered, for tests and benchmarks
        self._partial_reads: dict[str, _Reads | None] = {}

    def token(self, index: int, kind: str) -> str:
        """The placeholder for value, card or run number ``index`` (one object per token)."""
        made = self.tokens[kind]
        while len(made) <= index:
            made.append(f"{self.slot_prefix}{len(made)}{kind}")
            if kind == "c":
                self.card_numbers[made[-1]] = len(made) - 1
        return made[index]

    def partial_reads(self, name: str) -> _Reads | None:
        """What a partial template reads besides its own names; None: cannot tell.

        A partial's output depends only on these (and its own arguments), so they key its
        cache. A template that includes or imports another may read anything: no cache then.
        """
        if name not in self._partial_reads:
            self._partial_reads[name] = None
            if self.loader is None:
                return None
            try:
                ast = self.parse(self.loader.get_source(self, name)[0])
                # Analysing compiles: an unknown filter or test is found here.
                names = jinja2.meta.find_undeclared_variables(ast) - _PARTIAL_OWN
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
                self._partial_reads[name] = _Reads(tuple(sorted(names)), pick_attrs)
        return self._partial_reads[name]


@dataclass(frozen=True, slots=True)
class _Reads:
    names: tuple[str, ...]  # context names
    pick_attrs: tuple[str, ...] | None  # attributes of ``pick``; None: the pick as a whole
    get_attrs: Callable[[Pick], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.pick_attrs:  # one C call per lookup instead of a generator
            object.__setattr__(self, "get_attrs", operator.attrgetter(*self.pick_attrs))
        elif self.pick_attrs is not None:
            object.__setattr__(self, "get_attrs", lambda pick: ())


def builtin_templates_dir() -> Path:
    """Inside the wheel the templates sit in the package; in a checkout, at the top level."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / HTML_TEMPLATE).is_file():
            return candidate
    raise TemplateError(HTML_TEMPLATE, None, f"built-in templates not found next to {here}")


def make_env(templates_dir: Path | None = None) -> Environment:
    """The environment; ``templates_dir`` overrides the built-in templates file by file."""
    searchpath = [str(templates_dir)] if templates_dir else []
    searchpath.append(str(builtin_templates_dir()))
    env = Environment(
        loader=jinja2.FileSystemLoader(searchpath),
        auto_reload=False,  # an environment lives for one run: no stat() per template use
        autoescape=jinja2.select_autoescape(["html", "html.j2"], default_for_string=False),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["authors_short"] = authors_short
    env.filters["excerpt"] = excerpt
    env.filters["wrap"] = wrap
    env.filters["http_url"] = http_url
    env.filters["thousands"] = lambda n: f"{n:,}"
    # Read and analyse the templates now, not while rendering the first digest (the
    # render stage reads no file). A broken one is left for rendering to report, with
    # its file and line.
    for name in (HTML_TEMPLATE, TEXT_TEMPLATE, CARD_TEMPLATE, TEXT_CARD_TEMPLATE):
        try:
            env.get_template(name)
        except jinja2.TemplateError:
            continue
    for name in (CARD_TEMPLATE, TEXT_CARD_TEMPLATE):
        env.partial_reads(name)
    for name in (HTML_TEMPLATE, TEXT_TEMPLATE):
        _once_for(env, name)
    return env


@dataclass(frozen=True, slots=True)
class Identity:
    """Per-installation values every email shows."""

    title: str
    base_url: str
    operator_address: str
    subject_template: str
    #: What prose calls a topic (``topics.<slug>.name``), by slug; a topic not here: its slug.
    topic_names: Mapping[str, str] = field(default_factory=dict)

    def topic_labels(self, topics: tuple[str, ...]) -> tuple[str, ...]:
        """The topics as the email names them (the template's ``topics``)."""
        names = self.topic_names
        return tuple([names.get(t, t) for t in topics]) if names else topics


# --- filters -------------------------------------------------------------------------------


def authors_short(authors: Sequence[str], first: int = 3) -> str:
    if len(authors) <= first:
        return ", ".join(authors)
    return ", ".join(authors[:first]) + " et al."


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@functools.lru_cache(maxsize=2048)  # the same abstracts, for every card and text block
def excerpt(text: str, limit: int = 400) -> str:
    """Cut at the last sentence boundary before ``limit``; at a word with an ellipsis if none."""
    if len(text) <= limit:
        return text
    cut = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > limit:
            break
        cut = m.start()
    if cut >= limit // 3:
        return text[:cut]
    head = text[:limit]
    if " " in head:
        head = head.rsplit(" ", 1)[0]
    return head.rstrip(",;:") + " …"


@functools.lru_cache(maxsize=4096)  # paper lines repeat; a recipient's own lines do not
def wrap(text: str, width: int = 78, indent: str = "") -> str:
    """Fill to ``width``; a word longer than a line (a URL) stays whole on its own line."""
    words = text.split(" ")
    if width - len(indent) >= 1 and words == text.split():
        return _fill_words(words, width - len(indent), indent)
    return textwrap.fill(
        text,
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _fill_words(words: list[str], room: int, indent: str) -> str:
    """``textwrap.fill`` (no hyphen or long-word breaks) for words between single spaces.

    The recipient's own lines (greeting, footer) miss the cache; textwrap's general
    chunking costs tens of microseconds each. Tested against textwrap.
    """
    lines: list[str] = []
    line: list[str] = []
    used = 0
    for word in words:
        if line:
            if used + 1 + len(word) <= room:
                line.append(word)
                used += 1 + len(word)
                continue
            lines.append(indent + " ".join(line))
        line, used = [word], len(word)
    if line:
        lines.append(indent + " ".join(line))
    return "\n".join(lines)


def http_url(value: str | None) -> str:
    """The URL when it is http(s), else "" (no javascript: or data: links from a source)."""
    if not value:
        return ""
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return ""
    return value.strip() if parts.scheme in ("http", "https") and parts.netloc else ""


# --- the subject ---------------------------------------------------------------------------


def one_line(text: str) -> str:
    """Whitespace runs (CR, LF, U+2028 ...) to one space, control characters dropped."""
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text  # nothing to do, the common case (isprintable: no Cc, Zl, Zp, no tab)
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)
    return " ".join(text.split())


def new_papers(count: int) -> str:
    """The subject's ``{papers}``: "1 new paper", "3 new papers"."""
    return f"{count} new paper" if count == 1 else f"{count} new papers"


def subject(identity: Identity, digest: Digest) -> str:
    count = len(digest.picks)
    text = identity.subject_template.format(
        title=identity.title, count=count, papers=new_papers(count), date=digest.day.isoformat()
    )
    # A header is one line: no CR/LF from a title or template can start another header.
    return one_line(text)


# --- rendering -----------------------------------------------------------------------------


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

    def __init__(self, env: Environment) -> None:
        self.token = env.token
        self.value_tokens = env.tokens["x"]
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


@jinja2.pass_environment
def _finalize(env: jinja2.Environment, value: object) -> object:
    slots: _Slots | None = getattr(env, "active_slots", None)
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
    digest: Digest,
    env: Environment,
    identity: Identity,
    *,
    recipient_name: str | None,
    unsubscribe_url: str,
    limit: int = HTML_LIMIT,
) -> Email:
    """The whole email for one recipient: HTML (inlined, <= ``limit`` bytes as it goes on
    the wire, quoted-printable) and text.

    The recipient's name and unsubscribe URL are arguments; they go into the inlined HTML
    escaped. When the HTML is too big, the summaries of the lowest-ranked papers go first,
    then whole papers from the bottom (logged); the email says how many papers did not fit.
    """
    return render_parts(
        digest,
        env,
        identity,
        recipient_name=recipient_name,
        unsubscribe_url=unsubscribe_url,
        limit=limit,
    )[0]


def render_parts(
    digest: Digest,
    env: Environment,
    identity: Identity,
    *,
    recipient_name: str | None,
    unsubscribe_url: str,
    limit: int = HTML_LIMIT,
) -> tuple[Email, Parts]:
    """``render``, and the pieces ``email.html`` and ``email.text`` are the joins of.

    Layout literals, paper cards and text blocks are the same objects in every email that
    has them, so ``message.build`` can keep their encoded lines by piece, not by line.
    """
    email, summaries, parts = _compose(
        digest, env, identity, recipient_name, unsubscribe_url, limit
    )
    size = parts.html_size
    if email.dropped_ids or summaries < len(email.paper_ids):
        log.warning(
            "render.size_guard subscriber=%s summaries_dropped=%d papers_dropped=%d "
            "dropped_ids=%s bytes=%d limit=%d",
            digest.subscriber.email,
            len(email.paper_ids) - summaries,
            len(email.dropped_ids),
            ",".join(email.dropped_ids) or "-",
            size,
            limit,
        )
    if size > limit:
        log.warning("render.over_limit subscriber=%s bytes=%d", digest.subscriber.email, size)
    return email, parts


def base_context(
    digest: Digest, identity: Identity, recipient_name: str | None, unsubscribe_url: str
) -> dict[str, Any]:
    """What both templates see, apart from the papers (``digest``, ``picks``, ``more``)."""
    return {
        "title": identity.title,
        "base_url": identity.base_url,
        "operator_address": identity.operator_address,
        "subject": subject(identity, digest),
        "recipient_name": recipient_name,
        "recipient_email": digest.subscriber.email,
        "unsubscribe_url": unsubscribe_url,
        "topics": identity.topic_labels(digest.subscriber.topics),
        "day": digest.day,
        "daily_url": f"https://huggingface.co/papers/date/{digest.day.isoformat()}",
    }


def _compose(
    digest: Digest,
    env: Environment,
    identity: Identity,
    recipient_name: str | None,
    unsubscribe_url: str,
    limit: int,
) -> tuple[Email, int, Parts]:
    """The email, how many of its papers kept their summary, and the pieces of its HTML."""
    base = base_context(digest, identity, recipient_name, unsubscribe_url)
    subject_line: str = base["subject"]
    n = len(digest.picks)

    def attempt(step: int) -> tuple[dict[str, Any], str, int, int, list[str], int]:
        """Step 0 is everything; each step drops the lowest-ranked summary left, and past
        the summaries, the lowest-ranked paper (one paper always stays)."""
        summaries = max(n - step, 0)
        kept = max(n - max(step - n, 0), min(n, 1))
        shown = digest if kept == n else dataclasses.replace(digest, picks=digest.picks[:kept])
        context = base | {"digest": shown, "picks": shown.picks, "more": n - kept}
        parts = _once(env, HTML_TEMPLATE, context, summaries)
        if parts is None:
            with_summary = {id(p) for p in digest.picks[:summaries]}
            parts = _render_html(env, context, with_summary=with_summary)
        html, pieces = "".join(parts), qp.Pieces(parts)  # measured once, sent as measured
        return context, html, min(summaries, kept), kept, pieces, qp.size(html, pieces)

    # Never cut bytes (the HTML must stay valid): leave out whole parts, least important
    # first. The size falls with every step, so a binary search finds the first that fits.
    result = attempt(0)
    if result[5] > limit and n > 0:
        low, high = 1, 2 * n - 1
        result = attempt(high)  # the last resort: one paper, no summary
        while low < high:
            mid = (low + high) // 2
            tried = attempt(mid)
            if tried[5] <= limit:
                high, result = mid, tried
            else:
                low = mid + 1
    context, html, summaries, kept, parts, size = result
    picks = digest.picks[:kept]
    text_parts = _once(env, TEXT_TEMPLATE, context, 0)
    if text_parts is None:
        text_parts = _render_text(env, context)
    text = "".join(text_parts)
    for name, body, url in (
        (HTML_TEMPLATE, html, str(escape(unsubscribe_url))),
        (TEXT_TEMPLATE, text, unsubscribe_url),
    ):
        # Bulk-sender rules require a visible unsubscribe link; an override must keep it.
        if url not in body:
            raise TemplateError(
                name, None, "the email has no unsubscribe link (print {{ unsubscribe_url }})"
            )
    email = Email(
        to=digest.subscriber.email,
        to_name=recipient_name,
        subject=subject_line,
        html=html,
        text=text,
        paper_ids=tuple(p.paper.id for p in picks),
        dropped_ids=tuple(p.paper.id for p in digest.picks[kept:]),
    )
    return email, summaries, Parts(parts, text_parts, size)


@dataclass(frozen=True, slots=True)
class Parts:
    """The pieces an email's HTML and text are the joins of."""

    html: list[str]
    text: list[str]
    html_size: int  # bytes of the HTML part on the wire (as message.build encodes it)


@dataclass(frozen=True, slots=True)
class _Once:
    """A digest template split at its recipient outputs (``per_recipient.split``)."""

    split: per_recipient.Split
    key_names: tuple[str, ...]  # what the rest reads, its cards and text blocks included
    markers: tuple[str, ...]  # what slot i prints in the rendered-once pieces


@dataclass(frozen=True, slots=True)
class _Rendered:
    picks: tuple[Pick, ...]  # checked on a hit: the key holds the papers by id
    pieces: list[str]
    positions: list[tuple[int, int]]  # (piece, output) to fill in per recipient


#: A few KB each; 2,048 catch ~87% of the repeats of the 100,000-subscriber bench (4,096:
#: ~91%) for ~10 MB per worker.
_ONCE_SIZE = 2048
#: Given by the renderer, not read from the context: ``card`` and ``paper_text`` render
#: these partials, so what those read joins the key instead.
_RENDERER_NAMES = frozenset({"card", "paper_text"})
_PARTIALS = {HTML_TEMPLATE: (CARD_TEMPLATE,), TEXT_TEMPLATE: (TEXT_CARD_TEMPLATE,)}


def _once_for(env: Environment, name: str) -> _Once | None:
    if name in env.splits:
        return env.splits[name]
    env.splits[name] = None
    found = per_recipient.split(env, name)
    if found is None:
        return None
    names = set(found.reads) - _RENDERER_NAMES
    for partial in _PARTIALS[name]:
        reads = env.partial_reads(partial)
        if reads is None or set(reads.names) & per_recipient.RECIPIENT:
            return None  # a card or text block that prints the recipient
        names |= set(reads.names)
    markers = tuple(f"{env.slot_prefix}{i}q" for i in range(found.count))
    env.splits[name] = _Once(found, tuple(sorted(names)), markers)
    return env.splits[name]


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


def _once(env: Environment, name: str, context: dict[str, Any], summaries: int) -> list[str] | None:
    """The template's pieces for this recipient, rendered once for everyone with the same
    digest; None when the template cannot be split or a value needs the full render."""
    once = _once_for(env, name)
    if once is None:
        return None
    split = once.split
    picks: tuple[Pick, ...] = context.get("picks", ())
    try:
        key = (
            name,
            summaries,
            *[_key_value(context.get(n)) for n in once.key_names],
            *[bool(context.get(t)) for t in split.tested],
        )
        rendered = env.once.get(key)
    except TypeError:  # an unhashable value in the context
        return None
    try:
        if rendered is None or rendered.picks != picks:
            rendered = _render_once(env, name, once, context, summaries)
            env.once[key] = rendered
            if len(env.once) > _ONCE_SIZE:
                env.once.popitem(last=False)
        else:
            env.once.move_to_end(key)
        values = per_recipient.evaluate(split, context)
    except Exception:  # any problem: the full render reports it, with file and line
        return None
    out = rendered.pieces.copy()
    html = name == HTML_TEMPLATE
    for position, i in rendered.positions:
        value = values[i]
        if type(value) is not str:
            if html and hasattr(value, "__html__"):
                return None  # safe HTML is inlined with the layout: the full render does that
            try:
                value = str(value)
            except Exception:
                return None
        out[position] = _escaped(value) if html else value
    return out


def _render_once(
    env: Environment, name: str, once: _Once, context: dict[str, Any], summaries: int
) -> _Rendered:
    markers = once.markers
    shared = {k: v for k, v in context.items() if k not in per_recipient.RECIPIENT}
    shared |= per_recipient.flags(once.split, context)
    shared[per_recipient.SLOT] = markers.__getitem__
    env.once_renders += 1
    if name == HTML_TEMPLATE:
        picks: tuple[Pick, ...] = context["picks"]
        with_summary = {id(p) for p in picks[:summaries]}
        pieces = _render_html(env, shared, with_summary=with_summary, template=once.split.template)
    else:
        pieces = _render_text(env, shared, template=once.split.template)
    index = {m: i for i, m in enumerate(markers)}
    positions = [(k, index[p]) for k, p in enumerate(pieces) if p in index]
    return _Rendered(context.get("picks", ()), pieces, positions)


def _render_html(
    env: Environment,
    context: dict[str, Any],
    *,
    with_summary: set[int],
    template: jinja2.Template | None = None,
) -> list[str]:
    """The HTML's pieces; ``with_summary``: the ``id()`` of each pick that keeps its summary."""

    def card(pick: Pick) -> _Card:
        return _Card(pick, id(pick) in with_summary)

    slots = _Slots(env)
    pieces = _render_skeleton(env, HTML_TEMPLATE, context | {"card": card}, slots, template)
    found = _piece_layout(env, pieces, len(slots.cards))
    if found is None:  # a card printed inside other HTML (a macro): the string way
        runs, layout = _string_layout(env, "".join(pieces), slots)
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
            out.append(_escaped(values[index]))
        elif kind == "r" and index < len(runs):
            for item in runs[index]:
                out.append(
                    _cached_card(env, css, context, cards[item]) if isinstance(item, int) else item
                )
        else:
            out.append(token)
    out.append(layout.tail)
    return out


#: A run of cards as it is filled in: card numbers and the whitespace between them.
_Run = list[int | str]


def _render_skeleton(
    env: Environment,
    name: str,
    context: dict[str, Any],
    slots: _Slots,
    template: jinja2.Template | None = None,
) -> list[str]:
    """The template's pieces with every printed value (and card) replaced by a token."""
    outer, env.active_slots = env.active_slots, slots
    try:
        return _render_pieces(env, name, context, template)
    finally:
        env.active_slots = outer


def _piece_layout(
    env: Environment, pieces: list[str], cards: int
) -> tuple[list[_Run], _Layout] | None:
    """The layout of a skeleton given as pieces, looked up by the pieces themselves.

    The same as ``_string_layout`` of their join, without joining, searching and hashing
    some 20 KB per recipient: a run of card tokens (with the whitespace after each, as
    ``card_run_re`` takes it) becomes a run token. None when some card token is not a
    piece of its own (printed inside a macro's HTML): the string way finds those.
    """
    numbers = env.card_numbers
    key: list[str] = []
    runs: list[_Run] = []
    run: _Run | None = None
    found = 0
    for piece in pieces:
        number = numbers.get(piece)
        if number is not None:
            if run is None:
                run = []
                key.append(env.token(len(runs), "r"))
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
    layout = env.piece_layouts.get(shape)
    if layout is None:
        layout = env.piece_layouts[shape] = _layout(env, "".join(shape))
        if len(env.piece_layouts) > _CACHE_SIZE:
            env.piece_layouts.popitem(last=False)
    return runs, layout


def _string_layout(env: Environment, skeleton: str, slots: _Slots) -> tuple[list[_Run], _Layout]:
    """Runs of card tokens found in the joined skeleton, and its layout."""
    runs: list[_Run] = []

    def run(m: re.Match[str]) -> str:
        items: _Run = []
        at = 0
        text = m.group(0)
        for t in env.slot_re.finditer(text):
            items.append(text[at : t.start()])
            items.append(int(t.group(1)))
            at = t.end()
        items.append(text[at:])
        runs.append(items)
        return env.token(len(runs) - 1, "r")

    return runs, _layout(env, env.card_run_re.sub(run, skeleton))


_HTML_SPECIAL = re.compile(r"[&<>'\"]")


def _escaped(value: str) -> str:
    """``str(escape(value))``, without its cost for the many values with nothing to escape."""
    return str(escape(value)) if _HTML_SPECIAL.search(value) else value


@dataclass(frozen=True, slots=True)
class _Layout:
    parts: list[tuple[str, int, str, str]]  # literal before a token, its index, kind, token
    tail: str
    css: str  # the digest's stylesheet, for inlining its cards


def _layout(env: Environment, layout: str) -> _Layout:
    """The layout inlined (cached) and split at its tokens, once per layout."""
    found = env.layouts.get(layout)
    if found is not None:
        return found
    inlined = _inline_cached(env, layout, layout)
    pieces = env.layout_token_re.split(inlined)
    parts = [
        (pieces[i], int(pieces[i + 2]), pieces[i + 3], pieces[i + 1])
        for i in range(0, len(pieces) - 1, 4)
    ]
    # Not the <style> inside <!--[if mso]>: only Outlook reads that one.
    css = "\n".join(_STYLE_RE.findall(_COMMENT_RE.sub("", layout)))
    found = env.layouts[layout] = _Layout(parts, pieces[-1], css)
    if len(env.layouts) > _CACHE_SIZE:
        env.layouts.pop(next(iter(env.layouts)))
    return found


def _cached_partial(
    env: Environment,
    name: str,
    context: dict[str, Any],
    pick: Pick,
    own: tuple[object, ...],
    render_it: Callable[[], str],
) -> str:
    """``render_it()``, once per partial, arguments (``own``) and what it reads."""
    reads = env.partial_reads(name)
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
    try:
        cached = env.partials.get(key)
    except TypeError:  # an unhashable value in the context
        return render_it()
    if cached is not None and (cached[0] is paper or cached[0] == paper):
        env.partials.move_to_end(key)
        return cached[1]
    env.partial_renders += 1
    result = render_it()
    env.partials[key] = (paper, result)
    if len(env.partials) > _PARTIAL_CACHE_SIZE:
        env.partials.popitem(last=False)
    return result


def _cached_card(env: Environment, css: str, context: dict[str, Any], slot: _Card) -> str:
    return _cached_partial(
        env,
        CARD_TEMPLATE,
        context,
        slot.pick,
        (css, slot.show_summary),
        lambda: _render_card(env, css, context, slot),
    )


def _render_text(
    env: Environment, context: dict[str, Any], template: jinja2.Template | None = None
) -> list[str]:
    """The text part; each paper's block comes from ``paper_text(pick, index)``, cached."""

    def paper_text(pick: Pick, index: int) -> str:
        def render_it() -> str:
            return _render(env, TEXT_CARD_TEMPLATE, context | {"pick": pick, "index": index})

        return _cached_partial(env, TEXT_CARD_TEMPLATE, context, pick, (index,), render_it)

    return _render_pieces(env, TEXT_TEMPLATE, context | {"paper_text": paper_text}, template)


def _render_card(env: Environment, css: str, context: dict[str, Any], slot: _Card) -> str:
    slots = _Slots(env)
    card_context = context | {
        "pick": slot.pick,
        "paper": slot.pick.paper,
        "show_summary": slot.show_summary,
    }
    skeleton = "".join(_render_skeleton(env, CARD_TEMPLATE, card_context, slots))
    # The card is inlined on its own, inside a table as in the digest, with the digest's
    # stylesheet; so its rules must not depend on elements outside the card.
    page = (
        f"<html><head><style>{css}</style></head><body><table>"
        f"{_CARD_START}{skeleton}{_CARD_END}</table></body></html>"
    )
    inlined = _inline_cached(env, "card\0" + page, page)
    start, end = inlined.find(_CARD_START), inlined.find(_CARD_END)
    if start < 0 or end < start:
        raise TemplateError(CARD_TEMPLATE, None, "the card is not valid inside a <table>")
    return _fill(env, inlined[start + len(_CARD_START) : end], slots, lambda s: "")


def _fill(env: Environment, inlined: str, slots: _Slots, card: Callable[[_Card], str]) -> str:
    def value(m: re.Match[str]) -> str:
        index, kind = int(m.group(1)), m.group(2)
        if kind == "c" and index < len(slots.cards):
            return card(slots.cards[index])
        if kind == "x" and index < len(slots.values):
            return _escaped(slots.values[index])
        return m.group(0)

    return env.slot_re.sub(value, inlined)


def _inline_cached(env: Environment, key: str, html: str) -> str:
    cached = env.inlined.get(key)
    if cached is not None:
        env.inlined.move_to_end(key)
        return cached
    result = inline_css(html)
    env.inline_count += 1
    env.inlined[key] = result
    if len(env.inlined) > _CACHE_SIZE:
        env.inlined.popitem(last=False)
    return result


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    return "".join(_render_pieces(env, name, context))


def _render_pieces(
    env: jinja2.Environment,
    name: str,
    context: dict[str, Any],
    template: jinja2.Template | None = None,
) -> list[str]:
    """What ``Template.render`` joins: each printed value is a piece of its own.

    ``template``: this one instead of the named one (a split of it, ``per_recipient``).
    """
    try:
        if template is None:
            template = env.get_template(name)
        try:
            return list(template.root_render_func(template.new_context(context)))
        except Exception:
            env.handle_exception()  # re-raises with the template's file and line
    except jinja2.TemplateSyntaxError as e:
        # An assertion error (an unknown filter) is no syntax error: its message says what.
        kind = "" if isinstance(e, jinja2.TemplateAssertionError) else "syntax error: "
        raise TemplateError(e.filename or e.name or name, e.lineno, f"{kind}{e.message}") from e
    except jinja2.TemplateNotFound as e:
        raise TemplateError(name, None, f"template not found: {e.name}") from e
    except jinja2.UndefinedError as e:
        raise TemplateError(*_template_position(e, name), f"undefined: {e.message}") from e
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError, KeyError) as e:
        raise TemplateError(*_template_position(e, name), f"{type(e).__name__}: {e}") from e


def _template_position(exc: BaseException, default: str) -> tuple[str, int | None]:
    """The innermost template file and line in a render-time traceback.

    Jinja rewrites the traceback so that template frames carry the template's file name and
    line; those frames are marked with ``__jinja_exception__`` in their globals.
    """
    tb = exc.__traceback__
    found: tuple[str, int | None] = (default, None)
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


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


# --- sample digests for `newsletter check` ----------------------------------------------------


def sample_digests() -> list[tuple[Digest, str | None]]:
    """Digests with every optional field set and every one unset, to try templates."""
    day = dt.date(2024, 1, 2)
    paper = PaperData(
        id="2401.00001",
        title='A Sample Paper on Diffusion <Models> & "Quotes"',
        day=day,
        abstract="We study samples. They are useful. " * 20,
        authors=("Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra"),
        upvotes=42,
        comments=3,
        thumbnail="https://example.org/thumb.png",
        github_repo="https://github.com/example/sample",
        github_stars=1234,
        project_page="https://example.org/project",
        organization="Example Lab",
        ai_summary="A sample summary.",
        ai_keywords=("diffusion",),
    )
    bare = PaperData(id="2401.00002", title="A bare paper", day=day)
    pick = Pick(paper, "diffusion", "diffusion", "title", 'matched "diffusion" in title')
    reader = Subscriber(email="reader@example.org", topics=("diffusion",), name="Reader")
    anonymous = Subscriber(email="anon@example.org", topics=("diffusion", "robots"))
    return [
        (
            Digest(reader, day, (pick, Pick(bare, "diffusion", "diffusion", "abstract", "r"))),
            "Reader",
        ),
        (Digest(anonymous, day, (Pick(bare, "robots", "robot", "abstract", "r"),)), None),
    ]


def check_templates(templates_dir: Path | None) -> None:
    """Render sample digests through the templates; raise TemplateError naming file and line.

    Every branch of the built-in templates is taken at least once: optional fields set and
    unset, a name and none, one paper and several, summaries shown and dropped.
    """
    env = make_env(templates_dir)
    identity = Identity("Sample", "https://example.org", "papers@example.org", "{title}: {count}")
    for digest, name in sample_digests():
        for limit in (HTML_LIMIT, 0):  # limit 0: the size guard drops summaries and papers
            _compose(
                digest, env, identity, name, "https://example.org/unsubscribe/x?a=1&b=2", limit
            )
