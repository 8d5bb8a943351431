"""The sign-up emails' queue: a page hands an email to a worker thread and answers at once, so
a sign-up takes as long whether an email goes out or not (no address enumeration by timing),
and a slow mail server never holds a request. Full (``SIZE`` waiting): the email is dropped
and logged; the visitor can sign up again later.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping

from newsletter.web.site import MailKind

log = logging.getLogger(__name__)

SIZE = 1000
Send = Callable[[MailKind, str, Mapping[str, str]], None]


class Outbox:
    def __init__(self, send: Send, size: int = SIZE) -> None:
        self.send = send
        self.queue: queue.Queue[tuple[MailKind, str, Mapping[str, str]] | None] = queue.Queue(
            maxsize=size
        )
        self.thread = threading.Thread(target=self._work, name="newsletter-outbox", daemon=True)
        self.thread.start()

    def put(self, kind: MailKind, to: str, links: Mapping[str, str]) -> bool:
        """Queue an email; False when the queue is full (then it is dropped)."""
        try:
            self.queue.put_nowait((kind, to, dict(links)))
        except queue.Full:
            log.warning("signup.mail_dropped kind=%s (the outbox is full)", kind)
            return False
        return True

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                kind, to, links = item
                try:
                    self.send(kind, to, links)
                except Exception:
                    log.exception("signup.mail_failed kind=%s", kind)
            finally:
                self.queue.task_done()

    def drain(self) -> None:
        """Until every queued email went (or failed)."""
        self.queue.join()

    def close(self, timeout: float = 30) -> None:
        self.queue.put(None)
        self.thread.join(timeout)
