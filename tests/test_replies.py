"""What the SMTP sender does with each reply (``deliver.replies``, pure)."""

from __future__ import annotations

import pytest

from newsletter.deliver import SmtpStatus
from newsletter.deliver.replies import ReplyAction, Stage, action


@pytest.mark.parametrize(
    ("code", "text", "stage", "expected"),
    [
        (421, "4.3.2 Service shutting down", "DATA", ReplyAction.reconnect),
        (421, "Too many connections", "RCPT", ReplyAction.reconnect),
        (451, "4.3.0 Temporary failure", "DATA", ReplyAction.retry),
        (450, "4.2.1 Mailbox busy", "RCPT", ReplyAction.retry),
        (452, "4.3.1 Insufficient system storage", "MAIL", ReplyAction.retry),
        # The server refuses us, not the recipient: the send stops, the rest stays pending.
        (550, "5.7.1 Client host rejected: blocked using a DNSBL", "RCPT", ReplyAction.stop),
        (554, "5.7.1 Message rejected by policy", "DATA", ReplyAction.stop),
        (553, "5.1.8 Sender address rejected", "MAIL", ReplyAction.stop),
        (501, "Syntax error in parameters", "MAIL", ReplyAction.stop),
        # The address itself is bad: failed, and never mailed again.
        (550, "5.1.1 No such user here", "RCPT", ReplyAction.bounce),
        (554, "5.1.1 User unknown", "RCPT", ReplyAction.bounce),
        (550, "Requested action not taken: mailbox unavailable", "RCPT", ReplyAction.bounce),
        (551, "User not local; please try <forward@example.org>", "RCPT", ReplyAction.bounce),
        (553, "5.1.3 Bad recipient address syntax", "RCPT", ReplyAction.bounce),
        # Failed, but the mailbox exists: a later digest may get through.
        (550, "5.2.2 Mailbox full", "RCPT", ReplyAction.fail),
        (552, "5.2.2 Mailbox over quota", "RCPT", ReplyAction.fail),
        (550, "5.1.1 User unknown", "DATA", ReplyAction.fail),  # a content filter's words
        (552, "5.3.4 Message too big", "DATA", ReplyAction.fail),
        (554, "Transaction failed", "DATA", ReplyAction.fail),
    ],
)
def test_each_reply_has_one_action(
    code: int, text: str, stage: Stage, expected: ReplyAction
) -> None:
    assert action(code, text, stage) is expected


def test_reply_codes_are_named() -> None:
    assert SmtpStatus.completed == 250 and SmtpStatus.start_input == 354
    assert SmtpStatus(421) is SmtpStatus.domain_unavailable
    assert SmtpStatus.mailbox_does_not_exist == 550
    assert f"{SmtpStatus.transaction_failed:d}" == "554"
