"""``PreviewSender``: every message written to a folder instead of sent, with a gallery.

One ``.eml`` (the complete MIME message) and one ``.html`` (its HTML body, to open in a
browser) per recipient, then ``index.html`` listing them all, and each subscriber who got no
email with the reason. It never sends and never records a delivery.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from newsletter.deliver.events import Events, Outcome
from newsletter.errors import SendError
from newsletter.models import Outgoing


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
    """Writes each message to ``out_dir``; needs the messages composed with their bodies."""

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

    def send_all(self, messages: Iterable[Outgoing], events: Events) -> None:
        for message in messages:
            events.started(message)
            self.deliver(message)
            events.finished(message, Outcome("sent"))

    def deliver(self, message: Outgoing) -> None:
        if not message.email.html:  # composed with bodies=False: never write an empty page
            raise SendError(message.recipient, "the message came without its HTML body")
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
        self.write_index()

    def write_index(self, not_written: Iterable[tuple[str, str]] = ()) -> None:
        """The gallery: every email, then each subscriber who got none and why (``not_written``:
        (address, reason) pairs, e.g. "nothing new", "unsubscribed")."""
        try:
            self.index_path.write_text(_index(self.entries, list(not_written)), encoding="utf-8")
        except OSError as e:
            raise SendError(
                str(self.index_path), f"cannot write the gallery: {e.strerror or e}"
            ) from e

    @property
    def index_path(self) -> Path:
        return self.out_dir / "index.html"


def _slug(address: str) -> str:
    return re.sub(r"[^a-z0-9@._-]+", "_", address.casefold())[:80]


# On a narrow screen (a phone) each row becomes a small card: no sideways scrolling.
_GALLERY_CSS = """\
body{font-family:system-ui,sans-serif;margin:2rem;color:#111}
table{border-collapse:collapse;width:100%}
td,th{padding:.4rem .8rem;border-bottom:1px solid #ddd;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
.n{text-align:right;white-space:nowrap}
.why{color:#555}
@media (max-width:40rem){
body{margin:1rem}
thead{display:none}
table,tbody,tr,td{display:block}
tr{border-bottom:1px solid #ddd;padding:.5rem 0}
td{border:0;padding:.1rem 0}
.n{text-align:left}
td[data-label]::before{content:attr(data-label) ": ";color:#555}
td:first-child{font-weight:600}
}"""


def _index(entries: list[_Entry], not_written: list[tuple[str, str]]) -> str:
    """One row per email (the subject opens it, .eml the whole message), then one per
    subscriber without an email, saying why."""

    def row(e: _Entry) -> str:
        papers = f"{e.papers}" + (f" ({e.left_out} left out)" if e.left_out else "")
        return (
            f"<tr><td>{html.escape(e.recipient)}</td>"
            f'<td><a href="{html.escape(quote(e.html_name))}" target="_blank">'
            f"{html.escape(e.subject)}</a></td>"
            f'<td class="n" data-label="Papers">{html.escape(papers)}</td>'
            f'<td class="n" data-label="HTML size">{e.html_bytes / 1000:.1f} KB</td>'
            f'<td><a href="{html.escape(quote(e.eml_name))}">.eml</a></td></tr>'
        )

    def skipped(address: str, why: str) -> str:
        return (
            f'<tr class="none"><td>{html.escape(address)}</td>'
            f'<td colspan="4" class="why">no email: {html.escape(why)}</td></tr>'
        )

    rows = "\n".join([*(row(e) for e in entries), *(skipped(a, w) for a, w in not_written)])
    empty = "" if entries else "<p>No digests: no subscriber gets an email this time.</p>"
    n, others = len(entries), len(not_written)
    counts = f"{n} email{'' if n == 1 else 's'}" + (
        f"; {others} subscriber{'' if others == 1 else 's'} without one" if others else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Newsletter preview</title>
<style>{_GALLERY_CSS}</style></head>
<body><h1>Newsletter preview</h1><p>{counts}; nothing was sent.
Click a subject to open the email.</p>{empty}
<table><thead><tr><th>Recipient</th><th>Subject</th><th>Papers</th><th>HTML size</th><th>Message</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
