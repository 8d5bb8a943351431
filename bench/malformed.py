"""Issue 12's malformed-paper case: one bad paper on one day, then a send on each day after.

    .venv/bin/python -m bench.malformed [--days 14] [--code PATH]

A real HTTP server on 127.0.0.1 answers like the Hugging Face API: 2026-05-08 is the saved
37-paper capture with one paper's ``githubStars`` made ``"1.2k"``, each later day a small
fresh list. ``newsletter send --date D`` runs in a child process for that day and each of the
following ``--days`` days, against an aiosmtpd server, three subscribers. Prints, per day, the
exit code and the digests the SMTP server received. ``--code`` runs another checkout's
``newsletter`` package (say a worktree of main) with this checkout's test servers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.httpserver import FixtureServer, Reply, Request
from tests.smtpserver import SmtpServer
from tests.test_fetch_failures import BAD_DAY, capture, later_list, make_config


def lists(days: int) -> dict[str, bytes]:
    """The API's answer per date: the bad day, then ``days`` days of fresh papers."""
    bad = capture(BAD_DAY)
    bad[0]["paper"]["githubStars"] = "1.2k"
    by_day: dict[dt.date, object] = {BAD_DAY: bad}
    for n in range(1, days + 1):
        day = BAD_DAY + dt.timedelta(days=n)
        by_day[day] = later_list(day)
    return {day.isoformat(): json.dumps(items).encode() for day, items in by_day.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=14, help="days after the bad one")
    parser.add_argument("--code", type=Path, help="a checkout whose newsletter package runs")
    args = parser.parse_args()
    by_day = lists(args.days)

    def api(req: Request) -> Reply:
        return Reply(200, by_day.get(req.query.get("date", ""), b"[]"))

    env = dict(os.environ, NEWSLETTER_SECRET="a-bench-signing-key-of-at-least-32-bytes")
    if args.code:
        env["PYTHONPATH"] = str(args.code.resolve())
    with (
        tempfile.TemporaryDirectory() as tmp,
        FixtureServer() as server,
        SmtpServer() as smtp,
    ):
        server.routes["/api/daily_papers"] = api
        cfg = make_config(Path(tmp), server.url, smtp.port)
        print(f"{'day':<12} exit  digests")
        for n in range(args.days + 1):
            day = BAD_DAY + dt.timedelta(days=n)
            before = len(smtp.received)
            done = subprocess.run(
                [sys.executable, "-m", "newsletter", "send", "-c", str(cfg), "--date", str(day)],
                capture_output=True,
                text=True,
                env=env,
                cwd=tmp,  # -m puts the working folder first on the path
                timeout=300,
                check=False,
            )
            note = "  (the bad day)" if n == 0 else ""
            print(f"{day}   {done.returncode:>2}  {len(smtp.received) - before:>7}{note}")


if __name__ == "__main__":
    main()
