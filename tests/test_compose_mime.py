from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from newsletter import compose
from newsletter import config as config_mod
from newsletter.compose import mime
from newsletter.errors import ConfigError
from newsletter.models import Email, Outgoing
from tests.digests import (
    HOSTILE_NAME,
    MASTHEAD,
    NOW,
    UNSUBSCRIBE_URL,
    hostile_digest,
    load_digest,
    named,
    render_email,
)

EXPECTED_HEADERS = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "Precedence",
    "MIME-Version",
    "Content-Type",
]


def rendered(digest_name: str = "golden", name: str | None = "Ada") -> Email:
    digest = hostile_digest() if digest_name == "hostile" else load_digest()
    return render_email(named(digest, name))


def build(mail: Email | None = None, sender: compose.Masthead = MASTHEAD) -> Outgoing:
    return mime.Writer(sender, NOW).write(
        mail or rendered(), unsubscribe_url=UNSUBSCRIBE_URL, digest_key="2026-11-23/daily"
    )


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_headers() -> None:
    out = build()
    msg = parse(out.data)
    assert [name for name, _ in mime.unfolded_headers(out.data)] == EXPECTED_HEADERS
    assert msg["From"] == "Trending Papers <papers@example.org>"
    assert msg["To"] == "Ada <ada@example.org>"
    assert msg["Subject"] == "Trending Papers: 3 new papers for 2026-11-23"
    assert msg["Date"] == "Mon, 23 Nov 2026 08:30:00 +0000"
    assert re.fullmatch(r"<[0-9a-f]{32}@example\.org>", msg["Message-ID"])
    assert msg["Message-ID"] == out.message_id
    assert msg["List-Id"] == "Trending Papers <trending-papers.example.org>"
    assert msg["List-Unsubscribe"] == (
        f"<{UNSUBSCRIBE_URL}>, <mailto:papers@example.org?subject=unsubscribe>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert out.recipient == "ada@example.org"
    assert out.envelope_from == "papers@example.org"


def test_multipart_alternative_text_then_html() -> None:
    mail = rendered()
    msg = parse(build(mail).data)
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    # On the wire, lines end in CRLF.
    assert parts[0].get_content().replace("\r\n", "\n") == mail.text
    assert parts[1].get_content().replace("\r\n", "\n") == mail.html
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_list_unsubscribe_is_one_unencoded_line() -> None:
    raw = build().data.split(b"\r\n\r\n")[0].decode("ascii")
    line = next(x for x in raw.split("\r\n") if x.startswith("List-Unsubscribe:"))
    assert line == (
        f"List-Unsubscribe: <{UNSUBSCRIBE_URL}>, <mailto:papers@example.org?subject=unsubscribe>"
    )
    assert "=?" not in raw.split("List-Unsubscribe")[1]


def test_message_id_changes_with_the_papers() -> None:
    mail = rendered()
    other = Email(mail.to, mail.to_name, mail.subject, mail.html, mail.text, ("1", "2"))
    assert build(mail).message_id == build(mail).message_id
    assert build(mail).message_id != build(other).message_id


def test_envelope_sender_is_the_bounce_address() -> None:
    sender = dataclasses.replace(MASTHEAD, bounce_address="bounces@example.org")
    out = build(sender=sender)
    assert out.envelope_from == "bounces@example.org"
    assert parse(out.data)["From"] == "Trending Papers <papers@example.org>"
    assert "Return-Path" not in parse(out.data)  # the receiving server writes it


def test_hostile_input_keeps_every_header_one_line() -> None:
    mail = rendered("hostile", name=HOSTILE_NAME)
    evil_subject = mail.subject + "\r\nBcc: evil@example.com"
    mail = Email(mail.to, mail.to_name, evil_subject, mail.html, mail.text, mail.paper_ids)
    out = build(mail)
    fields = mime.unfolded_headers(out.data)
    assert [name for name, _ in fields] == EXPECTED_HEADERS
    for name, value in fields:
        assert "\r" not in value and "\n" not in value, name
    msg = parse(out.data)
    assert msg["Bcc"] is None and msg["X-Evil"] is None
    assert msg["To"].addresses[0].addr_spec == "eve@example.org"
    assert msg["To"].addresses[0].display_name == 'Eve "the <b>bold</b>" Bcc: evil@example.com'
    assert msg["Subject"].endswith("Bcc: evil@example.com")  # harmless text inside the subject
    # Every raw header line is short enough for SMTP, and continuation lines are folded.
    head = out.data.split(b"\r\n\r\n")[0].split(b"\r\n")
    assert all(len(line) <= 998 for line in head)
    html = parse(out.data).get_body(("html",))
    assert html is not None and "<script>" not in html.get_content()


# Encoded words that decode to a line break or NUL: the email package writes what it decodes
# (CVE-2024-6923 on Python 3.11.7 and 3.12.1). What each one hides is a second header.
EW_CRLF = "=?utf-8?q?=0D=0ABcc:_evil@attacker.test?="
EW_BASE64 = "=?utf-8?b?DQpCY2M6IGV2aWxAYXR0YWNrZXIudGVzdA==?="  # "\r\nBcc: evil@attacker.test"
EW_NESTED = "=?utf-8?q?=3D=3Futf-8=3Fq=3F=3D0D=3D0ABcc:_evil@attacker.test=3F=3D?="
EW_FOLD = "=?utf-8?q?a=0D=0A_Bcc:_evil@attacker.test?="  # CRLF + space: looks like a fold
EW_NUL = "=?utf-8?q?a=00b?="
MAIL = Email("ada@example.org", "Ada", "Subject", "<p>hi</p>\n", "hi\n", ("1",))


@pytest.mark.parametrize("writer", [mime.Writer, mime.ReferenceWriter])
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", EW_CRLF),
        ("subject", EW_BASE64),
        ("subject", EW_NESTED),
        ("subject", EW_FOLD),
        ("subject", EW_NUL),
        ("subject", "Papers " + EW_CRLF + " today"),
        ("to_name", EW_CRLF),
        ("to_name", EW_BASE64),
        ("to_name", EW_NESTED),
        ("to_name", EW_FOLD),
        ("to_name", EW_NUL),
        ("to_name", "Ada " + EW_CRLF),
        ("title", EW_CRLF.replace(":", "=3A").replace("@", "=40").replace(".", "=2E")),
        ("from_header", f"{EW_NUL} <papers@example.org>"),
        ("from_header", f'"{EW_CRLF}" <papers@example.org>'),
        ("from_header", f"{EW_FOLD} <papers@example.org>"),
        ("unsubscribe_url", f"https://papers.example.org/u/{EW_CRLF}"),
    ],
)
def test_no_value_becomes_a_header_line(field: str, value: str, writer: object) -> None:
    """Whatever a value hides, the message has the same headers, each on its own line(s)."""
    mail, sender, url = MAIL, MASTHEAD, UNSUBSCRIBE_URL
    if field in ("subject", "to_name"):
        mail = dataclasses.replace(mail, **{field: value})
    elif field == "unsubscribe_url":
        url = value
    else:
        sender = dataclasses.replace(sender, **{field: value})
    try:
        out = writer(sender, NOW).write(mail, unsubscribe_url=url, digest_key="k")  # type: ignore[operator]
    except ValueError:  # refused (a From that cannot be written): nothing is sent
        assert field == "from_header"
        return
    head = out.data.split(b"\r\n\r\n")[0]
    assert b"\0" not in head
    for line in head.split(b"\r\n")[1:]:
        assert re.match(rb"[A-Z][A-Za-z-]*: |[ \t]+\S", line), line  # a header, or a fold of one
    assert [name for name, _ in mime.unfolded_headers(out.data)] == EXPECTED_HEADERS
    msg = parse(out.data)
    assert msg["Bcc"] is None
    if field == "unsubscribe_url":  # a URL is written as it is: it holds no encoded word
        assert f"List-Unsubscribe: <{value}>,".encode() in head
        return
    for name, header in msg.items():
        assert not re.search(r"[\r\n\0]", str(header)), name  # not even once decoded


def test_list_id_phrase_falls_back_to_the_label() -> None:
    sender = dataclasses.replace(MASTHEAD, list_id="x.example.org", title='Papers: "Daily"')
    assert parse(build(sender=sender).data)["List-Id"] == "x <x.example.org>"


# --- DKIM -----------------------------------------------------------------------------------


def make_key(tmp_path: Path) -> tuple[Path, bytes]:
    """A throwaway RSA key: the PEM file, and the DNS TXT record of its public half."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path / "dkim.pem"
    path.write_bytes(pem)
    import base64

    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)


def dns_for(record: bytes, name: str = "news._domainkey.example.org."):
    def dnsfunc(qname: bytes, timeout: int = 5) -> bytes | None:
        return record if qname.decode() == name else None

    return dnsfunc


def signing_config(tmp_path: Path, key_file: str, domain: str = "example.org") -> config_mod.Config:
    path = tmp_path / "newsletter.yaml"
    text = f"""\
newsletter:
  title: Trending Papers
  from: "Trending Papers <papers@example.org>"
  dkim:
    key_file: {key_file}
    selector: news
    domain: {domain}
smtp:
  bounce_address: bounces@example.org
topics:
  t:
    keywords: [x]
subscribers:
  - email: ada@example.org
    topics: [t]
"""
    path.write_text(text, encoding="utf-8")
    return config_mod.load(path)


def test_dkim_signature_verifies(tmp_path: Path) -> None:
    key_path, record = make_key(tmp_path)
    sender = compose.load_masthead(signing_config(tmp_path, key_path.name))
    assert sender.envelope_from == "bounces@example.org"
    out = build(sender=sender)
    assert out.data.startswith(b"DKIM-Signature: ")
    assert dkim.verify(out.data, dnsfunc=dns_for(record))
    fields = dict(mime.unfolded_headers(out.data))
    tags = dict(t.strip().split("=", 1) for t in fields["DKIM-Signature"].split(";") if "=" in t)
    assert tags["d"] == "example.org" and tags["s"] == "news"
    assert tags["c"] == "relaxed/relaxed"
    signed = [h.strip().lower() for h in tags["h"].split(":")]
    assert {"from", "to", "subject", "date", "message-id", "list-id"} <= set(signed)
    assert "list-unsubscribe" in signed and "list-unsubscribe-post" in signed


def test_dkim_breaks_when_list_unsubscribe_is_changed(tmp_path: Path) -> None:
    key_path, record = make_key(tmp_path)
    out = build(sender=compose.load_masthead(signing_config(tmp_path, key_path.name)))
    forged = out.data.replace(b"/unsubscribe/YWRh", b"/unsubscribe/ZZZZ")
    assert forged != out.data
    assert not dkim.verify(forged, dnsfunc=dns_for(record))
    added = out.data.replace(
        b"\r\nList-Id:", b"\r\nList-Unsubscribe-Post: List-Unsubscribe=Evil\r\nList-Id:", 1
    )
    assert not dkim.verify(added, dnsfunc=dns_for(record))
    # A wrong key in DNS does not verify either.
    _, other = make_key(tmp_path / "..")
    assert not dkim.verify(out.data, dnsfunc=dns_for(other))


def test_dkim_key_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"newsletter\.dkim\.key_file: cannot read .*missing\.pem"
    ):
        compose.load_masthead(signing_config(tmp_path, "missing.pem"))
    (tmp_path / "garbage.pem").write_text("not a key", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a usable DKIM private key"):
        compose.load_masthead(signing_config(tmp_path, "garbage.pem"))


def test_dkim_domain_must_match_from(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        signing_config(tmp_path, "k.pem", domain="other.example")
    assert any("does not match the From domain 'example.org'" in p for p in info.value.problems)
    signing_config(tmp_path, "k.pem", domain="EXAMPLE.org")  # case does not matter


def test_bounce_address_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "smtp:\n  bounce_address: not-an-address\ntopics: {t: {keywords: [x]}}\n"
        "subscribers: [{email: a@example.org, topics: [t]}]\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    assert info.value.problems == [
        f"{path}:2: smtp.bounce_address: invalid email address 'not-an-address'"
    ]


def test_without_dkim_nothing_is_signed() -> None:
    assert b"DKIM-Signature" not in build().data
