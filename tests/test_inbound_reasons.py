"""The rules that tell a failure of the address from the rest, on replies as servers write them."""

from __future__ import annotations

import pytest

from newsletter.inbound.reasons import (
    classify,
    find_reply,
    find_stage,
    find_status,
    smtp_reply_is_permanent,
)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (
            550,
            "5.1.1 <ada@example.com>: Recipient address rejected: User unknown in local recipient table",
        ),
        (550, "5.1.1 The email account that you tried to reach does not exist."),
        (550, "Requested action not taken: mailbox unavailable"),
        (550, "No such user here"),
        (553, "5.1.2 Host unknown (Name server: mx.example.invalid: host not found)"),
        (550, "5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup"),
        (551, "User not local; please try <ada@example.net>"),
        (550, "5.1.1"),  # the status alone names the address
    ],
)
def test_a_reply_about_the_address_is_permanent(code: int, text: str) -> None:
    assert smtp_reply_is_permanent(code, text)


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (550, "5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org"),
        (550, "5.7.1 Message rejected due to content restrictions"),
        (554, "5.7.1 <ada@example.com>: Relay access denied"),
        (
            550,
            "5.7.26 Unauthenticated email from example.org is not accepted due to domain's DMARC policy",
        ),
        (552, "5.2.2 Mailbox full"),
        (552, "5.1.1 user over quota (#5.1.1)"),  # the words win over the code
        (550, "5.2.1 The email account that you tried to reach is disabled."),
        (554, "5.7.9 Message not accepted for policy reasons."),
        (421, "4.7.0 Try again later, closing connection."),
        (450, "4.1.1 <ada@example.com>: Recipient address rejected: User unknown"),  # 4xx: we retry
        (550, "Rejected"),  # says nothing either way: counted, not suppressed
        (550, "5.1.8 Sender address rejected: Domain not found"),
        (550, "Host or domain name not found. Name service error, try again"),
    ],
)
def test_a_reply_about_the_message_the_sender_or_the_moment_is_not(code: int, text: str) -> None:
    assert not smtp_reply_is_permanent(code, text)


def test_user_unknown_in_reply_to_data_is_a_content_filter() -> None:
    assert smtp_reply_is_permanent(550, "User unknown", stage="RCPT")
    assert not smtp_reply_is_permanent(550, "User unknown", stage="DATA")
    assert smtp_reply_is_permanent(550, "5.1.1 User unknown", stage="DATA")


def test_a_url_counts_by_its_host_only() -> None:
    # The path of a help link names anything ("#userunknown"); its host may say who blocks us.
    assert classify(None, "550 see https://help.example.net/errors#user-unknown") == "undetermined"
    assert classify("5.1.3", "553 https://www.spamhaus.org/query/bl?ip=192.0.2.1") == "blocked"


@pytest.mark.parametrize(
    ("text", "status", "reply"),
    [
        ("550 5.1.1 <a@b.example>... User unknown", "5.1.1", 550),
        ("550-5.7.26 Unauthenticated email", "5.7.26", 550),
        ("host 192.5.1.1 said: 550 Rejected", None, 550),  # an address is no status
        ("#5.4.4 (qmail)", "5.4.4", None),
    ],
)
def test_codes_are_found_in_text(text: str, status: str | None, reply: int | None) -> None:
    assert (find_status(text), find_reply(text)) == (status, reply)


@pytest.mark.parametrize(
    ("text", "stage"),
    [
        ("said: 550 User unknown (in reply to RCPT TO command)", "RCPT"),
        ("SMTP error from remote mail server after end of data: 550 Rejected", "DATA"),
        ("SMTP error from remote mail server after MAIL FROM:<x@y.example> SIZE=10: 553", "MAIL"),
        (">>> MAIL From:<x@y>\n>>> RCPT To:<a@b>\n>>> DATA\n<<< 550 User unknown", None),
        ("550 User unknown", None),
    ],
)
def test_the_stage_is_found_only_when_one_is_named(text: str, stage: str | None) -> None:
    assert find_stage(text) == stage
