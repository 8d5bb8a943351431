"""Inbound mail: bounces, spam complaints and mailto unsubscribes read back.

The pure part, in the order a message travels::

    verdict = read(raw)                        report.parse: what the message states
                                               reasons.classify: why each delivery failed

``smtp_reply_is_permanent`` applies the same rules to a reply during the SMTP conversation.
"""

from newsletter.inbound.reasons import Reason, classify, smtp_reply_is_permanent
from newsletter.inbound.verdict import Detail, Kind, Verdict, read

__all__ = ["Detail", "Kind", "Reason", "Verdict", "classify", "read", "smtp_reply_is_permanent"]
