"""A sign-up's emails (``compose.transactional``): what they say, what they never carry, and
that the normal SmtpSender delivers them to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.compose import Masthead, check_templates, transactional
from newsletter.deliver.events import Outcome
from newsletter.deliver.smtp import SmtpSender, SmtpSettings
from newsletter.errors import TemplateError
from newsletter.models import Outgoing
from tests.conftest import require
from tests.smtpserver import SmtpServer
from tests.test_spamassassin import INFORMATIONAL, MAX_SCORE, SPAMASSASSIN, spam_report

NOW = dt.datetime(2026, 11, 30, 14, 0, tzinfo=dt.UTC)
MASTHEAD = Masthead(
    title="Trending Papers",
    base_url="https://papers.example.org",
    from_header="Trending Papers <papers@example.org>",
    list_id="trending-papers.example.org",
    subject_template="{title}: {papers}",
)
CONFIRM = "https://papers.example.org/confirm/c.AbC_dEf-123?x=1&y=2"
MANAGE = "https://papers.example.org/manage/m.XyZ"


def parsed(message: Outgoing) -> EmailMessage:
    msg = email.message_from_bytes(message.data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def bodies(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def test_the_confirmation_email_is_multipart_with_the_link_and_says_nothing_happens() -> None:
    message = transactional(
        "confirm",
        "new.reader@example.org",
        {"confirm": CONFIRM},
        MASTHEAD,
        now=NOW,
        confirm_hours=48,
    )
    msg = parsed(message)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "Confirm your subscription to Trending Papers"
    assert msg["To"] == "new.reader@example.org"
    assert msg["From"] == "Trending Papers <papers@example.org>"
    assert msg["Date"] == "Mon, 30 Nov 2026 14:00:00 +0000"
    assert msg["Auto-Submitted"] == "auto-generated"
    # One person's mail, not the list's.
    assert msg["List-Unsubscribe"] is None and msg["Precedence"] is None
    text, html = bodies(msg)
    assert CONFIRM in text
    assert 'href="https://papers.example.org/confirm/c.AbC_dEf-123?x=1&amp;y=2"' in html
    for body in (text, " ".join(html.split())):
        assert "new.reader@example.org" in body
        assert "48 hours" in body
        assert "If this was not you, ignore this email: nothing happens" in " ".join(body.split())
    assert message.recipient == "new.reader@example.org"
    assert message.envelope_from == "papers@example.org"
    assert message.message_id == msg["Message-ID"]


def test_the_already_subscribed_email_links_to_the_manage_page() -> None:
    message = transactional("already", "r@example.org", {"manage": MANAGE}, MASTHEAD, now=NOW)
    msg = parsed(message)
    assert msg["Subject"] == "You are already subscribed to Trending Papers"
    text, html = bodies(msg)
    assert MANAGE in text and f'href="{MANAGE}"' in html
    assert "already subscribed" in text and "nothing happens" in " ".join(text.split())
    assert "hours" not in text  # no expiry: nothing to confirm


def test_nothing_but_the_address_comes_from_the_visitor() -> None:
    """The only visitor input is the address: the email's text is the same for two
    addresses but for the address itself (no name, no topics, nothing else to inject)."""
    a = transactional("confirm", "a@example.org", {"confirm": CONFIRM}, MASTHEAD, now=NOW)
    b = transactional("confirm", "b@example.org", {"confirm": CONFIRM}, MASTHEAD, now=NOW)
    assert a.email.text.replace("a@example.org", "X") == b.email.text.replace("b@example.org", "X")
    assert a.email.html.replace("a@example.org", "X") == b.email.html.replace("b@example.org", "X")
    assert a.email.to_name is None


@pytest.mark.parametrize(
    "to", ["a@example.org\r\nBcc: victim@example.org", "a@example.org\nX: y", "no-at-sign"]
)
def test_an_address_that_could_add_a_header_is_refused(to: str) -> None:
    with pytest.raises(ValueError):
        transactional("confirm", to, {"confirm": CONFIRM}, MASTHEAD, now=NOW)


def test_a_kind_or_link_that_does_not_fit_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown transactional email"):
        transactional("welcome", "a@example.org", {"confirm": CONFIRM}, MASTHEAD, now=NOW)
    with pytest.raises(ValueError, match="'manage' link"):
        transactional("already", "a@example.org", {"confirm": CONFIRM}, MASTHEAD, now=NOW)


def test_an_override_without_the_link_is_named_by_check(tmp_path: Path) -> None:
    (tmp_path / "confirm.txt.j2").write_text("Welcome to {{ title }}!\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"confirm\.txt\.j2.*confirm_url"):
        check_templates(tmp_path)
    (tmp_path / "confirm.txt.j2").write_text("Hello {{ nobody }}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match="nobody"):
        check_templates(tmp_path)


def test_an_override_is_used(tmp_path: Path) -> None:
    (tmp_path / "already.txt.j2").write_text("Yours: {{ manage_url }}\n", encoding="utf-8")
    message = transactional(
        "already", "r@example.org", {"manage": MANAGE}, MASTHEAD, now=NOW, templates_dir=tmp_path
    )
    assert message.email.text == f"Yours: {MANAGE}\n"


class _Outcomes:
    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def started(self, message: Outgoing) -> None:
        pass

    def retrying(self, message: Outgoing, detail: str) -> None:
        pass

    def finished(self, message: Outgoing, outcome: Outcome) -> None:
        self.outcomes.append(outcome)


def test_the_smtp_sender_delivers_it() -> None:
    message = transactional("confirm", "r@example.org", {"confirm": CONFIRM}, MASTHEAD, now=NOW)
    events = _Outcomes()
    with SmtpServer() as server:
        settings = SmtpSettings(host="127.0.0.1", port=server.port, security="none", timeout=10)
        SmtpSender(settings, records_deliveries=False).send_all([message], events)
    assert [o.status for o in events.outcomes] == ["sent"]
    [received] = server.received
    assert received.rcpt_tos == ["r@example.org"]
    assert received.mail_from == "papers@example.org"
    text, _ = bodies(email.message_from_bytes(received.data, policy=email.policy.default))  # type: ignore[arg-type]
    assert CONFIRM in text


@pytest.mark.parametrize(("kind", "link"), [("confirm", CONFIRM), ("already", MANAGE)])
def test_inbox_grade_for_spamassassin(tmp_path: Path, kind: str, link: str) -> None:
    """Like the digests (``test_spamassassin``): no rule adds points."""
    require(
        SPAMASSASSIN is not None, "spamassassin is not installed (apt-get install spamassassin)"
    )
    home = tmp_path / "home"
    home.mkdir()
    key = {"confirm": "confirm", "already": "manage"}[kind]
    message = transactional(kind, "reader@example.net", {key: link}, MASTHEAD, now=NOW)
    eml = tmp_path / f"{kind}.eml"
    eml.write_bytes(message.data)
    score, rules = spam_report(eml, home)
    assert rules, "no rules reported; is SpamAssassin working?"
    scoring = {r: p for r, p in rules.items() if p > 0 and r not in INFORMATIONAL}
    assert score <= MAX_SCORE and scoring == {}, (score, rules)
