"""The hand-off types of the inbound stage, between reading a message and judging it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from newsletter.inbound.reasons import Stage

ReportKind = Literal["delivery", "complaint", "auto-reply", "other"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One recipient's part of a delivery report, as the report states it.

    Made by ``report.parse`` (through ``dsn``, ``prose``, ``ses``); read by ``verdict.read``.
    """

    recipient: str | None  # None when the report does not name it (the VERP token will)
    action: str | None  # RFC 3464: failed, delayed, delivered, relayed, expanded; lowercase
    status: str | None  # enhanced status code, "5.1.1"
    reply: int | None  # the remote server's reply code, 550
    diagnostic: str  # what the server or the report says about this recipient, on one line
    stage: Stage | None = None  # the SMTP command the refusal answered, when the report says
    mailer: bool = False  # said by a local delivery program (x-unix), not by a mail server


@dataclass(frozen=True, slots=True)
class Report:
    """What one inbound message is. Made by ``report.parse``; read by ``verdict.read``."""

    kind: ReportKind
    entries: tuple[Entry, ...] = ()  # kind "delivery"
    feedback_type: str | None = None  # kind "complaint" (or an ARF report of another type)
    complained: tuple[str, ...] = ()  # the addresses a complaint is about
