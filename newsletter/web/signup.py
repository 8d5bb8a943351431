"""The public pages, on with ``signup.enabled: true``: the home page and its sign-up form, and
the confirmation of a sign-up (double opt-in).

    GET  /                  title, description, the topics with a few recent papers, the form
    POST /subscribe         always the same "check your inbox" page (no address enumeration)
    GET  /confirm/<token>   a button (link scanners follow GETs)
    POST /confirm/<token>   pending (or unsubscribed) -> active, with the confirmation's time
                            and client

A sign-up, in order: a form that is not one of ours (no form token, a forged or stale one) is
a 400 and changes nothing; more than ``signup.per_client_per_hour`` sign-ups from one client
address get a 429 page; a filled honeypot field gets the usual page and nothing else; a bad
address or no topic is a 400. Then, at most one email per address per 24 hours because of
sign-ups (more sign-ups get the same page and no mail): a new or pending address gets a
confirmation email (pending, with the visitor's topics and cadence and ``signup.defaults``
for the rest), and so does an unsubscribed one (unsubscribed until it confirms); an active
or paused one, or one in the config file, gets "you are already subscribed" with a link to
its manage page; one that bounced or complained, or that the operator removed, gets nothing
(only the operator brings it back). At most ``signup.max_pending`` sign-ups wait for
confirmation in all (then a 503 page, whatever the address). The emails carry no text the
visitor typed other than the address, and go out from a queue (``outbox``), so a page takes
as long whatever the address.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from dataclasses import dataclass
from typing import cast

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from newsletter import config as config_mod
from newsletter import selection
from newsletter.errors import SubscriberExistsError, SubscriberRemovedError
from newsletter.models import Cadence, SubscriberRecord
from newsletter.store import Store, open_store
from newsletter.web import forms, tokens
from newsletter.web.site import Handlers, MailKind

log = logging.getLogger("newsletter.web.server")

MAX_BODY = 4096
HONEYPOT = "website"
#: The recent papers the home page shows under each topic: from the last days, at most.
RECENT_DAYS = 7
RECENT_PER_TOPIC = 3
#: How long the home page's recent papers are reused (seconds).
RECENT_FOR = 600
#: What a confirmation link activates: a sign-up, or an unsubscribed reader signing up again.
CONFIRMABLE = ("pending", "unsubscribed")


@dataclass(frozen=True, slots=True)
class TopicView:
    slug: str
    name: str
    description: str
    recent: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Choice:
    """A valid sign-up form: made by ``read_signup``, read by ``decide``."""

    email: str
    topics: tuple[str, ...]
    cadence: Cadence


def read_signup(form: forms.Form, topics: list[str]) -> Choice | str:
    """The visitor's choice, or what is wrong with the form (one line for the 400 page)."""
    try:
        email = config_mod.check_email(forms.field(form, "email"))
    except ValueError:
        return "That does not look like an email address."
    chosen = form.get("topics", [])
    if not chosen:
        return "Choose at least one topic."
    if any(t not in topics for t in chosen) or len(set(chosen)) != len(chosen):
        return "The form named a topic this newsletter does not have."
    cadence = forms.field(form, "cadence") or "daily"
    if cadence not in ("daily", "weekly"):
        return "Choose daily or weekly."
    ordered = tuple(t for t in topics if t in chosen)  # the config's order
    return Choice(email, ordered, cast(Cadence, cadence))


class Signup(Handlers):
    _lock = threading.Lock()  # one sign-up decision at a time: the mail limit holds
    _recent: tuple[tuple[int, dt.datetime], list[TopicView]] | None = None

    # -- GET / ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        if not self.signup_enabled():
            return self.message("Not found", "There is nothing here.", status=404)
        topics = await run_in_threadpool(self.topic_views)
        return self.form_page(
            request,
            "home.html.j2",
            heading=self.config.newsletter.title,
            description=self.config.newsletter.description,
            topics=topics,
        )

    def topic_views(self) -> list[TopicView]:
        config = self.config
        now = self.site.clock()
        cached = Signup._recent
        if cached is not None and cached[0][0] == id(config) and now < cached[0][1]:
            return cached[1]
        recent = self._recent_titles(now)
        views = [
            TopicView(
                slug,
                t.name or slug,
                t.description or "",
                tuple(recent.get(slug, ())),
            )
            for slug, t in config.topics.items()
            if t.public
        ]
        Signup._recent = ((id(config), now + dt.timedelta(seconds=RECENT_FOR)), views)
        return views

    def _recent_titles(self, now: dt.datetime) -> dict[str, list[str]]:
        """A few recent papers of each topic, the most upvoted first, from the store."""
        config = self.config
        if config.state_url is None and not config.state_path.exists():
            return {}
        today = now.astimezone(dt.UTC).date()
        days = [today - dt.timedelta(days=n) for n in range(RECENT_DAYS)]
        password = os.environ.get(config.newsletter.state_password_env) or None
        with open_store(config.state_location, read_only=True, password=password) as store:
            papers = store.candidates(days)
        matches = selection.match_topics(papers, self.config.public_topics())
        out: dict[str, list[str]] = {}
        for slug in self.choosable():
            found = [matches.papers[pid] for pid in matches.by_topic.get(slug, {})]
            found.sort(key=lambda p: (-p.upvotes, p.title))
            out[slug] = [p.title for p in found[:RECENT_PER_TOPIC]]
        return out

    # -- POST /subscribe -------------------------------------------------------------------

    async def subscribe(self, request: Request) -> Response:
        if not self.signup_enabled():
            return self.message("Not found", "There is nothing here.", status=404)
        body = await forms.read_body(request, MAX_BODY)
        form = forms.parse_form(request.headers.get("content-type", ""), body or b"")
        if body is None or form is None:
            return self.bad_form("The form could not be read.")
        if not self.form_token_ok(request, form):
            log.info("signup.refused reason=form_token")
            return self.bad_form("This form has expired or did not come from this site.")
        client = self.client(request)
        if not await run_in_threadpool(self._within_client_limit, client):
            log.info("signup.refused reason=client_limit")
            return self.message(
                "Too many sign-ups",
                "There were too many sign-ups from your network in the last hour. "
                "Please try again later.",
                status=429,
            )
        if forms.field(form, HONEYPOT):
            log.info("signup.refused reason=honeypot")
            return self.check_inbox()
        choice = read_signup(form, self.choosable())
        if isinstance(choice, str):
            return self.bad_form(choice)
        outcome = await run_in_threadpool(self.decide, choice, client)
        if outcome == "full":
            return self.message(
                "Sign-ups are paused",
                "Too many sign-ups are waiting for their confirmation. Please try again tomorrow.",
                status=503,
            )
        return self.check_inbox()

    def check_inbox(self) -> Response:
        hours = self.config.signup.confirm_hours
        return self.message(
            "Check your inbox",
            "If the address you gave can get our email, a message is on its way to it.",
            f"Follow its link within {hours} hours to confirm your subscription. Nothing "
            "arrives? Look in the spam folder, or sign up again tomorrow.",
        )

    def _within_client_limit(self, client: str) -> bool:
        now = self.site.clock()
        limit = self.config.signup.per_client_per_hour
        with self.store() as store:
            store.record_signup_attempt(client, now)
            return store.signup_attempts_since(client, now - dt.timedelta(hours=1)) <= limit

    def decide(self, choice: Choice, client: str) -> str:
        """What a valid sign-up does: queue one email or none; "full" when no sign-up may
        wait for its confirmation now. Under the store's sign-up lock (and this process's),
        so that the one-email limit holds for sign-ups of one address at the same time on
        every instance."""
        config = self.config
        now = self.site.clock()
        key = choice.email.casefold()
        file_keys = {s.email.casefold() for s in config.subscribers}
        with Signup._lock, self.store() as store, store.signup_lock():
            if store.signup_mail_since(key, now - dt.timedelta(hours=24)) > 0:
                log.info("signup.quiet reason=mailed_today")
                return "quiet"
            # Said whatever the address, so that a full site does not tell who is subscribed.
            if store.count_pending() >= config.signup.max_pending:
                log.warning("signup.full pending=%d", config.signup.max_pending)
                return "full"
            row = store.subscriber_by_email(choice.email)
            if key in file_keys or (row is not None and row.status in ("active", "paused")):
                if row is None:  # the file's, before its first run
                    return "quiet"
                kind: MailKind = "already"
                links = {"manage": self.url(f"/manage/{self._token('manage', row.id)}")}
            else:
                row = self._to_confirm(store, row, choice, client, now)
                if row is None:
                    return "quiet"
                kind = "confirm"
                expires = now + dt.timedelta(hours=config.signup.confirm_hours)
                token = tokens.make_token(self.site.keys, "confirm", row.id, expires=expires)
                links = {"confirm": self.url(f"/confirm/{token}")}
            if not self.site.mail(kind, row.email, links):
                return "quiet"  # not taken (the outbox is full): not counted either
            store.record_signup_mail(key, now)
        log.info("signup.mail kind=%s", kind)
        return kind

    def _to_confirm(
        self,
        store: Store,
        row: SubscriberRecord | None,
        choice: Choice,
        client: str,
        now: dt.datetime,
    ) -> SubscriberRecord | None:
        """The row a confirmation is for, with the visitor's choice: a new pending one, a
        pending one, or an unsubscribed one (it stays unsubscribed until confirmed). None:
        no confirmation, for an address that bounced or complained (only the operator brings
        it back) or that the operator removed."""
        if row is not None:
            if row.status not in ("pending", "unsubscribed"):
                log.info("signup.quiet reason=%s", row.status)
                return None
            return store.update_preferences(
                row.id, now=now, topics=choice.topics, cadence=choice.cadence
            )
        defaults = self.config.signup.defaults
        record = SubscriberRecord(
            email=choice.email,
            topics=choice.topics,
            cadence=choice.cadence,
            max_papers=defaults.max_papers,
            min_upvotes=defaults.min_upvotes,
            timezone=defaults.timezone,
            send_at=config_mod.parse_time(defaults.send_at) if defaults.send_at else None,
            status="pending",
            source="web",
            reason="signed up",
            signup_client=client,
        )
        try:
            return store.add_subscriber(record, now=now)
        except SubscriberRemovedError:
            log.info("signup.quiet reason=removed")
            return None
        except SubscriberExistsError:  # another process added it just now
            return None

    def _token(self, purpose: tokens.Purpose, subscriber_id: str) -> str:
        return tokens.make_token(self.site.keys, purpose, subscriber_id)

    # -- /confirm/<token> ------------------------------------------------------------------

    async def confirm(self, request: Request) -> Response:
        if not self.signup_enabled():
            return self.message("Not found", "There is nothing here.", status=404)
        token = request.path_params["token"]
        body = await forms.read_body(request, MAX_BODY) if request.method == "POST" else b""
        row = await run_in_threadpool(self.holder, token, "confirm")
        if row is None:
            return self.bad_token("confirmation")
        if row.status not in CONFIRMABLE:
            return self._confirmed_page(row, again=True)
        if request.method == "GET":
            return self.form_page(
                request,
                "confirm.html.j2",
                heading="Confirm your subscription",
                address=row.email,
                topics=[
                    self.config.topics[t].name or t for t in row.topics if t in self.config.topics
                ],
                cadence=row.cadence,
                action=self.page_root() + request.url.path,
            )
        form = forms.parse_form(request.headers.get("content-type", ""), body or b"")
        if form is None or not self.form_token_ok(request, form):
            return self.bad_form("This form has expired or did not come from this site.")
        client = self.client(request)
        confirmed = await run_in_threadpool(self._confirm, row.id, client)
        if confirmed is None:
            return self.bad_token("confirmation")
        self.site.changed()
        log.info("signup.confirmed subscriber=%s", confirmed.email)
        return self._confirmed_page(confirmed, again=False)

    def _confirm(self, subscriber_id: str, client: str) -> SubscriberRecord | None:
        now = self.site.clock()
        with self.store() as store:
            row = store.subscriber_by_id(subscriber_id)
            if row is not None and row.status == "unsubscribed":  # back, confirmed again
                store.set_subscriber_status(subscriber_id, "active", "confirmed again", now)
                return store.subscriber_by_id(subscriber_id)
            return store.confirm_subscriber(subscriber_id, now, client)

    def _confirmed_page(self, row: SubscriberRecord, *, again: bool) -> Response:
        manage = f"/manage/{self._token('manage', row.id)}"
        if row.status == "active":
            return self.message(
                "You are subscribed" if not again else "Already confirmed",
                f"{row.email} will get {self.config.newsletter.title} {row.cadence}, from the "
                "next digest on.",
                link={"url": self.url(manage), "text": "Manage your topics"},
            )
        return self.message(
            "Nothing to confirm",
            f"{row.email} is not waiting for a confirmation.",
            link={"url": self.url(manage), "text": "Manage your subscription"},
        )
