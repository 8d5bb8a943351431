"""A real HTTP server on 127.0.0.1 for tests: routes answer with fixtures or faults."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to stall before answering (timeouts)
    truncate: bool = False  # announce the full length, send half, close
    # A body sent piece by piece, its end marked by closing the connection (no length):
    # an endless or huge answer, or a trickle with ``chunk_delay`` seconds between pieces.
    chunks: Iterable[bytes] | None = None
    chunk_delay: float = 0.0


Handler = Callable[[Request], Reply]


def in_turn(*replies: Reply) -> Handler:
    """A handler answering with ``replies`` one after the other, then repeating the last."""
    queue = list(replies)
    lock = threading.Lock()

    def handler(req: Request) -> Reply:
        with lock:
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


class FixtureServer:
    """Routes by path; every request is recorded in ``requests`` for assertions."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.requests: list[Request] = []
        self.chunks_sent = 0  # pieces of ``Reply.chunks`` written before the client hung up
        server = self

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                req = Request("GET", parts.path, query, dict(self.headers))
                server.requests.append(req)
                handler = server.routes.get(parts.path)
                reply = handler(req) if handler else Reply(404, b"not found")
                if reply.delay:
                    threading.Event().wait(reply.delay)
                if reply.chunks is not None:
                    self._stream(reply)
                    return
                try:
                    self.send_response(reply.status)
                    body = reply.body
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2] if reply.truncate else body)
                    if reply.truncate:
                        self.close_connection = True
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, reply: Reply) -> None:
                self.close_connection = True
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    for chunk in reply.chunks or ():
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        server.chunks_sent += 1
                        if reply.chunk_delay:
                            time.sleep(reply.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, at every test's end.
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FixtureServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
