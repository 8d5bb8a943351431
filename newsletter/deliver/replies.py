"""SMTP replies: their codes by name, and what the sender does with each (pure).

    action(code, text, stage)   4xx             -> retry (421: on a new connection)
                                5.7.x, or a 5xx
                                to MAIL FROM    -> stop: the server refuses *us*
                                5xx to RCPT about
                                the address      -> bounce: failed, and never mailed again
                                any other 5xx   -> fail: this message, final

Whether a 5xx condemns the address is ``inbound.smtp_reply_is_permanent``'s rule, the one
bounces read back later are judged by: ``550 5.1.1 user unknown`` does, ``550 5.2.2 mailbox
full`` does not.
"""

from __future__ import annotations

import enum
from typing import Literal

from newsletter.inbound import smtp_reply_is_permanent

#: The command a reply answered (the end of the message's data counts as DATA).
Stage = Literal["MAIL", "RCPT", "DATA"]


class SmtpStatus(enum.IntEnum):
    """The reply codes the sender looks at (RFC 5321 4.2.3), with aiosmtplib's names."""

    completed = 250
    start_input = 354
    domain_unavailable = 421  # the server is closing the connection
    mailbox_unavailable = 450
    error_processing = 451
    insufficient_storage = 452
    mailbox_does_not_exist = 550
    user_not_local = 551
    storage_exceeded = 552
    mailbox_name_invalid = 553
    transaction_failed = 554


class ReplyAction(enum.Enum):
    """What the sender does with a reply that is not the one it waited for."""

    retry = "retry"  # later, on the same connection
    reconnect = "reconnect"  # later, on a new connection
    fail = "fail"  # the message failed: final
    bounce = "bounce"  # the message failed and the address is bad: suppress it
    stop = "stop"  # the server refuses us: stop the send, the rest stays pending


def transient(code: int) -> bool:
    return 400 <= code < 500


def permanent(code: int) -> bool:
    return 500 <= code < 600


def is_policy(code: int, text: str) -> bool:
    """5.7.x: the server refuses *us* (policy, authentication), not this recipient."""
    return permanent(code) and text.lstrip().startswith("5.7.")


def action(code: int, text: str, stage: Stage) -> ReplyAction:
    """What to do with ``code text``, the reply to ``stage``."""
    if code == SmtpStatus.domain_unavailable:
        return ReplyAction.reconnect
    if transient(code):
        return ReplyAction.retry
    if permanent(code) and (stage == "MAIL" or is_policy(code, text)):
        return ReplyAction.stop
    if stage == "RCPT" and smtp_reply_is_permanent(code, text, stage):
        return ReplyAction.bounce
    return ReplyAction.fail


def describe(code: int, text: str) -> str:
    """The reply as one line, as the ledger and the operator see it: ``550 5.1.1 ...``."""
    return f"{code} {text}".strip()
