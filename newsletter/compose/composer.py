"""Digest -> Outgoing for one installation: the composer and what it needs (``ComposeSpec``).

    links   = the manage and unsubscribe URLs, tokens of the subscriber's opaque id
    context = templates.base_context(digest, masthead, name, links)
    html    = size.fit(digest, context, limit, render the HTML)     (fewer papers until it fits)
    text    = the text template, with the papers the HTML kept
    message = the MIME writer (html, text, headers; DKIM when configured)

Two ways to render and write, switched by ``Composer(spec, reference=...)``:

- the fast path: skeletons inlined once per layout (``html``), cards and text blocks kept
  (``partials``), digests rendered once for everyone with the same papers (``once``), the
  HTML measured once and sent as measured (``qp``), MIME written directly (``mime.Writer``);
- the reference (``reference=True``): every recipient in full, the plain Jinja render with
  premailer over the whole page and the email package writing the message. Slow; what the
  fast path is tested against, and the benchmark's baseline.

Every cache is the composer's: a process makes one per run (a pool's workers, one each).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jinja2
from markupsafe import escape

from newsletter.compose import mime, qp, templates
from newsletter.compose.html import HtmlRenderer, reference_html
from newsletter.compose.masthead import Masthead
from newsletter.compose.once import RenderedOnce
from newsletter.compose.partials import Partials
from newsletter.compose.size import HTML_LIMIT, fit, log_guarded
from newsletter.compose.templates import HTML_TEMPLATE, TEXT_CARD_TEMPLATE, TEXT_TEMPLATE
from newsletter.errors import TemplateError
from newsletter.inbound.tokens import UNSUBSCRIBE_LOCAL, unsubscribe_address, verp_address
from newsletter.models import Digest, Email, Outgoing, Pick, digest_id
from newsletter.web import tokens


@dataclass(frozen=True, slots=True)
class ComposeSpec:
    """What composing needs, picklable: made by the pipeline, read by every ``Composer``
    (a pool's workers build their own from it)."""

    templates_dir: Path | None
    masthead: Masthead
    key: bytes  # signs the manage and unsubscribe links
    now: dt.datetime  # the messages' Date
    #: A test send: every link carries a test token, which changes nothing.
    test_links: bool = False
    html_limit: int = HTML_LIMIT  # bytes of HTML on the wire (the size guard)
    #: The run the messages belong to, named in their VERP envelope sender (0: a preview).
    run_id: int = 0


@dataclass(frozen=True, slots=True)
class Counts:
    """What a fast composer did so far: for tests and benchmarks."""

    premailer_runs: int  # digest layouts and card layouts inlined
    layouts: int  # distinct digest layouts
    once_renders: int  # digest templates rendered for everyone with the same papers
    partial_renders: int  # cards and text blocks rendered


@dataclass(frozen=True, slots=True)
class Rendered:
    """An email, and what the message writer and the size guard's log need of it."""

    email: Email
    html_parts: list[str] | None  # the pieces ``email.html`` joins (fast path), or None
    text_parts: list[str] | None
    summaries: int  # papers that kept their summary
    size: int  # bytes of the HTML on the wire
    limit: int

    def log(self, digest: Digest) -> None:
        log_guarded(digest, self.email, self.summaries, self.size, self.limit)


class _Parts(Protocol):
    """How a composer renders: the fast way or the reference."""

    def html(self, context: dict[str, Any], summaries: int) -> tuple[str, list[str] | None, int]:
        """The HTML with the first ``summaries`` papers' summaries, its pieces and its size."""

    def text(self, context: dict[str, Any]) -> tuple[str, list[str] | None]: ...


class Composer:
    """Digest -> Outgoing with this installation's templates, masthead and key.

    ``reference=True``: the slow reference path (see the module's docstring).
    ``full_renders``: each digest template the fast path renders in full for every recipient
    (or for some), and why; empty on the reference path, which renders everyone in full.
    """

    def __init__(self, spec: ComposeSpec, *, reference: bool = False) -> None:
        self.spec = spec
        self.reference = reference
        self._parts: _Parts
        self._writer: mime.Writer | mime.ReferenceWriter
        if reference:
            self._parts = _Reference(templates.make_env(spec.templates_dir))
            self._writer = mime.ReferenceWriter(spec.masthead, spec.now)
        else:
            fast = _Fast(templates.make_env(spec.templates_dir))
            self._parts = self._fast = fast
            self._writer = mime.Writer(spec.masthead, spec.now, fast.encoder)
        self.full_renders: dict[str, str] = {} if reference else self._fast.once.reasons

    def compose(self, digest: Digest) -> Outgoing:
        """The message for the digest's subscriber, whose links carry their opaque id."""
        sub = digest.subscriber
        if not sub.id:
            raise ValueError(f"{sub.email}: a digest needs the subscriber's id for its links")
        test = self.spec.test_links
        key, base = self.spec.key, self.spec.masthead.base_url
        token = tokens.make_token(key, "test" if test else "unsubscribe", sub.id)
        url = f"{base}/unsubscribe/{token}"
        manage = f"{base}/manage/{tokens.make_token(key, 'test' if test else 'manage', sub.id)}"
        rendered = self.render(digest, unsubscribe_url=url, manage_url=manage)
        rendered.log(digest)
        envelope_from, mailto_to = self._addresses(digest)
        return self._writer.write(
            rendered.email,
            unsubscribe_url=url,
            digest_key=digest_id(digest),
            mailto_subject=f"test unsubscribe {token}" if self.spec.test_links else "unsubscribe",
            html_parts=rendered.html_parts,
            text_parts=rendered.text_parts,
            envelope_from=envelope_from,
            mailto_to=mailto_to,
        )

    def _addresses(self, digest: Digest) -> tuple[str | None, str | None]:
        """With a bounce address, the VERP envelope sender naming the run and the subscriber,
        and the tokenized unsubscribe address on its domain (``inbound`` reads both back).
        None, None: the masthead's (a test send's copy must not be able to unsubscribe)."""
        bounce = self.spec.masthead.bounce_address
        subscriber = digest.subscriber.id
        if bounce is None or not subscriber or self.spec.test_links:
            return None, None
        key = self.spec.key
        domain = bounce.rpartition("@")[2]
        return (
            verp_address(bounce, self.spec.run_id, subscriber, key),
            unsubscribe_address(f"{UNSUBSCRIBE_LOCAL}@{domain}", subscriber, key),
        )

    def email(
        self, digest: Digest, *, unsubscribe_url: str, manage_url: str, limit: int | None = None
    ) -> Email:
        """The rendered email, as ``compose`` makes it (and logs it) for these links."""
        rendered = self.render(
            digest, unsubscribe_url=unsubscribe_url, manage_url=manage_url, limit=limit
        )
        rendered.log(digest)
        return rendered.email

    def render(
        self, digest: Digest, *, unsubscribe_url: str, manage_url: str, limit: int | None = None
    ) -> Rendered:
        """The email with its HTML <= ``limit`` (default ``spec.html_limit``) bytes on the
        wire; nothing logged."""
        limit = self.spec.html_limit if limit is None else limit
        sub = digest.subscriber
        base = templates.base_context(
            digest, self.spec.masthead, sub.name, unsubscribe_url, manage_url
        )
        fitted = fit(digest, base, limit, self._parts.html)
        text, text_parts = self._parts.text(fitted.context)
        for name, body, url in (
            (HTML_TEMPLATE, fitted.html, str(escape(unsubscribe_url))),
            (TEXT_TEMPLATE, text, unsubscribe_url),
        ):
            # Bulk-sender rules require a visible unsubscribe link; an override must keep it.
            if url not in body:
                raise TemplateError(
                    name, None, "the email has no unsubscribe link (print {{ unsubscribe_url }})"
                )
        kept = fitted.kept
        email = Email(
            to=sub.email,
            to_name=sub.name,
            subject=base["subject"],
            html=fitted.html,
            text=text,
            paper_ids=tuple(p.paper.id for p in digest.picks[:kept]),
            dropped_ids=tuple(p.paper.id for p in digest.picks[kept:]),
        )
        return Rendered(email, fitted.parts, text_parts, fitted.summaries, fitted.size, limit)

    def counts(self) -> Counts:
        """What the fast path did so far (the reference keeps nothing)."""
        if self.reference:
            raise ValueError("the reference path keeps no caches")
        fast = self._fast
        return Counts(
            premailer_runs=fast.html_renderer.inliner.runs,
            layouts=len(fast.html_renderer.layouts.by_string),
            once_renders=fast.once.renders,
            partial_renders=fast.partials.renders,
        )


class _Fast:
    """The fast path's renderers and caches, over one environment."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        self.partials = Partials(env)
        self.html_renderer = HtmlRenderer(env, self.partials)  # before the templates compile
        templates.read(env)
        self.once = RenderedOnce(
            env, self.partials, self.html_renderer.placeholders.prefix, self._render
        )
        self.encoder = qp.Encoder()

    def html(self, context: dict[str, Any], summaries: int) -> tuple[str, list[str], int]:
        parts = self.once.pieces(HTML_TEMPLATE, context, summaries)
        if parts is None:
            parts = self._render(HTML_TEMPLATE, context, summaries)
        pieces = parts if isinstance(parts, qp.Pieces) else qp.Pieces(parts)
        html = "".join(pieces)  # measured once, sent as measured
        return html, pieces, self.encoder.size(html, pieces)

    def text(self, context: dict[str, Any]) -> tuple[str, list[str]]:
        parts = self.once.pieces(TEXT_TEMPLATE, context, 0)
        if parts is None:
            parts = self._render(TEXT_TEMPLATE, context, 0)
        return "".join(parts), parts

    def _render(
        self,
        name: str,
        context: dict[str, Any],
        summaries: int,
        template: jinja2.Template | None = None,
    ) -> list[str]:
        """The template's pieces, rendered (the HTML with the first ``summaries`` summaries)."""
        if name == HTML_TEMPLATE:
            picks: tuple[Pick, ...] = context["picks"]
            with_summary = {id(p) for p in picks[:summaries]}
            return self.html_renderer.render(context, with_summary=with_summary, template=template)
        partials = self.partials
        env = self.env

        def paper_text(pick: Pick, index: int) -> str:
            def render_it() -> str:
                return templates.render(
                    env, TEXT_CARD_TEMPLATE, context | {"pick": pick, "index": index}
                )

            return partials.cached(TEXT_CARD_TEMPLATE, context, pick, (index,), render_it)

        return templates.render_pieces(
            env, TEXT_TEMPLATE, context | {"paper_text": paper_text}, template
        )


class _Reference:
    """Every recipient in full: plain Jinja, premailer on the whole page."""

    def __init__(self, env: jinja2.Environment) -> None:
        self.env = env
        templates.read(env)

    def html(self, context: dict[str, Any], summaries: int) -> tuple[str, None, int]:
        picks: tuple[Pick, ...] = context["picks"]
        html = reference_html(self.env, context, with_summary={id(p) for p in picks[:summaries]})
        return html, None, mime.html_size(html)

    def text(self, context: dict[str, Any]) -> tuple[str, None]:
        env = self.env

        def paper_text(pick: Pick, index: int) -> str:
            return templates.render(
                env, TEXT_CARD_TEMPLATE, context | {"pick": pick, "index": index}
            )

        return templates.render(env, TEXT_TEMPLATE, context | {"paper_text": paper_text}), None
