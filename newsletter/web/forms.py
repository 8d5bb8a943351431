"""Request bodies: read within a limit, parsed by hand (urlencoded, and multipart for RFC 8058
one-click), and the form token (CSRF) that every form but the one-click POST carries.
"""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.requests import ClientDisconnect, Request


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` bytes (then the rest is not read)."""
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > limit):
        return None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return None
    except ClientDisconnect:
        return None
    return bytes(body)


def one_click(content_type: str, body: bytes) -> bool:
    """Whether form data holds ``List-Unsubscribe=One-Click`` (RFC 8058: urlencoded or
    multipart/form-data, the two encodings a form is sent in)."""
    kind = content_type.partition(";")[0].strip().lower()
    if kind == "multipart/form-data":
        head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
        form = email.message_from_bytes(head + body, policy=email.policy.HTTP)
        return any(
            part.get_param("name", header="content-disposition") == "List-Unsubscribe"
            and part.get_payload(decode=True) == b"One-Click"
            for part in form.walk()
            if not part.is_multipart()
        )
    if kind not in ("application/x-www-form-urlencoded", ""):
        return False
    fields = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return "One-Click" in fields.get("List-Unsubscribe", [])


Form = dict[str, list[str]]


def parse_form(content_type: str, body: bytes) -> Form | None:
    """An urlencoded form's fields, or None when it is not one (another encoding, not UTF-8,
    malformed, or more than ``MAX_FIELDS`` fields)."""
    if content_type.partition(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        return None
    try:
        text = body.decode("utf-8")
        fields = parse_qs(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        return None
    return fields


def field(form: Form, name: str) -> str:
    """A field's one value ("" when absent; the first when sent twice)."""
    values = form.get(name)
    return values[0] if values else ""


# -- the form token (CSRF) ----------------------------------------------------------------
#
# Signed double submit: the browser holds a random value in a cookie (SameSite=Strict,
# HttpOnly); every form carries ``time.mac``, the HMAC of the time and that value. A POST is
# accepted when its form token is younger than FORM_TOKEN_HOURS and signs the cookie sent with
# it. Another site can make a browser send the cookie only to a same-site request (Strict) and
# cannot read it to sign: it cannot forge a form. No session is stored anywhere.

MAX_FIELDS = 64
COOKIE = "nl_form"
FORM_FIELD = "form_token"
FORM_TOKEN_HOURS = 24
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def new_cookie_value() -> str:
    return secrets.token_urlsafe(18)


def valid_cookie(value: str | None) -> bool:
    return value is not None and bool(_COOKIE_RE.match(value))


def _form_mac(key: bytes, cookie: str, stamp: int) -> str:
    mac = hmac.new(key, f"form-token:{stamp}:{cookie}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:16]).rstrip(b"=").decode("ascii")


def make_form_token(key: bytes, cookie: str, now: dt.datetime) -> str:
    stamp = int(now.timestamp())
    return f"{stamp}.{_form_mac(key, cookie, stamp)}"


def check_form_token(
    keys: Sequence[bytes], cookie: str | None, token: str, now: dt.datetime
) -> bool:
    """Whether ``token`` is a form token, younger than FORM_TOKEN_HOURS, for ``cookie``."""
    if not valid_cookie(cookie) or len(token) > 100:
        return False
    assert cookie is not None
    stamp_text, _, mac = token.partition(".")
    if not stamp_text.isdigit():
        return False
    stamp = int(stamp_text)
    age = now.timestamp() - stamp
    if not -300 <= age <= FORM_TOKEN_HOURS * 3600:  # a little clock skew between processes
        return False
    return any(
        hmac.compare_digest(_form_mac(key, cookie, stamp).encode(), mac.encode("ascii", "replace"))
        for key in keys
    )
