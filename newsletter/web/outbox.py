"""The sign-up emails' queue: a page hands an email to a worker thread and answers at once, so
a sign-up takes as long whether an email goes out or not (no address enumeration by timing),
and a slow mail server never holds a request. The worker sends what has queued up meanwhile
in one batch (one SMTP connection). Full (``SIZE`` waiting): the email is not taken, and the
sign-up is not counted against the address's one email a day.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence

from newsletter.web.site import MailKind

log = logging.getLogger(__name__)

SIZE = 5000
BATCH = 200
Item = tuple[MailKind, str, Mapping[str, str]]
SendBatch = Callable[[Sequence[Item]], None]


class Outbox:
    def __init__(self, send: SendBatch, size: int = SIZE) -> None:
        self.send = send
        self.queue: queue.Queue[Item | None] = queue.Queue(maxsize=size)
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._work, name="newsletter-outbox", daemon=True)
        self.thread.start()

    def put(self, kind: MailKind, to: str, links: Mapping[str, str]) -> bool:
        """Queue an email; False when the queue is full or closed (then it is not taken)."""
        if self.closing.is_set():
            return False
        try:
            self.queue.put_nowait((kind, to, dict(links)))
        except queue.Full:
            log.warning("signup.mail_dropped kind=%s (the outbox is full)", kind)
            return False
        return True

    def _work(self) -> None:
        while True:
            batch: list[Item | None] = [self.queue.get()]
            while len(batch) < BATCH and batch[-1] is not None:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            items = [item for item in batch if item is not None]
            try:
                if items and not self.closing.is_set():
                    self.send(items)
            except Exception:
                log.exception("signup.mail_failed emails=%d", len(items))
            finally:
                for _ in batch:
                    self.queue.task_done()
            if batch[-1] is None:
                return

    def drain(self) -> None:
        """Until every queued email went (or failed)."""
        self.queue.join()

    def close(self, timeout: float = 30) -> None:
        """Stop: what is still queued is not sent (the visitor can sign up again)."""
        self.closing.set()
        while True:
            try:
                self.queue.put(None, timeout=0.1)
                break
            except queue.Full:
                if not self.thread.is_alive():
                    return
        self.thread.join(timeout)
