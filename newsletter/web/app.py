"""The web application ``newsletter serve`` runs (Starlette): its routes and what they share.

    GET  /healthz                  ok
    GET  /static/site.css          the one stylesheet
    GET  /unsubscribe/<token>      a confirm page (link scanners follow GETs)
    POST /unsubscribe/<token>      RFC 8058 one-click: List-Unsubscribe=One-Click, no form token
    GET  /archive/..., /topics/..., /feed.atom    the public archive (``publish``), when on

Every page comes from a template (``pages``); every response gets the security headers
(``protect.Guard``). A request's store work runs in a worker thread on a connection of its
own. A forged, truncated or expired token, a bad form: a 400 page, and nothing changes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.config import Config
from newsletter.models import SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.web import pages, protect, tokens
from newsletter.web.forms import one_click, read_body
from newsletter.web.publish import archive_routes

log = logging.getLogger("newsletter.web.server")

#: The largest request body read (a one-click POST is 26 bytes, a sign-up form a few hundred).
MAX_BODY = 4096


@dataclass
class Site:
    """What the pages need from the daemon: the config in force now (a SIGHUP replaces it),
    the signing keys, the clock."""

    config: Callable[[], Config]
    keys: Sequence[bytes]
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)


class Pages:
    """The handlers, over one ``Site``."""

    def __init__(self, site: Site) -> None:
        self.site = site

    # -- rendering ---------------------------------------------------------------------

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        config = self.site.config()
        base = {
            "site_title": config.newsletter.title,
            "root": urlsplit(config.newsletter.base_url).path.rstrip("/"),
            "home": False,
        }
        body = pages.render(config.templates_path, name, {**base, **context})
        return HTMLResponse(body, status_code=status)

    def message(
        self, heading: str, *lines: str, status: int = 200, link: dict[str, str] | None = None
    ) -> HTMLResponse:
        return self.page("message.html.j2", status, heading=heading, lines=lines, link=link)

    def bad_token(self, what: str) -> HTMLResponse:
        return self.message(
            f"This {what} link is not valid",
            "The link is incomplete, was changed or has expired. Nothing was changed.",
            "Use the link of the most recent email, or reply to it and ask.",
            status=400,
        )

    # -- always on -----------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def stylesheet(self, request: Request) -> Response:
        css = pages.stylesheet(self.site.config().templates_path)
        return Response(
            css,
            media_type="text/css; charset=utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    async def not_found(self, request: Request, exc: Exception) -> Response:
        return self.message("Not found", "There is nothing here.", status=404)

    async def not_allowed(self, request: Request, exc: Exception) -> Response:
        return self.message(
            "Not allowed", "This address does not take that kind of request.", status=405
        )

    def _unsubscriber(self, token: str) -> tuple[str, str | None] | None:
        """(address, subscriber id) an unsubscribe token names (an old link: the address
        only), or None when it is not a genuine one."""
        claim = tokens.read_token(self.site.keys, token, "unsubscribe", self.site.clock())
        if claim is not None:
            with SqliteStore(self.site.config().state_path) as store:
                row = store.subscriber_by_id(claim.subscriber_id)
            return None if row is None else (row.email, row.id)
        address = tokens.read_legacy_token(self.site.keys, token)
        return None if address is None else (address, None)

    def _test_address(self, token: str) -> str | None:
        """The address a test copy's token names ("" without a row yet), or None; opens no
        state file that is not there."""
        claim = tokens.read_token(self.site.keys, token, "test", self.site.clock())
        if claim is not None:
            state = self.site.config().state_path
            if not state.exists():
                return ""
            with SqliteStore(state, read_only=True) as store:
                row = store.subscriber_by_id(claim.subscriber_id)
            return "" if row is None else row.email
        return tokens.read_legacy_token(self.site.keys, token, test=True)

    async def unsubscribe(self, request: Request) -> Response:
        token = request.path_params["token"]
        body = await read_body(request, MAX_BODY) if request.method == "POST" else b""
        found = await run_in_threadpool(self._unsubscriber, token)
        if found is None:
            test = await run_in_threadpool(self._test_address, token)
            if test is not None:  # a test copy never unsubscribes anyone
                return self.page(
                    "test_copy.html.j2", heading="Test copy: nothing changed", address=test
                )
            return self.bad_token("unsubscribe")
        address, subscriber_id = found
        if request.method == "GET":
            title = self.site.config().newsletter.title
            return self.page(
                "unsubscribe.html.j2",
                heading=f"Unsubscribe from {title}",
                address=address,
                action=request.url.path,
            )
        if body is None or not one_click(request.headers.get("content-type", ""), body):
            log.info("unsubscribe.refused reason=not_one_click")
            return self.message(
                "Nothing was changed",
                "This request did not say List-Unsubscribe=One-Click. To unsubscribe, open the "
                "unsubscribe link of a recent email and press its button.",
                status=400,
            )
        await run_in_threadpool(self._unsubscribe, address, subscriber_id)
        title = self.site.config().newsletter.title
        return self.message(
            "You are unsubscribed", f"{address} will get no more emails from {title}."
        )

    def _unsubscribe(self, address: str, subscriber_id: str | None) -> None:
        now = self.site.clock()
        with SqliteStore(self.site.config().state_path) as store:
            row = (
                store.subscriber_by_id(subscriber_id)
                if subscriber_id
                else store.subscriber_by_email(address)
            )
            if row is None and not store.is_removed(address):
                # An old link of a file's subscriber, before their first run gave them a row.
                record = SubscriberRecord(
                    email=address,
                    topics=(),
                    status="unsubscribed",
                    source="config",
                    reason="one-click unsubscribe",
                )
                store.add_subscriber(record, now=now)
                log.info("unsubscribe.done subscriber=%s", address)
            elif row is not None and row.status != "unsubscribed":
                store.set_subscriber_status(row.id, "unsubscribed", "one-click unsubscribe", now)
                log.info("unsubscribe.done subscriber=%s", address)


def make_app(site: Site) -> protect.Guard:
    handlers = Pages(site)
    routes = [
        Route("/healthz", handlers.healthz),
        Route("/static/site.css", handlers.stylesheet),
        Route("/unsubscribe/{token}", handlers.unsubscribe, methods=["GET", "POST"]),
        *archive_routes(site.config),
    ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, handlers.not_found)
    app.add_exception_handler(405, handlers.not_allowed)
    error = b"<!DOCTYPE html><title>Error</title><h1>Something went wrong</h1>"
    return protect.Guard(app, error)
