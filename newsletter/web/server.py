"""The web application on uvicorn, in a thread of the ``serve`` process beside the scheduler.

The socket is bound when the server is made, so a port in use is said before anything else
starts. uvicorn runs the h11 protocol with a deadline for each request to arrive
(``protect.deadline_protocol``); the process's open-file limit is raised to its hard limit,
so a thousand idle or half-sent connections neither run it out of descriptors nor hold a
real request back. No connection cap: a cap would let idle connections shut real visitors
out (uvicorn's ``limit_concurrency`` answers 503 over it); the deadline frees them instead.
Access lines come from ``protect.Guard`` (without tokens), never from uvicorn's access log.
Put TLS in front with a reverse proxy (see the README).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading

import uvicorn

from newsletter.web import protect
from newsletter.web.app import Site, make_app

log = logging.getLogger(__name__)

#: Queued connections the kernel holds before the server accepts them.
BACKLOG = 2048
#: A request's header block, at most (h11's default is 16 KiB).
MAX_HEADERS = 16 * 1024


class WebServer:
    def __init__(self, host: str, port: int, site: Site) -> None:
        self.fd_limit = protect.raise_fd_limit()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(BACKLOG)
        except OSError:
            self.sock.close()
            raise
        server = site.config().server
        config = uvicorn.Config(
            make_app(site),
            http=protect.deadline_protocol(server.request_timeout),
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=True,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=5,
            backlog=BACKLOG,
            h11_max_incomplete_event_size=MAX_HEADERS,
        )
        self.uvicorn = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="newsletter-web", daemon=True)
        self.started = threading.Event()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def _run(self) -> None:
        async def serve() -> None:
            task = asyncio.create_task(self.uvicorn.serve(sockets=[self.sock]))
            while not self.uvicorn.started and not task.done():
                await asyncio.sleep(0.01)
            self.started.set()
            await task

        try:
            asyncio.run(serve())
        finally:
            self.started.set()

    def start(self) -> None:
        self.thread.start()
        self.started.wait(30)
        log.debug("serve.web fd_limit=%d", self.fd_limit)

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout=30)
        self.sock.close()
