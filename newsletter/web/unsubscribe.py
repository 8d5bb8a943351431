"""``/unsubscribe/<token>``: always on, like the header that points here.

``POST`` with ``List-Unsubscribe=One-Click`` (RFC 8058: urlencoded or multipart) unsubscribes
at once: no cookie, no form token, idempotent, which is what mail clients' one-click buttons
send; without that field nothing changes (a 400). ``GET`` shows a page with a button that
sends exactly that (link scanners follow GETs). A test copy's token (``send --test``) gets a
page saying so and changes nothing. Links of mail sent before the opaque tokens (the address
in base64) keep working.
"""

from __future__ import annotations

import logging
import os

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.models import SubscriberRecord
from newsletter.store import open_store
from newsletter.web import tokens
from newsletter.web.forms import one_click, read_body
from newsletter.web.site import Handlers

log = logging.getLogger("newsletter.web.server")

#: A one-click POST is 26 bytes; a multipart one a few hundred.
MAX_BODY = 4096


class Unsubscribe(Handlers):
    def _find(self, token: str) -> tuple[str, str | None] | None:
        """(address, subscriber id) an unsubscribe token names (an old link: the address
        only), or None when it is not a genuine one."""
        row = self.holder(token, "unsubscribe")
        if row is not None:
            return row.email, row.id
        address = tokens.read_legacy_token(self.site.keys, token)
        return None if address is None else (address, None)

    def _test_address(self, token: str) -> str | None:
        """The address a test copy's token names ("" when the state has no such row: a test
        send of a subscriber's first digest), or None when it is not a test token."""
        return test_copy_address(self, token)

    async def handle(self, request: Request) -> Response:
        token = request.path_params["token"]
        body = await read_body(request, MAX_BODY) if request.method == "POST" else b""
        found = await run_in_threadpool(self._find, token)
        if found is None:
            test = await run_in_threadpool(self._test_address, token)
            if test is not None:  # a test copy never unsubscribes anyone
                return test_copy_page(self, test)
            return self.bad_token("unsubscribe")
        address, subscriber_id = found
        title = self.config.newsletter.title
        if request.method == "GET":
            return self.page(
                "unsubscribe.html.j2",
                heading=f"Unsubscribe from {title}",
                address=address,
                action=self.page_root() + request.url.path,
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
        self.site.changed()
        return self.message(
            "You are unsubscribed", f"{address} will get no more emails from {title}."
        )

    def _unsubscribe(self, address: str, subscriber_id: str | None) -> None:
        now = self.site.clock()
        with self.store() as store:
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


def test_copy_address(handlers: Handlers, token: str) -> str | None:
    """For the unsubscribe and manage links of a test copy (``send --test``): the address its
    token names ("" when the state has no such row: a test send of a first digest), or None
    when it is not a test token. Opens no state file that is not there."""
    site = handlers.site
    claim = tokens.read_token(site.keys, token, "test", site.clock())
    if claim is not None:
        config = handlers.config
        if config.state_url is None and not config.state_path.exists():
            return ""
        password = os.environ.get(config.newsletter.state_password_env) or None
        with open_store(config.state_location, read_only=True, password=password) as store:
            row = store.subscriber_by_id(claim.subscriber_id)
        return "" if row is None else row.email
    return tokens.read_legacy_token(site.keys, token, test=True)


def test_copy_page(handlers: Handlers, address: str) -> Response:
    """A test copy's link changes nothing, and says so."""
    return handlers.page("test_copy.html.j2", heading="Test copy: nothing changed", address=address)
