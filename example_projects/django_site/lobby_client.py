#!/usr/bin/env python
"""A terminal client for the example's WebSocket lobby (ws://127.0.0.1:8000/ws/lobby/).

It prints every message it receives, one JSON object a line after the time,
and with ``--every SECONDS`` also sends a numbered text that often::

    python lobby_client.py                          # listen
    python lobby_client.py --every 0.5 --name alice  # talk and listen
    python lobby_client.py --seconds 30              # stop after 30 s

Uses autobahn, which comes with daphne. It exits when the server closes the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

from autobahn.asyncio.websocket import WebSocketClientFactory, WebSocketClientProtocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://127.0.0.1:8000/ws/lobby/")
    parser.add_argument("--every", type=float, default=0.0, help="send a numbered text every SECONDS (default: only listen)")
    parser.add_argument("--name", default="client", help="the name in the texts sent")
    parser.add_argument("--seconds", type=float, default=3600.0, help="stop after SECONDS (default 1 hour)")
    args = parser.parse_args()
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    closed = loop.create_future()

    class LobbyClient(WebSocketClientProtocol):  # type: ignore[misc]
        def onOpen(self) -> None:
            if args.every > 0:
                self.ticking = asyncio.ensure_future(self.tick())

        async def tick(self) -> None:
            n = 0
            while True:
                n += 1
                self.sendMessage(json.dumps({"text": f"{args.name} #{n}"}).encode())
                await asyncio.sleep(args.every)

        def onMessage(self, payload: bytes, is_binary: bool) -> None:
            print(time.strftime("%H:%M:%S"), payload.decode(), flush=True)

        def onClose(self, was_clean: bool, code: Any, reason: Any) -> None:
            print(time.strftime("%H:%M:%S"), json.dumps({"type": "closed", "code": code, "reason": reason}), flush=True)
            if not closed.done():
                closed.set_result(None)

    factory = WebSocketClientFactory(args.url)
    factory.protocol = LobbyClient
    where = urlsplit(args.url)
    await loop.create_connection(factory, where.hostname, where.port or 80)
    try:
        await asyncio.wait_for(closed, args.seconds)
    except TimeoutError:
        pass


if __name__ == "__main__":
    main()
