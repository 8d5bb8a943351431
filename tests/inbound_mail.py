"""Small inbound messages for the tests: a DSN, an ARF complaint, a mailto unsubscribe, an
auto-reply. Written here, by hand, in the shape real mail systems send them."""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText


def dsn(
    to: str,
    recipient: str,
    status: str = "5.1.1",
    diagnostic: str = "smtp; 550 5.1.1 <{r}>: Recipient address rejected: User unknown",
    action: str = "failed",
) -> bytes:
    """An RFC 3464 report from a Postfix-like MTA, sent to ``to`` (the envelope sender)."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    report["To"] = to
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Auto-Submitted"] = "auto-replied"
    report.attach(
        MIMEText(
            f"I'm sorry to have to inform you that your message could not\n"
            f"be delivered to {recipient}.\n"
        )
    )
    status_part = Message()
    status_part.set_type("message/delivery-status")
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Original-Recipient"] = f"rfc822;{recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Diagnostic-Code"] = diagnostic.format(r=recipient)
    status_part.set_payload([per_message, per_recipient])
    report.attach(status_part)
    headers = MIMEText(
        f"From: papers@example.org\nTo: {recipient}\nSubject: Papers\n", "rfc822-headers"
    )
    report.attach(headers)
    return report.as_bytes()


def arf(
    to: str,
    original: bytes,
    *,
    feedback_type: str = "abuse",
    original_rcpt: str | None = None,
) -> bytes:
    """An ARF report (RFC 5965) enclosing ``original`` (as the receiver got it)."""
    from email import message_from_bytes

    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "Feedback Loop <fbl@isp.example.net>"
    report["To"] = to
    report["Subject"] = "FW: Papers"
    report.attach(MIMEText("This is an email abuse report for an email message.\n"))
    fields = MIMEText("", "plain")
    del fields["Content-Type"]
    del fields["MIME-Version"]
    del fields["Content-Transfer-Encoding"]
    lines = [
        f"Feedback-Type: {feedback_type}",
        "User-Agent: SomeGenerator/1.0",
        "Version: 1",
    ]
    if original_rcpt:
        lines.append(f"Original-Rcpt-To: {original_rcpt}")
    feedback = Message()
    feedback.set_type("message/feedback-report")
    feedback.set_payload("\n".join(lines) + "\n")
    report.attach(feedback)
    report.attach(MIMEMessage(message_from_bytes(original)))
    return report.as_bytes()


def plain(to: str, subject: str = "unsubscribe", sender: str = "ada@example.org") -> bytes:
    """A plain message, as a mail client's unsubscribe (or anyone) sends it."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Please remove me.\n")
    return msg.as_bytes()


def auto_reply(to: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "ada@example.org"
    msg["To"] = to
    msg["Subject"] = "Out of office: Papers"
    msg["Auto-Submitted"] = "auto-replied"
    msg.set_content("I am away until Monday.\n")
    return msg.as_bytes()
