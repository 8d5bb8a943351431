"""The public pages of `serve` over HTTP, with the daemon in this process, a real SQLite file
and a real SMTP server: sign-up, confirmation, the manage page, and the abuse limits."""

from __future__ import annotations

import datetime as dt
import http.client
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from newsletter.models import PaperData, SubscriberRecord
from newsletter.store import SqliteStore
from newsletter.web import tokens
from tests.signup_site import (
    KEY,
    NOW,
    RunningSite,
    Visitor,
    body_text,
    form_token,
    link,
    running_site,
)

# One site for the module: each test uses its own addresses and client addresses.
LIMITS = (
    "  per_client_per_hour: 30\n  max_pending: 500\n  confirm_hours: 48\n"
    "  defaults:\n    max_papers: 7\n    timezone: Europe/Berlin\n    send_at: '07:30'\n"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSite]:
    with running_site(tmp_path_factory.mktemp("signup"), signup=LIMITS) as running:
        yield running


def test_the_home_page_shows_the_topics_and_the_form(site: RunningSite) -> None:
    papers = [
        PaperData(id=f"2605.0000{i}", title=title, day=NOW.date(), upvotes=votes)
        for i, (title, votes) in enumerate(
            [
                ("Agents that plan with tools", 5),
                ("Agentic search at scale", 50),
                ("Latent diffusion, faster", 9),
                ("A paper about nothing", 99),
            ]
        )
    ]
    with SqliteStore(site.state) as store:
        store.add_papers(papers, NOW)
    status, page = Visitor().get(site.root + "/")
    assert status == 200
    assert "<h1>Trending Papers</h1>" in page
    assert "The most talked-about machine learning papers of the day" in page
    for shown in ("AI agents", "Agents that plan, use tools and act.", "Diffusion models"):
        assert shown in page
    assert '<input type="checkbox" id="topic-robotics" name="topics" value="robotics">' in page
    assert "internal" not in page  # public: false
    assert 'name="cadence" value="weekly"' in page and 'name="website"' in page
    # A few recent papers of each topic, the most upvoted first.
    agents = page.index("Agentic search at scale")
    assert agents < page.index("Agents that plan with tools") < page.index("Latent diffusion")
    assert "A paper about nothing" not in page


def test_sign_up_confirm_and_manage(site: RunningSite) -> None:
    ada = Visitor("198.51.100.10")
    status, page = ada.sign_up(site.root, "Ada@Example.org", ["agents", "diffusion"], "weekly")
    assert status == 200 and "Check your inbox" in page
    site.drain()
    [mail] = site.mail_to("Ada@Example.org")
    row = site.row("ada@example.org")
    assert row is not None and row.status == "pending" and row.source == "web"
    assert row.topics == ("agents", "diffusion") and row.cadence == "weekly"
    assert row.signup_client == "198.51.100.10"  # from the trusted proxy's X-Forwarded-For
    assert (row.max_papers, row.timezone, row.send_at) == (7, "Europe/Berlin", dt.time(7, 30))

    confirm = link(mail, "confirm")
    status, page = ada.get(confirm)  # a link scanner's GET changes nothing
    assert status == 200 and "Confirm my subscription" in page
    assert site.row("ada@example.org").status == "pending"  # type: ignore[union-attr]
    status, page = ada.post(confirm, {"form_token": form_token(page)})
    assert status == 200 and "You are subscribed" in page, page
    row = site.row("ada@example.org")
    assert row is not None and row.status == "active" and row.confirmed_at == NOW
    assert row.confirm_client == "198.51.100.10"

    # The manage page: one topic, daily, five papers; then pause.
    manage = site.root + "/manage/" + tokens.make_token(KEY, "manage", row.id)
    status, page = ada.get(manage)
    assert status == 200 and 'value="agents" checked' in page and 'value="robotics">' in page
    fields = {"form_token": form_token(page), "topics": ["robotics"], "cadence": "daily"}
    status, page = ada.post(manage, {**fields, "max_papers": "5", "delivery": "active"})
    assert status == 200 and "Your changes apply from the next digest" in page, page
    row = site.row("ada@example.org")
    assert row is not None and (row.topics, row.cadence, row.max_papers, row.status) == (
        ("robotics",),
        "daily",
        5,
        "active",
    )
    status, page = ada.post(
        manage, {**fields, "form_token": form_token(page), "max_papers": "5", "delivery": "paused"}
    )
    assert status == 200 and site.row("ada@example.org").status == "paused"  # type: ignore[union-attr]

    # Signing up again: no confirmation, a "manage your topics" email instead.
    site.drain()
    before = len(site.mail_to("Ada@Example.org"))
    row = site.row("ada@example.org")
    assert row is not None
    site.daemon.clock.advance(25 * 3600)  # type: ignore[attr-defined]  # past the one-email day
    status, page = Visitor("198.51.100.11").sign_up(site.root, "ada@example.org", ["agents"])
    assert status == 200 and "Check your inbox" in page
    site.drain()
    mails = site.mail_to("ada@example.org")
    assert len(mails) == before + 1
    assert "/manage/" in body_text(mails[-1]) and "/confirm/" not in body_text(mails[-1])
    assert site.row("ada@example.org").topics == ("robotics",)  # type: ignore[union-attr]


def test_twenty_sign_ups_of_one_address_send_one_email(site: RunningSite) -> None:
    pages = [
        Visitor(f"203.0.113.{i}").sign_up(site.root, "twenty@example.org", ["agents"])
        for i in range(20)
    ]
    assert {p[0] for p in pages} == {200} and all("Check your inbox" in p[1] for p in pages)
    assert len({p[1] for p in pages}) == 1  # the same page every time
    site.drain()
    assert len(site.mail_to("twenty@example.org")) == 1


def test_two_hundred_honeypot_posts_send_nothing(site: RunningSite) -> None:
    before = len(site.smtp.received), len(site.rows())
    for i in range(200):
        status, page = Visitor(f"192.0.2.{i % 250}").sign_up(
            site.root, f"bot{i}@example.org", ["agents"], website="http://spam.example"
        )
        assert status == 200 and "Check your inbox" in page
    site.drain()
    assert (len(site.smtp.received), len(site.rows())) == before


def test_a_flood_from_one_client_gets_429s(site: RunningSite) -> None:
    flood = Visitor("198.51.100.99")
    token = flood.form_token(site.root + "/")
    answers = [
        flood.post(
            site.root + "/subscribe",
            {"form_token": token, "email": f"f{i}@example.org", "topics": "agents"},
        )
        for i in range(40)
    ]
    codes = [a[0] for a in answers]
    assert codes[:30] == [200] * 30 and set(codes[30:]) == {429}, codes
    assert "Too many sign-ups" in answers[-1][1]
    site.drain()
    assert len([m for m in site.smtp.received if m.rcpt_tos[0].startswith("f")]) == 30


def test_the_confirmation_email_carries_no_text_the_visitor_typed(site: RunningSite) -> None:
    Visitor("198.51.100.20").sign_up(
        site.root, "eve@example.org", ["agents"], name="<b>Buy pills</b> http://evil.example"
    )
    site.drain()
    [mail] = site.mail_to("eve@example.org")
    assert b"pills" not in mail.data and b"evil" not in mail.data


@pytest.mark.parametrize(
    "fields",
    [
        {"email": "x@example.org", "topics": "agents"},  # no form token
        {"form_token": "123.abc", "email": "x@example.org", "topics": "agents"},  # forged
        {"form_token": "TOKEN", "email": "not an address", "topics": "agents"},
        {"form_token": "TOKEN", "email": "x@example.org"},  # no topic
        {"form_token": "TOKEN", "email": "x@example.org", "topics": "nope"},
        {"form_token": "TOKEN", "email": "x@example.org", "topics": "internal"},  # not public
        {"form_token": "TOKEN", "email": "x@example.org", "topics": "agents", "cadence": "hourly"},
        {"form_token": "TOKEN", "email": "x@example.org\r\nBcc: y@example.org", "topics": "agents"},
    ],
)
def test_a_bad_sign_up_form_gets_a_400_page_and_changes_nothing(
    site: RunningSite, fields: dict[str, str]
) -> None:
    visitor = Visitor("198.51.100.30")
    token = visitor.form_token(site.root + "/")
    fields = {k: (token if v == "TOKEN" else v) for k, v in fields.items()}
    before = site.rows(), len(site.smtp.received)
    status, page = visitor.post(site.root + "/subscribe", fields)  # type: ignore[arg-type]
    assert status == 400 and "Nothing was changed" in page, page
    site.drain()
    assert (site.rows(), len(site.smtp.received)) == before


def test_a_form_token_needs_the_cookie_it_was_made_for(site: RunningSite) -> None:
    token = Visitor("198.51.100.31").form_token(site.root + "/")
    other = Visitor("198.51.100.31")  # another browser: its own cookie
    other.get(site.root + "/")
    status, _ = other.post(
        site.root + "/subscribe",
        {"form_token": token, "email": "csrf@example.org", "topics": "agents"},
    )
    assert status == 400 and site.row("csrf@example.org") is None


def pending_row(site: RunningSite, address: str) -> SubscriberRecord:
    with SqliteStore(site.state) as store:
        return store.add_subscriber(
            SubscriberRecord(email=address, topics=("agents",), status="pending", source="web"),
            now=NOW,
        )


def bad_tokens(purpose: tokens.Purpose, subscriber_id: str) -> dict[str, str]:
    good = tokens.make_token(KEY, purpose, subscriber_id, expires=NOW + dt.timedelta(hours=1))
    return {
        "forged": tokens.make_token(
            b"another-key-of-at-least-32-bytes-xxxx", purpose, subscriber_id
        ),
        "expired": tokens.make_token(
            KEY, purpose, subscriber_id, expires=NOW - dt.timedelta(seconds=1)
        ),
        "truncated": good[:-3],
        "altered": good[:-2] + ("AA" if not good.endswith("AA") else "BB"),
        "another purpose": tokens.make_token(
            KEY, "manage" if purpose != "manage" else "confirm", subscriber_id
        ),
        "garbage": "%00%ff..",
    }


def test_forged_expired_or_truncated_tokens_get_a_400_and_change_nothing(
    site: RunningSite,
) -> None:
    row = pending_row(site, "tokens@example.org")
    visitor = Visitor("198.51.100.40")
    cookie_page = visitor.get(site.root + "/")[1]
    before = site.rows()
    for purpose in ("confirm", "manage", "unsubscribe"):
        for what, token in bad_tokens(purpose, row.id).items():  # type: ignore[arg-type]
            url = f"{site.root}/{purpose}/{token}"
            for method in ("GET", "POST"):
                if method == "GET":
                    status, page = visitor.get(url)
                else:
                    fields = {
                        "form_token": form_token(cookie_page),
                        "List-Unsubscribe": "One-Click",
                    }
                    status, page = visitor.post(
                        url,
                        {
                            **fields,
                            "topics": "agents",
                            "cadence": "daily",
                            "max_papers": "3",
                            "delivery": "paused",
                        },
                    )
                assert status == 400, (purpose, what, method, page)
                assert "link is not valid" in page, (purpose, what, method)
    assert site.rows() == before


def test_too_many_pending_sign_ups_get_a_503_and_no_mail(tmp_path: Path) -> None:
    with running_site(tmp_path, signup="  max_pending: 3\n") as small:
        for i in range(3):
            pending_row(small, f"wait{i}@example.org")
        status, page = Visitor().sign_up(small.root, "late@example.org", ["agents"])
        assert status == 503 and "Sign-ups are paused" in page
        small.drain()
        assert small.row("late@example.org") is None and small.smtp.received == []


def test_the_public_pages_are_off_unless_signup_is_enabled(tmp_path: Path) -> None:
    with running_site(tmp_path, enabled=False) as off:
        assert Visitor().get(off.root + "/")[0] == 404
        assert Visitor().post(off.root + "/subscribe", {"email": "a@example.org"})[0] == 404
        assert Visitor().get(off.root + "/confirm/abc")[0] == 404
        assert Visitor().get(off.root + "/healthz")[0] == 200
        assert Visitor().get(off.root + "/manage/abc")[0] == 400  # always on

        # A reload (SIGHUP) turns them on: the pages read the config in force.
        off.cfg.write_text(off.cfg.read_text().replace("enabled: false", "enabled: true"))
        off.daemon.reload()
        assert Visitor().get(off.root + "/")[0] == 200


def test_a_file_subscriber_can_pause_but_keeps_the_files_topics(tmp_path: Path) -> None:
    listed = "\n  - email: file@example.org\n    topics: [agents]\n"
    with running_site(tmp_path, subscribers=listed) as on:
        with SqliteStore(on.state) as store:
            rows = store.sync_file_subscribers(on.daemon.config.subscriber_models(), NOW)
        row = rows["file@example.org"]
        manage = on.root + "/manage/" + tokens.make_token(KEY, "manage", row.id)
        visitor = Visitor()
        status, page = visitor.get(manage)
        assert status == 200 and "set by the newsletter's operator" in page
        assert 'name="topics"' not in page
        fields = {"form_token": form_token(page), "topics": "robotics", "delivery": "paused"}
        status, page = visitor.post(manage, fields)
        assert status == 200, page
        after = on.row("file@example.org")
        assert after is not None and after.status == "paused" and after.topics == ("agents",)


def test_serve_purges_sign_ups_not_confirmed_in_time(tmp_path: Path) -> None:
    with running_site(tmp_path, signup="  confirm_hours: 1\n") as on:
        with SqliteStore(on.state) as store:
            store.add_subscriber(
                SubscriberRecord(email="old@example.org", topics=("agents",), status="pending"),
                now=NOW - dt.timedelta(hours=2),
            )
            store.add_subscriber(
                SubscriberRecord(email="new@example.org", topics=("agents",), status="pending"),
                now=NOW,
            )
        on.daemon._purge()  # what its upkeep thread runs every PURGE_EVERY
        assert on.row("old@example.org") is None and on.row("new@example.org") is not None


@pytest.mark.slow
def test_two_thousand_sign_ups_fifty_at_a_time_leave_healthz_answering(tmp_path: Path) -> None:
    """2,000 sign-ups of distinct addresses, 50 in flight at a time, from one client (its
    limit raised for the test), while another client asks /healthz again and again."""
    limits = "  per_client_per_hour: 5000\n  max_pending: 5000\n"
    with running_site(tmp_path, signup=limits) as big:
        visitor = Visitor("198.51.100.50")
        token = visitor.form_token(big.root + "/")
        cookie = "; ".join(f"{c.name}={c.value}" for c in visitor.jar)
        host, port = big.root.removeprefix("http://").split(":")

        def sign_up(i: int) -> int:
            body = urllib.parse.urlencode(
                {"form_token": token, "email": f"load{i}@example.org", "topics": "agents"}
            )
            conn = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                conn.request(
                    "POST",
                    "/subscribe",
                    body,
                    {
                        "Content-Type": "application/x-www-form-urlencoded",
                        "Cookie": cookie,
                        "X-Forwarded-For": "198.51.100.50",
                    },
                )
                return conn.getresponse().status
            finally:
                conn.close()

        done = threading.Event()
        health: list[tuple[bool, float]] = []

        def ask_health() -> None:
            while not done.is_set():
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(big.root + "/healthz", timeout=10) as r:
                        ok = r.status == 200 and r.read() == b"ok\n"
                except OSError:
                    ok = False
                health.append((ok, time.monotonic() - started))
                time.sleep(0.05)

        watcher = threading.Thread(target=ask_health)
        watcher.start()
        started = time.monotonic()
        try:
            with ThreadPoolExecutor(50) as pool:
                statuses = Counter(pool.map(sign_up, range(2000)))
        finally:
            done.set()
            watcher.join()
        took = time.monotonic() - started
        pending = sum(1 for r in big.rows() if r.status == "pending")
    failed = [h for h in health if not h[0]]
    print(
        f"\nload: 2000 sign-ups, 50 at a time: {took:.1f} s ({2000 / took:.0f}/s); "
        f"statuses {dict(statuses)}; /healthz asked {len(health)} times, failed {len(failed)}, "
        f"slowest {max(h[1] for h in health) * 1000:.0f} ms; pending rows {pending}"
    )
    assert statuses == {200: 2000}
    assert health and failed == []
    assert pending == 2000


def test_an_unsubscribed_reader_comes_back_only_by_confirming_and_a_bounced_one_not_at_all(
    site: RunningSite,
) -> None:
    with SqliteStore(site.state) as store:
        for address, status in (
            ("gone@example.org", "unsubscribed"),
            ("dead@example.org", "bounced"),
        ):
            store.add_subscriber(
                SubscriberRecord(email=address, topics=("agents",), status=status, source="web"),  # type: ignore[arg-type]
                now=NOW,
            )
    visitor = Visitor("198.51.100.60")
    for address in ("gone@example.org", "dead@example.org"):
        status, page = visitor.sign_up(site.root, address, ["diffusion"])
        assert status == 200 and "Check your inbox" in page
    site.drain()
    assert site.mail_to("dead@example.org") == []
    assert site.row("dead@example.org").status == "bounced"  # type: ignore[union-attr]
    [mail] = site.mail_to("gone@example.org")
    row = site.row("gone@example.org")
    assert row is not None and row.status == "unsubscribed" and row.topics == ("diffusion",)
    confirm = link(mail, "confirm")
    status, page = visitor.post(confirm, {"form_token": form_token(visitor.get(confirm)[1])})
    assert status == 200 and "You are subscribed" in page
    assert site.row("gone@example.org").status == "active"  # type: ignore[union-attr]


def test_a_test_copys_links_show_the_test_page_and_change_nothing(site: RunningSite) -> None:
    row = pending_row(site, "tested@example.org")
    with SqliteStore(site.state) as store:
        store.set_subscriber_status(row.id, "active", "test", NOW)
    before = site.rows()
    visitor = Visitor("198.51.100.70")
    for sid, shown in ((row.id, "tested@example.org"), ("NoRowYet0123", "the subscriber")):
        token = tokens.make_token(KEY, "test", sid)
        for kind in ("manage", "unsubscribe"):
            for answer in (
                visitor.get(f"{site.root}/{kind}/{token}"),
                visitor.post(f"{site.root}/{kind}/{token}", {"List-Unsubscribe": "One-Click"}),
            ):
                assert answer[0] == 200 and "test copy" in answer[1], answer
                assert f"Nothing was changed: {shown} stays subscribed" in answer[1]
    assert site.rows() == before
