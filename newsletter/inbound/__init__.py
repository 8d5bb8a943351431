"""Inbound mail: bounces, spam complaints and mailto unsubscribes read back.

The pure part, in the order a message travels::

    verdict = read(raw)                        report.parse: what the message states
                                               reasons.classify: why each delivery failed
    verp = parse_verp(envelope_to, key)        tokens: which run and subscriber it is about
    unsubscriber = parse_unsubscribe(envelope_to, key)

``smtp_reply_is_permanent`` applies the same rules to a reply during the SMTP conversation.
"""

from newsletter.inbound.reasons import Reason, classify, smtp_reply_is_permanent
from newsletter.inbound.tokens import (
    SubscriberKey,
    Verp,
    parse_unsubscribe,
    parse_verp,
    unsubscribe_address,
    verp_address,
)
from newsletter.inbound.verdict import Detail, Kind, Verdict, read

__all__ = [
    "Detail",
    "Kind",
    "Reason",
    "SubscriberKey",
    "Verdict",
    "Verp",
    "classify",
    "parse_unsubscribe",
    "parse_verp",
    "read",
    "smtp_reply_is_permanent",
    "unsubscribe_address",
    "verp_address",
]
