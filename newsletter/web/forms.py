"""Request bodies: read within a limit, parsed by hand (urlencoded, and multipart for RFC 8058
one-click), and the form token (CSRF) that every form but the one-click POST carries.
"""

from __future__ import annotations

import email
import email.policy
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
