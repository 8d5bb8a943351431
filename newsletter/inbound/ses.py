"""Amazon SES notifications: the JSON that SES sends through SNS, mailed as a message body."""

from __future__ import annotations

import json
import re

from newsletter.inbound._types import Entry, Report
from newsletter.inbound.reasons import find_reply, find_stage, find_status


def notification(text: str) -> Report | None:
    """The bounce, complaint or delivery an SES notification reports; None if it is not one."""
    start = text.find("{")
    if start < 0:
        return None
    body = re.sub(r"\r?\n ", "", text[start:])  # SNS folds long lines with a newline and a space
    try:
        data, _ = json.JSONDecoder().raw_decode(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("Message"), str):  # the SNS envelope around it
        return notification(data["Message"])
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    if kind == "complaint":
        complaint = _dict(data.get("complaint"))
        who = [_dict(r).get("emailAddress") for r in _list(complaint.get("complainedRecipients"))]
        return Report(
            "complaint",
            feedback_type=str(complaint.get("complaintFeedbackType") or "abuse").lower(),
            complained=tuple(a for a in who if isinstance(a, str) and "@" in a),
        )
    if kind == "bounce":
        bounce = _dict(data.get("bounce"))
        words = f"{bounce.get('bounceType', '')} {bounce.get('bounceSubType', '')}".strip()
        entries = tuple(_entry(_dict(r), words) for r in _list(bounce.get("bouncedRecipients")))
        return Report("delivery", entries) if entries else None
    if kind == "delivery":
        return Report("other")
    return None


def _entry(row: dict[str, object], words: str) -> Entry:
    diag = str(row.get("diagnosticCode") or "")
    said = diag.split(";", 1)[1].strip() if ";" in diag else diag
    address = row.get("emailAddress")
    return Entry(
        recipient=address if isinstance(address, str) else None,
        action=str(row.get("action") or "failed").lower(),
        status=find_status(str(row.get("status") or "")) or find_status(said),
        reply=find_reply(said),
        diagnostic=said or words,  # SES's own words ("Permanent General") when no server spoke
        stage=find_stage(said),
    )


def _dict(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []
