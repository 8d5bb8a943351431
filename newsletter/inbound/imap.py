"""The bounce mailbox read over IMAP: one pass handles every message in the folder.

    connect, log in, make the processed folder if missing, select the folder
    for each message (by UID): fetch it (not marking it seen)
        handle(raw)                    -> moved to ``processed``, or deleted (``after``)
        handle raised (our failure)    -> left where it is, for the next pass
    expunge, log out

The standard library's ``imaplib``, blocking: ``serve`` runs a pass in its own thread, and
``newsletter inbound --imap`` one pass for cron. A message that fails is reported once per
process (``reported``), not at every poll.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import ssl
from collections.abc import Callable, MutableSet
from dataclasses import dataclass, field

from newsletter.config import ImapSettings
from newsletter.errors import NewsletterError

log = logging.getLogger(__name__)


class ImapError(NewsletterError):
    """The mailbox cannot be read: one line naming the server and what it said."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


@dataclass(slots=True)
class Pass:
    """What one pass did. Made by ``read_mailbox``; read by ``serve`` and ``inbound --imap``."""

    handled: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # message key -> why
    new_failures: list[str] = field(default_factory=list)  # failed and not reported before


def read_mailbox(
    settings: ImapSettings,
    password: str,
    handle: Callable[[bytes], object],
    *,
    reported: MutableSet[str] | None = None,
) -> Pass:
    """One pass over ``settings.folder``; ``handle(raw)`` raising leaves that message there."""
    where = f"imap://{settings.host}:{settings.port_number}/{settings.folder}"
    reported = set() if reported is None else reported
    result = Pass()
    try:
        conn = _connect(settings)
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as e:
        raise ImapError(where, f"cannot connect: {e}") from e
    try:
        try:
            conn.login(settings.username, password)
        except imaplib.IMAP4.error as e:
            raise ImapError(where, f"login as {settings.username} refused: {_said(e)}") from e
        if settings.after == "move":
            _ensure_folder(conn, settings.processed, where)
        typ, data = conn.select(_quoted(settings.folder))
        if typ != "OK":
            raise ImapError(where, f"cannot open the folder: {_said(data)}")
        validity = _uidvalidity(conn)
        typ, data = conn.uid("SEARCH", "UNDELETED")
        if typ != "OK":
            raise ImapError(where, f"cannot list the messages: {_said(data)}")
        uids = [u.decode() for u in data[0].split()] if data and data[0] else []
        can_move = "MOVE" in conn.capabilities
        deleted = False
        for uid in uids:
            key = f"{validity}:{uid}"
            raw = _fetch(conn, uid)
            if raw is None:
                continue  # gone meanwhile (another reader)
            try:
                handle(raw)
            except Exception as e:  # our failure: the message stays for the next pass
                result.failed[key] = str(e) or type(e).__name__
                if key not in reported:
                    reported.add(key)
                    result.new_failures.append(key)
                    log.error("inbound.imap_failed message=%s error=%s", key, e)
                continue
            result.handled += 1
            reported.discard(key)
            deleted |= _done(conn, uid, settings, can_move, where)
        if deleted:
            conn.expunge()
        conn.close()
    except (OSError, imaplib.IMAP4.error, ssl.SSLError) as e:
        raise ImapError(where, f"{type(e).__name__}: {e}") from e
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error, ssl.SSLError):
            conn.logout()
    log.info("inbound.imap_pass handled=%d failed=%d", result.handled, len(result.failed))
    return result


def _connect(settings: ImapSettings) -> imaplib.IMAP4:
    host, port, timeout = settings.host, settings.port_number, settings.timeout
    if settings.security == "tls":
        return imaplib.IMAP4_SSL(
            host, port, ssl_context=ssl.create_default_context(), timeout=timeout
        )
    conn = imaplib.IMAP4(host, port, timeout=timeout)
    if settings.security == "starttls":
        conn.starttls(ssl.create_default_context())
    return conn


def _ensure_folder(conn: imaplib.IMAP4, folder: str, where: str) -> None:
    typ, data = conn.list('""', _quoted(folder))
    if typ == "OK" and any(d for d in data if d):
        return
    typ, data = conn.create(_quoted(folder))
    if typ != "OK" and "ALREADYEXISTS" not in _said(data).upper():
        raise ImapError(where, f"cannot create the folder {folder!r}: {_said(data)}")


def _fetch(conn: imaplib.IMAP4, uid: str) -> bytes | None:
    typ, data = conn.uid("FETCH", uid, "(BODY.PEEK[])")
    if typ != "OK":
        return None
    for item in data:
        if isinstance(item, tuple) and len(item) == 2:
            return bytes(item[1])
    return None


def _done(
    conn: imaplib.IMAP4, uid: str, settings: ImapSettings, can_move: bool, where: str
) -> bool:
    """Move or delete a handled message; True when it was flagged and needs an expunge."""
    if settings.after == "move":
        target = _quoted(settings.processed)
        if can_move:
            typ, data = conn.uid("MOVE", uid, target)
            if typ != "OK":
                raise ImapError(
                    where, f"cannot move a message to {settings.processed}: {_said(data)}"
                )
            return False
        typ, data = conn.uid("COPY", uid, target)
        if typ != "OK":
            raise ImapError(where, f"cannot copy a message to {settings.processed}: {_said(data)}")
    typ, data = conn.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)")
    if typ != "OK":
        raise ImapError(where, f"cannot delete a message: {_said(data)}")
    return True


def _uidvalidity(conn: imaplib.IMAP4) -> str:
    _, data = conn.response("UIDVALIDITY")
    if data and data[0]:
        return data[0].decode() if isinstance(data[0], bytes) else str(data[0])
    return "0"


def _quoted(folder: str) -> str:
    """A folder name as an IMAP quoted string (the config refuses quotes and backslashes)."""
    return f'"{folder}"'


def _said(data: object) -> str:
    """What the server said, as text on one line."""
    if isinstance(data, imaplib.IMAP4.error):
        data = data.args[0] if data.args else ""
    if isinstance(data, list | tuple):
        data = b" ".join(d if isinstance(d, bytes) else str(d).encode() for d in data if d)
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    return " ".join(str(data).split())[:300]
