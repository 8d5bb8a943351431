"""Delivery: the ``Sender`` protocol and the preview sender that writes a folder.

``PreviewSender`` writes one ``.eml`` (the complete MIME message) and one ``.html`` per
recipient plus an ``index.html`` gallery; it never sends and never records a delivery.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from newsletter.errors import SendError
from newsletter.message import Outgoing


class Sender(Protocol):
    #: Whether delivering means a subscriber received it (so it is recorded as sent).
    records_deliveries: bool

    def deliver(self, message: Outgoing) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _Entry:
    recipient: str
    subject: str
    papers: int
    left_out: int
    html_bytes: int
    html_name: str
    eml_name: str


class PreviewSender:
    records_deliveries = False

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.entries: list[_Entry] = []
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SendError(
                str(out_dir), f"cannot create the preview folder: {e.strerror or e}"
            ) from e

    def deliver(self, message: Outgoing) -> None:
        stem = f"{len(self.entries) + 1:03d}-{_slug(message.recipient)}"
        try:
            (self.out_dir / f"{stem}.eml").write_bytes(message.data)
            (self.out_dir / f"{stem}.html").write_text(message.email.html, encoding="utf-8")
        except OSError as e:
            raise SendError(
                message.recipient, f"cannot write {self.out_dir}: {e.strerror or e}"
            ) from e
        self.entries.append(
            _Entry(
                recipient=message.recipient,
                subject=message.email.subject,
                papers=len(message.email.paper_ids),
                left_out=len(message.email.dropped_ids),
                html_bytes=len(message.email.html.encode("utf-8")),
                html_name=f"{stem}.html",
                eml_name=f"{stem}.eml",
            )
        )

    def close(self) -> None:
        self.index_path.write_text(_index(self.entries), encoding="utf-8")

    @property
    def index_path(self) -> Path:
        return self.out_dir / "index.html"


def _slug(address: str) -> str:
    return re.sub(r"[^a-z0-9@._-]+", "_", address.casefold())[:80]


def _index(entries: list[_Entry]) -> str:
    """The gallery: one row per email; the subject opens the email, .eml the whole message."""

    def row(e: _Entry) -> str:
        papers = f"{e.papers}" + (f" ({e.left_out} left out)" if e.left_out else "")
        return (
            f"<tr><td>{html.escape(e.recipient)}</td>"
            f'<td><a href="{html.escape(quote(e.html_name))}" target="_blank">'
            f"{html.escape(e.subject)}</a></td>"
            f'<td class="n">{html.escape(papers)}</td>'
            f'<td class="n">{e.html_bytes / 1000:.1f} KB</td>'
            f'<td><a href="{html.escape(quote(e.eml_name))}">.eml</a></td></tr>'
        )

    rows = "\n".join(row(e) for e in entries)
    empty = "" if entries else '<tr><td colspan="5">No digests: nobody has new papers.</td></tr>'
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Newsletter preview</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#111}}table{{border-collapse:collapse}}
td,th{{padding:.4rem .8rem;border-bottom:1px solid #ddd;text-align:left}}.n{{text-align:right}}</style></head>
<body><h1>Newsletter preview</h1><p>{len(entries)} email{"" if len(entries) == 1 else "s"}; nothing was sent.
Click a subject to open the email.</p>
<table><thead><tr><th>Recipient</th><th>Subject</th><th>Papers</th><th>HTML size</th><th>Message</th></tr></thead>
<tbody>
{rows}{empty}
</tbody></table></body></html>
"""
