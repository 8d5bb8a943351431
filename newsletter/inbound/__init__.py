"""Inbound mail: bounces, spam complaints and mailto unsubscribes read back.

The pure part, in the order a message travels::

    verdict = read(raw)                        report.parse: what the message states
                                               reasons.classify: why each delivery failed
    verp = parse_verp(envelope_to, key)        tokens: which run and subscriber it is about
    unsubscriber = parse_unsubscribe(envelope_to, key)

``smtp_reply_is_permanent`` applies the same rules to a reply during the SMTP conversation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each name is imported from its module when first asked for (PEP 562): composing needs only
# `tokens` (the VERP and unsubscribe addresses), not the bounce readers' hundreds of patterns
# (25 ms of every composing process's start, pool workers included).
_MODULE_OF = {
    "Reason": "reasons",
    "classify": "reasons",
    "smtp_reply_is_permanent": "reasons",
    "SubscriberKey": "tokens",
    "Verp": "tokens",
    "parse_unsubscribe": "tokens",
    "parse_verp": "tokens",
    "unsubscribe_address": "tokens",
    "verp_address": "tokens",
    "Detail": "verdict",
    "Kind": "verdict",
    "Verdict": "verdict",
    "read": "verdict",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


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
