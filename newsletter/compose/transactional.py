"""A sign-up's own email: "confirm your subscription" or "you are already subscribed". Pure.

    message = transactional(kind, to, links, masthead, now=now)

``kind`` is ``confirm`` (``links["confirm"]``: the confirmation page) or ``already`` (an
active reader signed up again; ``links["manage"]``: their preferences page). Both come from
the sign-up form and from ``newsletter subscribers add``, so they carry no text the visitor
typed other than the address: no name, no topics, nothing a bot could use to mail a stranger
its own words. They are one person's mail, not a list's: no List-Unsubscribe, no
``Precedence: bulk``; each says what happens if it was not you (nothing). Multipart (text and
HTML, the HTML styled inline: no premailer), signed with DKIM when the digests are, sent by
the normal ``SmtpSender``. Templates ``confirm.*.j2`` and ``already.*.j2``, overridable file by
file in ``newsletter.templates_dir`` like the digest's.

    letters = Transactional(templates_dir)       # the templates read once, for many emails
    message = letters.compose(kind, to, links, masthead, now=now)
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Literal, get_args

from markupsafe import escape

from newsletter.compose import templates
from newsletter.compose.headers import POLICY, header_text, one_line
from newsletter.compose.masthead import Masthead
from newsletter.errors import TemplateError
from newsletter.models import Email, Outgoing

TransactionalKind = Literal["confirm", "already"]
KINDS: tuple[str, ...] = get_args(TransactionalKind)
#: The link each kind's email is for: its templates must print it.
LINK: Mapping[str, str] = {"confirm": "confirm", "already": "manage"}
SUBJECT: Mapping[str, str] = {
    "confirm": "Confirm your subscription to {title}",
    "already": "You are already subscribed to {title}",
}


def transactional(
    kind: str,
    to: str,
    links: Mapping[str, str],
    masthead: Masthead,
    *,
    now: dt.datetime | None = None,
    confirm_hours: int | None = None,
    templates_dir: Path | None = None,
) -> Outgoing:
    """The ``kind`` email to ``to`` with ``links`` (see the module's docstring).

    ``now`` is the message's Date (None: the current time, for callers that have no clock
    of their own); ``confirm_hours`` how long the confirmation link works (said in the
    email when given). A template that leaves out its link is a ``TemplateError``. Reads
    the templates (a few milliseconds); ``Transactional`` reads them once for many emails.
    """
    return Transactional(templates_dir).compose(
        kind, to, links, masthead, now=now, confirm_hours=confirm_hours
    )


class Transactional:
    """Sign-up emails from one templates folder, read once (``subscribers import`` mails
    hundreds); owned by its caller, like a ``Composer``: no cache outlives it."""

    def __init__(self, templates_dir: Path | None = None) -> None:
        self.env = templates.make_env(templates_dir)

    def compose(
        self,
        kind: str,
        to: str,
        links: Mapping[str, str],
        masthead: Masthead,
        *,
        now: dt.datetime | None = None,
        confirm_hours: int | None = None,
    ) -> Outgoing:
        """``transactional``'s email."""
        if kind not in KINDS:
            raise ValueError(f"unknown transactional email {kind!r} (one of {', '.join(KINDS)})")
        link = LINK[kind]
        if link not in links:
            raise ValueError(f"a {kind!r} email needs the {link!r} link")
        if one_line(to) != to or "@" not in to:
            raise ValueError(f"not an email address: {to!r}")
        when = dt.datetime.now(dt.UTC) if now is None else now
        subject = header_text(SUBJECT[kind].format(title=masthead.title))
        context = {
            "title": masthead.title,
            "base_url": masthead.base_url,
            "operator_address": masthead.address,
            "recipient_email": to,
            "subject": subject,
            "confirm_url": links.get("confirm", ""),
            "manage_url": links.get("manage", ""),
            "confirm_hours": confirm_hours,
        }
        bodies: dict[str, str] = {}
        for part, url in (("html", str(escape(links[link]))), ("txt", links[link])):
            name = f"{kind}.{part}.j2"
            bodies[part] = body = templates.render(self.env, name, context)
            if url not in body:
                raise TemplateError(
                    name, None, f"the email has no link to follow (print {{{{ {link}_url }}}})"
                )
        material = "\0".join([kind, to.casefold(), links[link], when.isoformat()])
        mid = f"<{hashlib.sha256(material.encode()).hexdigest()[:32]}@{masthead.domain}>"
        msg = EmailMessage(policy=POLICY)
        msg["From"] = masthead.from_header
        msg["To"] = Address(addr_spec=to)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(when.astimezone(dt.UTC))
        msg["Message-ID"] = mid
        # RFC 3834: mail made by a program; vacation responders do not answer it.
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(bodies["txt"], subtype="plain", charset="utf-8", cte="quoted-printable")
        msg.add_alternative(bodies["html"], subtype="html", charset="utf-8", cte="quoted-printable")
        data = msg.as_bytes()
        if masthead.dkim is not None:
            data = masthead.dkim.sign(data)
        email = Email(
            to=to,
            to_name=None,
            subject=subject,
            html=bodies["html"],
            text=bodies["txt"],
            paper_ids=(),
        )
        return Outgoing(
            recipient=to,
            envelope_from=masthead.envelope_from,
            message_id=mid,
            data=data,
            email=email,
        )
