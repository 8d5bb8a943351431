"""The fast MIME writer writes the message itself; the email package's parser must read back
what the reference (``mime.ReferenceWriter``, the email package) writes: the same headers,
parts and bodies. The same for a whole composer and its reference path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.headerregistry
import email.message
import email.policy
import re
from collections.abc import Callable
from email.parser import BytesParser

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from newsletter import compose
from newsletter.compose import headers as fields
from newsletter.compose import mime, qp
from newsletter.models import Digest, Email, Outgoing
from tests.digests import (
    HOSTILE_NAME,
    MANAGE_URL,
    MASTHEAD,
    UNSUBSCRIBE_URL,
    elements,
    fixture_digest,
    hostile_digest,
    load_digest,
    named,
    spec,
)

NOW = dt.datetime(2026, 11, 24, 8, 0, tzinfo=dt.UTC)
COMPOSER = compose.Composer(spec(now=NOW))


def write(
    writer: type[mime.Writer] | type[mime.ReferenceWriter],
    mail: Email,
    masthead: compose.Masthead = MASTHEAD,
    **kwargs: object,
) -> Outgoing:
    options = {"unsubscribe_url": UNSUBSCRIBE_URL, "digest_key": "2026-11-24/daily"} | kwargs
    return writer(masthead, NOW).write(mail, **options)  # type: ignore[arg-type]


def both(mail: Email, masthead: compose.Masthead = MASTHEAD) -> tuple[bytes, bytes]:
    fast = write(mime.Writer, mail, masthead)
    reference = write(mime.ReferenceWriter, mail, masthead)
    assert fast.message_id == reference.message_id
    assert (fast.recipient, fast.envelope_from) == (reference.recipient, reference.envelope_from)
    return fast.data, reference.data


def parse(data: bytes) -> email.message.EmailMessage:
    msg = BytesParser(policy=email.policy.default).parsebytes(data)
    assert isinstance(msg, email.message.EmailMessage)
    assert not msg.defects
    return msg


def headers(msg: email.message.Message) -> list[tuple[str, str]]:
    """Name and parsed value of every header; the boundary is random in the reference."""
    return [
        (name, re.sub(r'boundary="[^"]*"', "boundary=B", str(value))) for name, value in msg.items()
    ]


def assert_equivalent(fast: bytes, reference: bytes) -> None:
    a, b = parse(fast), parse(reference)
    assert headers(a) == headers(b)
    assert a.get_content_type() == b.get_content_type() == "multipart/alternative"
    parts_a, parts_b = list(a.iter_parts()), list(b.iter_parts())
    assert len(parts_a) == len(parts_b) == 2
    for pa, pb in zip(parts_a, parts_b, strict=True):
        assert headers(pa) == headers(pb)
        assert not pa.defects
        assert pa.get_content() == pb.get_content()
    # Not just equivalent: the header block is the same bytes, apart from the boundary.
    head_a, head_b = (
        re.sub(rb'boundary="[^"]*"', b"B", m.split(b"\r\n\r\n")[0]) for m in (fast, reference)
    )
    assert head_a == head_b
    assert_wire_safe(fast)


def assert_wire_safe(data: bytes) -> None:
    """CRLF only, short lines, ASCII headers, one line per header field."""
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    head, body = data.split(b"\r\n\r\n", 1)
    head.decode("ascii")  # non-ASCII is encoded (RFC 2047), never raw
    for line in data.split(b"\r\n"):
        assert len(line) <= 998
    for line in body.split(b"\r\n"):
        if not line.startswith(b"--") and b":" not in line[:40]:
            assert len(line) <= 76  # quoted-printable lines


def rendered(digest: Digest, name: str | None) -> Email:
    return COMPOSER.email(
        named(digest, name), unsubscribe_url=UNSUBSCRIBE_URL, manage_url=MANAGE_URL
    )


DIGESTS = {
    "golden": (load_digest(), "Ada"),
    "golden-noname": (load_digest(), None),
    "hostile": (hostile_digest(), HOSTILE_NAME),
    "unicode-name": (hostile_digest(), "Zoë Łukasiewicz-Ünver"),
    "2026-05-08": (
        fixture_digest("hf_api_daily_papers_date_2026-05-08_37papers.json", limit=10),
        "Reader",
    ),
    "2025-10-15-size-guard": (
        fixture_digest("hf_api_daily_papers_date_2025-10-15_26papers_reserialized.json"),
        None,
    ),
}


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_same_message_as_the_email_package(name: str) -> None:
    digest, recipient_name = DIGESTS[name]
    assert_equivalent(*both(rendered(digest, recipient_name)))


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_a_composer_makes_the_message_of_its_reference_path(name: str) -> None:
    """Rendered once, cards cached, inlined by piece, written fast: the same message as the
    one rendered in full with premailer over the whole page and written by the email package."""
    digest, recipient_name = DIGESTS[name]
    digest = named(digest, recipient_name)
    fast = COMPOSER.compose(digest)
    reference = compose.Composer(spec(now=NOW), reference=True).compose(digest)
    assert (fast.recipient, fast.envelope_from, fast.message_id) == (
        reference.recipient,
        reference.envelope_from,
        reference.message_id,
    )
    a, b = parse(fast.data), parse(reference.data)
    assert headers(a) == headers(b)
    text_a, html_a = (p.get_content() for p in a.iter_parts())
    text_b, html_b = (p.get_content() for p in b.iter_parts())
    assert text_a == text_b
    assert elements(html_a) == elements(html_b)
    assert dataclasses.replace(fast.email, html="") == dataclasses.replace(reference.email, html="")
    assert_wire_safe(fast.data)


def test_body_decodes_to_the_rendered_parts() -> None:
    mail = rendered(*DIGESTS["hostile"])
    msg = parse(write(mime.Writer, mail, digest_key="k").data)
    text, html = (p.get_content().replace("\r\n", "\n") for p in msg.iter_parts())

    def lines(s: str) -> str:  # MIME has one line end; a CR inside a title becomes one too
        return s.replace("\r\n", "\n").replace("\r", "\n")

    assert "\r" in mail.html  # the hostile title's CR LF, escaped for HTML but still there
    assert text == lines(mail.text) and html == lines(mail.html)


def test_boundary_is_stable_and_absent_from_the_bodies() -> None:
    mail = rendered(*DIGESTS["2026-05-08"])
    fast, _ = both(mail)
    again, _ = both(mail)
    assert fast == again  # deterministic: same digest, same bytes
    boundary = re.search(rb'boundary="([^"]*)"', fast)
    assert boundary is not None
    assert fast.count(b"--" + boundary.group(1)) == 3  # two parts and the close


def test_masthead_constants_are_not_kept_across_mastheads() -> None:
    other = dataclasses.replace(
        MASTHEAD, from_header="Other <news@example.net>", list_id="o.example.net"
    )
    mail = rendered(*DIGESTS["golden"])
    assert parse(both(mail, other)[0])["From"] == "Other <news@example.net>"
    assert parse(both(mail)[0])["From"] == "Trending Papers <papers@example.org>"


def test_signed_message_is_the_fast_one(tmp_path: object) -> None:
    from pathlib import Path

    import dkim

    from tests.test_compose_mime import dns_for, make_key, signing_config  # DKIM helpers

    folder = Path(str(tmp_path))
    key_path, record = make_key(folder)
    sender = compose.load_masthead(signing_config(folder, key_path.name))
    fast, reference = both(rendered(*DIGESTS["hostile"]), sender)
    assert dkim.verify(fast, dnsfunc=dns_for(record))

    def unsigned(data: bytes) -> bytes:  # the signature covers the boundary, so it differs
        return re.sub(rb"\ADKIM-Signature:.*?\r\n(?=\S)", b"", data, flags=re.S)

    assert unsigned(fast) != fast
    assert_equivalent(unsigned(fast), unsigned(reference))


# --- header safety, for any subject and display name ------------------------------------

header_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120
) | st.sampled_from(
    [
        "",
        " ",
        "Ada",
        "Ada Lovelace",
        "O'Brien",
        '"Quoted" Name',
        "=?utf-8?q?x?=",
        "a=b?c",
        "Name, With Comma",
        "Line\r\nBcc: evil@example.com",
        "=?utf-8?q?=0D=0ABcc:_evil@example.com?=",  # a line break in an encoded word
        "=?utf-8?b?DQpCY2M6IGV2aWxAZXhhbXBsZS5jb20=?=",
        "Zoë",
        "x" * 90,
        "word " * 30,
        "tab\there",
        "trailing ",
    ]
)


def outcome(
    writer: type[mime.Writer] | type[mime.ReferenceWriter], mail: Email
) -> tuple[str, bytes | str]:
    try:
        out = write(writer, mail, digest_key="k")
    except Exception as e:  # the reference refuses some values; the fast path must too
        return ("error", type(e).__name__)
    return ("ok", out.data)


@given(subject=header_text, name=header_text)
@example(subject="Trending Papers: 3 new papers", name="Eve\r\nBcc: evil@example.com")
def test_headers_match_the_email_package_for_any_value(subject: str, name: str) -> None:
    mail = Email(
        to="reader@example.org",
        to_name=name or None,
        subject=subject,
        html="<p>hi</p>\n",
        text="hi\n",
        paper_ids=("1",),
    )
    fast = outcome(mime.Writer, mail)
    reference = outcome(mime.ReferenceWriter, mail)
    assert fast[0] == reference[0]
    if fast[0] == "error":
        assert fast == reference
        return
    assert isinstance(fast[1], bytes) and isinstance(reference[1], bytes)
    assert_equivalent(fast[1], reference[1])
    for name_value in mime.unfolded_headers(fast[1]):
        assert "\r" not in name_value[1] and "\n" not in name_value[1]
    assert parse(fast[1])["Bcc"] is None


@pytest.mark.parametrize(
    "address",
    ["a..b@example.org", "first.last+tag@example.org", '"q"@example.org', "ü@example.org"],
)
def test_unusual_addresses_match_the_email_package(address: str) -> None:
    mail = dataclasses.replace(rendered(*DIGESTS["golden"]), to=address)
    fast, reference = outcome(mime.Writer, mail), outcome(mime.ReferenceWriter, mail)
    assert fast[0] == reference[0]
    if fast[0] == "ok":
        assert isinstance(fast[1], bytes) and isinstance(reference[1], bytes)
        assert headers(parse(fast[1])) == headers(parse(reference[1]))


# --- quoted-printable bodies ------------------------------------------------------------

body_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=600
) | st.lists(
    st.sampled_from(["a", " ", "\t", ".", "=", "\n", "\r", "\r\n", "é", "—", "x" * 80, "From "]),
    max_size=60,
).map("".join)


@given(body=body_text)
@example(body="")
@example(body=".\n.\n")
@example(body="ends with spaces   \nand a tab\t")
def test_bodies_decode_like_the_email_package(body: str) -> None:
    mail = Email("reader@example.org", None, "s", body, body, ("1",))
    fast, reference = both(mail)
    a, b = parse(fast), parse(reference)
    for pa, pb in zip(a.iter_parts(), b.iter_parts(), strict=True):
        assert pa.get_content() == pb.get_content()
    assert_wire_safe(fast)


# --- encoding by piece (render_parts) -----------------------------------------------------

piece = st.sampled_from(["", "a", "\n", "ab\ncd", "x\n", "\ny", "  \n", "é—\n=", "t\t", "z" * 90])


@given(parts=st.lists(piece | st.text(max_size=40).map(lambda s: s.replace("\r", "")), max_size=30))
@example(parts=[])
@example(parts=["a\nb", "a\nb"])  # the same piece again: its cached entry
def test_pieces_encode_like_the_whole_body(parts: list[str]) -> None:
    assert qp.Encoder().quoted_printable_parts(parts) == qp.Encoder().quoted_printable(
        "".join(parts)
    )


recipient_value = st.sampled_from(
    ["", "Ada", "a\nb", "\n", "x\n", " ", "=", "é", ".", "\r"]
) | st.text(max_size=90)
pieces_text = piece | st.text(max_size=40).map(lambda s: s.replace("\r", ""))


@given(
    parts=st.lists(st.tuples(pieces_text, st.booleans()), max_size=30),
    recipients=st.lists(
        st.lists(recipient_value, min_size=30, max_size=30), min_size=1, max_size=3
    ),
)
@example(parts=[("a\n", False), ("", True)], recipients=[[""] * 30, ["b"] * 30])
@example(parts=[("", True)], recipients=[[""] * 30, ["x\n"] * 30])
def test_pieces_shared_by_recipients_encode_like_the_whole_body(
    parts: list[tuple[str, bool]], recipients: list[list[str]]
) -> None:
    """A render many recipients share (``qp.Shared``): every recipient's body is the bytes of
    their whole text, the lines without their values encoded once for all."""
    slots = [i for i, (_, slot) in enumerate(parts) if slot]
    shared = qp.Shared(slots)
    encoder = qp.Encoder()
    for values in recipients:
        pieces = qp.Pieces(values[i] if slot else text for i, (text, slot) in enumerate(parts))
        pieces.shared = shared
        text = "".join(pieces)
        assert encoder.body(text, pieces) == qp.Encoder().quoted_printable(text)


@pytest.mark.parametrize("name", sorted(DIGESTS))
def test_message_from_pieces_is_the_same_bytes(name: str) -> None:
    digest, recipient_name = DIGESTS[name]
    digest = named(digest, recipient_name)
    for _ in range(2):  # the second time from the caches
        rendered = COMPOSER.render(digest, unsubscribe_url=UNSUBSCRIBE_URL, manage_url=MANAGE_URL)
        mail = rendered.email
        assert rendered.html_parts is not None and rendered.text_parts is not None
        assert "".join(rendered.html_parts) == mail.html
        assert "".join(rendered.text_parts) == mail.text
        assert mail == COMPOSER.email(
            digest, unsubscribe_url=UNSUBSCRIBE_URL, manage_url=MANAGE_URL
        )
        by_piece = write(
            mime.Writer,
            mail,
            digest_key="k",
            html_parts=rendered.html_parts,
            text_parts=rendered.text_parts,
        )
        assert by_piece.data == write(mime.Writer, mail, digest_key="k").data


url_text = st.lists(
    st.sampled_from(["<", ">", "https://e.org/u/", "a", "=", "?", "=?", "utf-8?q?x?=", " ", "  "])
    | st.sampled_from(['"', "(", ")", "\\", ",", "%41", "é", "\t", "~"]),
    max_size=20,
).map("".join)


@given(value=url_text)
@example(value="<https://e.org/u/x?a=1&b=2>, <mailto:p@e.org?subject=unsubscribe>")
@example(value="<https://e.org/=?utf-8?q?x?=>")
def test_verbatim_headers_match_the_email_package(value: str) -> None:
    policy = fields.POLICY

    def outcome(write: Callable[[], bytes]) -> object:
        try:
            return write()
        except (ValueError, UnicodeError) as e:  # non-ASCII: refused, by both alike
            return type(e)

    expected = outcome(
        lambda: policy.fold_binary(*policy.header_store_parse("List-Unsubscribe", value))
    )
    assert outcome(lambda: fields.verbatim("List-Unsubscribe", value)) == expected


# --- display names in To: the fast encoder against the email package -------------------

name_word = st.text(
    st.sampled_from("aZ09-_'=?!#$%&*+/^`{|}~.,\"():;<>@[]\\éüÖßŁ李δ\u00a0\u3000\u200b\u0301"),
    min_size=1,
    max_size=12,
)
display_names = st.lists(name_word, min_size=1, max_size=6).map(" ".join) | st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40
)
addresses = st.sampled_from(
    ["r@example.org", "first.last+tag@example.org", "x" * 40 + "@example.org", "ü@example.org"]
)


def reference_to(name: str, address: str) -> bytes | str:
    policy = fields.POLICY
    try:
        value = email.headerregistry.Address(display_name=name, addr_spec=address)
        return policy.fold_binary(*policy.header_store_parse("To", value))  # type: ignore[arg-type]
    except Exception as e:
        return type(e).__name__


@given(name=display_names, address=addresses)
@example(name="Jörg Müller", address="r@example.org")
@example(name="José de Sá", address="r@example.org")
@example(name="Ana Müller", address="r@example.org")
@example(name="李小龙", address="r@example.org")
@example(name="Zoë-Ann O'Neil", address="r@example.org")
@example(name="Δημήτρης Παπαδόπουλος Παπαδόπουλος", address="r@example.org")
def test_a_display_name_is_written_as_the_email_package_writes_it(name: str, address: str) -> None:
    name = fields.one_line(name)  # as the writer passes it
    try:
        fast: bytes | str = fields.to_header(name, address)
    except Exception as e:
        fast = type(e).__name__
    assert fast == reference_to(name, address)


def test_common_non_ascii_names_take_the_fast_path() -> None:
    for name in ("Jörg Müller", "José de Sá", "Ana Müller", "李小龙", "Zoë-Ann O'Neil"):
        assert fields.encoded_phrase(name) is not None
    assert fields.encoded_phrase("Ada Lovelace") is None  # plain ASCII: written as is
    assert fields.encoded_phrase("Müller, Jörg") is None  # a comma: quoted by the package
