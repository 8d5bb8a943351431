"""``/manage/<token>``: a reader's preferences, always on (every digest links here).

``GET`` shows topics, cadence, how many papers, and whether digests come (pause or
resume), with an unsubscribe button (the one-click form of ``/unsubscribe/<token>``). ``POST``
saves them: effective from the next digest (a digest already frozen for today stays as it
is). A reader listed in the config file can pause, resume or unsubscribe here, but their
topics and settings are the file's, and the page says so. A bounced or complained address
cannot be resumed from the page.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter.models import Cadence, SubscriberRecord, SubscriberStatus
from newsletter.web import forms, tokens
from newsletter.web.site import Handlers
from newsletter.web.unsubscribe import test_copy_address, test_copy_page

log = logging.getLogger("newsletter.web.server")

MAX_BODY = 4096
MAX_PAPERS = 100  # as subscribers[].max_papers allows
#: The statuses a reader may switch between from the page (an unsubscribed one comes back).
RESUMABLE: tuple[SubscriberStatus, ...] = ("active", "paused", "unsubscribed")


@dataclass(frozen=True, slots=True)
class Preferences:
    """A valid manage form: made by ``read_preferences``, saved by ``Manage.save``."""

    topics: tuple[str, ...]
    cadence: Cadence
    max_papers: int
    delivery: SubscriberStatus  # active or paused


def read_preferences(
    form: forms.Form, topics: list[str], *, file_managed: bool
) -> Preferences | str:
    """The reader's choice, or what is wrong with it (one line for the 400 page). A file's
    reader sends only ``delivery``; the rest is ignored."""
    delivery = forms.field(form, "delivery")
    if delivery not in ("active", "paused"):
        return "Choose whether the digests come or are paused."
    if file_managed:
        return Preferences((), "daily", 1, cast(SubscriberStatus, delivery))
    chosen = form.get("topics", [])
    if not chosen:
        return "Choose at least one topic (or unsubscribe below)."
    if any(t not in topics for t in chosen) or len(set(chosen)) != len(chosen):
        return "The form named a topic this newsletter does not have."
    cadence = forms.field(form, "cadence")
    if cadence not in ("daily", "weekly"):
        return "Choose daily or weekly."
    count = forms.field(form, "max_papers")
    if not count.isdigit() or not 1 <= int(count) <= MAX_PAPERS:
        return f"The number of papers must be a whole number from 1 to {MAX_PAPERS}."
    ordered = tuple(t for t in topics if t in chosen)
    return Preferences(
        ordered, cast(Cadence, cadence), int(count), cast(SubscriberStatus, delivery)
    )


class Manage(Handlers):
    def file_managed(self, row: SubscriberRecord) -> bool:
        return row.source == "config" or row.key in {
            s.email.casefold() for s in self.config.subscribers
        }

    async def handle(self, request: Request) -> Response:
        token = request.path_params["token"]
        body = await forms.read_body(request, MAX_BODY) if request.method == "POST" else b""
        row = await run_in_threadpool(self.holder, token, "manage")
        if row is None or row.status == "pending":
            test = await run_in_threadpool(test_copy_address, self, token)
            if test is not None:  # a test copy's link changes nothing
                return test_copy_page(self, test)
            return self.bad_token("manage")
        if request.method == "GET":
            return self.show(request, row, saved=False)
        form = forms.parse_form(request.headers.get("content-type", ""), body or b"")
        if form is None or not self.form_token_ok(request, form):
            return self.bad_form("This form has expired or did not come from this site.")
        managed = self.file_managed(row)
        choice = read_preferences(form, self.choosable(row.topics), file_managed=managed)
        if isinstance(choice, str):
            return self.bad_form(choice)
        if choice.delivery == "active" and row.status not in RESUMABLE:
            return self.bad_form(
                f"Digests to {row.email} stopped because the address {row.status}; "
                "reply to a digest to ask for them again."
            )
        saved = await run_in_threadpool(self.save, row, choice, managed)
        if saved is None:
            return self.bad_token("manage")
        self.site.changed()
        return self.show(request, saved, saved=True)

    def save(
        self, row: SubscriberRecord, choice: Preferences, managed: bool
    ) -> SubscriberRecord | None:
        now = self.site.clock()
        with self.store() as store:
            if not managed and (
                store.update_preferences(
                    row.id,
                    now=now,
                    topics=choice.topics,
                    cadence=choice.cadence,
                    max_papers=choice.max_papers,
                )
                is None
            ):
                return None
            if choice.delivery != row.status and row.status in RESUMABLE:
                reason = (
                    "paused from the page"
                    if choice.delivery == "paused"
                    else "resumed from the page"
                )
                store.set_subscriber_status(row.id, choice.delivery, reason, now)
            log.info("manage.saved subscriber=%s status=%s", row.email, choice.delivery)
            return store.subscriber_by_id(row.id)

    def show(self, request: Request, row: SubscriberRecord, *, saved: bool) -> Response:
        config = self.config
        topics = [
            {"slug": slug, "name": config.topics[slug].name or slug, "chosen": slug in row.topics}
            for slug in self.choosable(row.topics)
        ]
        unsubscribe = tokens.make_token(self.site.keys, "unsubscribe", row.id)
        return self.form_page(
            request,
            "manage.html.j2",
            heading="Your subscription",
            address=row.email,
            row=row,
            topics=topics,
            file_managed=self.file_managed(row),
            resumable=row.status in RESUMABLE,
            saved=saved,
            max_papers_limit=MAX_PAPERS,
            action=self.page_root() + request.url.path,
            unsubscribe_action=f"{self.page_root()}/unsubscribe/{unsubscribe}",
        )
