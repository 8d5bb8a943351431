"""An aiosmtpd server that accepts and discards every message: ``python -m bench.sink PORT``.

Runs until its stdin closes (the benchmark runs it as a child process), then prints how many
messages and bytes it accepted as JSON (with ``--sizes``, also the size of each message).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from aiosmtpd.controller import Controller


class Discard:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.sizes: list[int] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages += 1
        self.bytes += len(envelope.content)
        self.sizes.append(len(envelope.content))
        return "250 2.0.0 Discarded"


def main() -> None:
    handler = Discard()
    controller = Controller(handler, hostname="127.0.0.1", port=int(sys.argv[1]))
    controller.start()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes it
    controller.stop()
    result: dict[str, Any] = {"messages": handler.messages, "bytes": handler.bytes}
    if "--sizes" in sys.argv[2:]:
        result["sizes"] = handler.sizes
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
