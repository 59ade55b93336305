"""The cheapest proxy Python can be: bytes in, bytes out, on uvloop, nothing looked at.

A baseline for the MySQL benchmark: what any single-process Python relay costs on this
machine before it frames, classifies or records anything. Not a product component.

    python benchmarks/tcp_forwarder.py LISTEN_PORT UPSTREAM_HOST UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop


class Side(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Side | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.early.append(data)
            return
        peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


async def start(port: int, host: str, upstream_port: int) -> asyncio.Server:
    """Listen on 127.0.0.1:port (0: any free port) and forward to host:upstream_port."""
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task[None]] = set()

    def accepted() -> Side:
        client = Side()

        async def connect() -> None:
            _, server = await loop.create_connection(Side, host, upstream_port)
            client.peer, server.peer = server, client
            # Either side may have spoken before the two were joined.
            for side, other in ((client, server), (server, client)):
                assert other.transport is not None
                for data in side.early:
                    other.transport.write(data)
                side.early.clear()

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    return await loop.create_server(accepted, "127.0.0.1", port)


async def main(port: int, host: str, upstream_port: int) -> None:
    server = await start(port, host, upstream_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3])))
