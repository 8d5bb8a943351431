"""What every test server shares: a temp folder, free ports, a readiness poll, log tails, and
a stop that always happens."""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


class ServerError(RuntimeError):
    """A test server did not start (or a command it needs failed); the message carries its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file, or a note that it is missing."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"({path}: {e.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def logs_text(logs: Sequence[Path], lines: int = 40) -> str:
    return "\n".join(f"--- {path} (last {lines} lines)\n{tail(path, lines)}" for path in logs)


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float = 60.0,
    alive: Callable[[], bool] = lambda: True,
    logs: Sequence[Path] = (),
) -> None:
    """Poll ``ready`` until true; raise ServerError with the logs when the time is up or the
    server died (``alive`` false). The bound is a hang guard, not a speed check."""
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        if ready():
            return
        if not alive():
            raise ServerError(f"{what}: the server exited\n{logs_text(logs)}")
        if time.monotonic() > deadline:
            raise ServerError(f"{what}: not ready within {timeout:.0f} s\n{logs_text(logs)}")
        time.sleep(pause)
        pause = min(pause * 2, 0.25)


def run(
    argv: Sequence[str | Path],
    *,
    what: str,
    logs: Sequence[Path] = (),
    timeout: float = 120.0,
    cwd: Path | None = None,
    user: str | None = None,
) -> str:
    """Run a command, return its output; on failure raise ServerError with output and logs.

    ``user``: run as that user (runuser) when we are root; otherwise as ourselves.
    """
    cmd = [str(a) for a in argv]
    if user is not None and os.geteuid() == 0:
        cmd = ["runuser", "-u", user, "--", *cmd]
    try:
        done = subprocess.run(
            cmd,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise ServerError(f"{what}: {cmd[0]} still running after {timeout:.0f} s") from e
    if done.returncode != 0:
        raise ServerError(
            f"{what}: {' '.join(cmd)} exited {done.returncode}\n"
            f"{done.stdout}{done.stderr}{logs_text(logs)}"
        )
    return done.stdout


def start_process(
    argv: Sequence[str | Path], *, output: Path, cwd: Path
) -> subprocess.Popen[bytes]:
    """Start a server in the foreground as our child, leader of its own process group (so
    that stopping it reaches every process it forked), its output appended to ``output``.
    Should the test process die without stopping it (kill -9), the kernel kills the server
    too, unless the server changes its effective user (Postfix's master does; it and
    PostgreSQL then outlive the tests, their folders /tmp/newsletter-* naming them)."""
    with output.open("ab") as out:
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when our parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """Kill a server started by ``start_process`` and everything it forked, at once.

    SIGKILL, not a polite stop: a test server's state goes with its folder, and Postfix and
    Dovecot each spend a second in their SIGTERM handlers.
    """
    with contextlib.suppress(ProcessLookupError):  # gone already, and its group with it
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(grace)
    # The signal reaches the others asynchronously: wait until none runs (nor holds a port).
    wait_until(lambda: not living(proc.pid), what=f"stopping process group {proc.pid}")


def living(group: int) -> list[int]:
    """The processes of a process group that still run (zombies, waiting for init to reap
    them, are not counted)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[2]) == group and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def retry_port_clash(start: Callable[[], None], what: str, attempts: int = 3) -> None:
    """Run ``start`` (which picks its free ports afresh) again when another process took a
    port between choosing and binding it."""
    for attempt in range(attempts):
        try:
            start()
            return
        except ServerError as e:
            if attempt == attempts - 1 or "Address already in use" not in str(e):
                raise
    raise ServerError(f"{what}: no free port after {attempts} tries")


def make_root(prefix: str) -> Path:
    """A fresh temp folder that other users (postgres, dovecot, nobody) may traverse.

    Not pytest's tmp_path: as root that lives under a 0700 folder those users cannot enter.
    """
    root = Path(tempfile.mkdtemp(prefix=f"newsletter-{prefix}-"))
    root.chmod(0o755)
    return root


def remove_root(root: Path) -> None:
    """Remove a server's folder, unless NEWSLETTER_KEEP_SERVERS is set (to read its logs)."""
    if os.environ.get("NEWSLETTER_KEEP_SERVERS"):
        return
    shutil.rmtree(root, ignore_errors=True)


def unprivileged_user() -> tuple[str, int, int]:
    """The user that owns the test mailboxes: ``nobody`` (always there on Debian)."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def which(name: str) -> str | None:
    """A program on PATH or in sbin (not on every PATH)."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return shutil.which(name, path=path)


class Server:
    """A test server in its own temp folder: ``with X() as server:`` starts it, and the end
    of the block (also on an error, also when starting failed) stops it and removes the
    folder. Subclasses fill ``_start`` and, when they run no child process, ``_halt``."""

    name = "server"

    def __init__(self) -> None:
        self.root = make_root(self.name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def logs(self) -> list[Path]:
        """The log files to show when a test fails."""
        return []

    def _start(self) -> None:
        raise NotImplementedError

    def _halt(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def _launch(self, argv: Sequence[str | Path], ports: Sequence[int], output: Path) -> None:
        """Start ``argv`` as our child and wait until it listens on all ``ports``."""
        proc = self.proc = start_process(argv, output=output, cwd=self.root)
        try:
            wait_until(
                lambda: all(port_open(p) for p in ports),
                what=self.name,
                alive=lambda: proc.poll() is None,
                logs=self.logs,
            )
        except BaseException:
            self._halt()
            raise

    def start(self) -> Self:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self._halt()
        finally:
            remove_root(self.root)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
