"""What every page handler shares: the ``Site`` (what the daemon hands the app) and
``Handlers`` (rendering a template, the 400 page, the form token, the client's address, a
store connection per request).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from newsletter.config import Config
from newsletter.models import SubscriberRecord
from newsletter.store import Store, open_store
from newsletter.web import forms, pages, protect, tokens

log = logging.getLogger("newsletter.web.server")

_threads = threading.local()  # each worker thread's connection to the state (``store``)

#: The emails a sign-up sends: a confirmation, or "you are already subscribed".
MailKind = Literal["confirm", "already"]


def _no_mail(kind: MailKind, to: str, links: Mapping[str, str]) -> bool:
    log.warning("signup.no_mailer kind=%s", kind)
    return False


@dataclass
class Site:
    """What the pages need from the daemon: the config in force now (a SIGHUP replaces it),
    the signing keys (the first signs), the clock, a way to mail a sign-up's email (queued:
    returns whether it was taken; the one-email-a-day limit counts only those), and a call to make when who gets mail changed (the
    daemon then regroups its jobs)."""

    config: Callable[[], Config]
    keys: Sequence[bytes]
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    mail: Callable[[MailKind, str, Mapping[str, str]], bool] = _no_mail
    changed: Callable[[], None] = field(default=lambda: None)


class Handlers:
    """Rendering and the checks every page makes; the page handlers derive from it."""

    def __init__(self, site: Site) -> None:
        self.site = site

    @property
    def config(self) -> Config:
        return self.site.config()

    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        """The state, on a connection of this worker thread's own, kept open for the next
        request: closing the last connection to a WAL database checkpoints it (an fsync),
        which opening one per request paid every time."""
        config = self.config
        where = str(config.state_location)  # a SQLite file or a PostgreSQL URL
        held: Store | None = getattr(_threads, "store", None)
        if held is None or getattr(_threads, "where", None) != where:
            if held is not None:
                held.close()
            password = os.environ.get(config.newsletter.state_password_env) or None
            held = _threads.store = open_store(config.state_location, password=password)
            _threads.where = where
        yield held

    def holder(self, token: str, purpose: tokens.Purpose) -> SubscriberRecord | None:
        """The subscriber a genuine ``purpose`` token names (None: not genuine, or gone)."""
        claim = tokens.read_token(self.site.keys, token, purpose, self.site.clock())
        if claim is None:
            return None
        with self.store() as store:
            return store.subscriber_by_id(claim.subscriber_id)

    def url(self, path: str) -> str:
        """An absolute link for an email: ``newsletter.base_url`` + ``path``."""
        return self.config.newsletter.base_url + path

    def page_root(self) -> str:
        """The path the site lives under (``base_url``'s path; "" at the root)."""
        return urlsplit(self.config.newsletter.base_url).path.rstrip("/")

    def client(self, request: Request) -> str:
        return protect.client_address(request.scope, self.config.server.proxy_networks())

    # -- rendering ---------------------------------------------------------------------

    def page(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        config = self.config
        base = {
            "site_title": config.newsletter.title,
            "root": self.page_root(),
            "home": self.signup_enabled(),
        }
        body = pages.render(config.templates_path, name, {**base, **context})
        return HTMLResponse(body, status_code=status)

    def message(
        self,
        heading: str,
        *lines: str,
        status: int = 200,
        link: dict[str, str] | None = None,
    ) -> HTMLResponse:
        return self.page("message.html.j2", status, heading=heading, lines=lines, link=link)

    def bad_token(self, what: str) -> HTMLResponse:
        return self.message(
            f"This {what} link is not valid",
            "The link is incomplete, was changed or has expired. Nothing was changed.",
            "Use the link of the most recent email, or reply to it and ask.",
            status=400,
        )

    def bad_form(self, why: str) -> HTMLResponse:
        return self.message(
            "Nothing was changed",
            why,
            "Go back, reload the page and send the form again.",
            status=400,
        )

    def choosable(self, chosen: tuple[str, ...] = ()) -> list[str]:
        """The topics a reader may pick, in the config's order: the public ones
        (``topics.<slug>.public``), and those they have already."""
        return [slug for slug, t in self.config.topics.items() if t.public or slug in chosen]

    def signup_enabled(self) -> bool:
        return bool(self.config.signup.enabled)

    # -- the form token ------------------------------------------------------------------

    def form_page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A page with a form: its form token, and the cookie it signs when there is none."""
        cookie = request.cookies.get(forms.COOKIE)
        fresh = not forms.valid_cookie(cookie)
        if fresh or cookie is None:
            cookie = forms.new_cookie_value()
        token = forms.make_form_token(self.site.keys[0], cookie, self.site.clock())
        response = self.page(name, status, form_token=token, **context)
        if fresh:
            response.set_cookie(
                forms.COOKIE,
                cookie,
                max_age=forms.FORM_TOKEN_HOURS * 3600,
                path=self.page_root() or "/",
                secure=self.config.newsletter.base_url.startswith("https:"),
                httponly=True,
                samesite="strict",
            )
        return response

    def form_token_ok(self, request: Request, form: forms.Form) -> bool:
        return forms.check_form_token(
            self.site.keys,
            request.cookies.get(forms.COOKIE),
            forms.field(form, forms.FORM_FIELD),
            self.site.clock(),
        )
