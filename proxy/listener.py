"""What every protocol's listener does: accept connections, run one session per client,
own background jobs, and close everything cleanly at shutdown.

`PgListener` and `MySqlListener` subclass `Listener` and say how a session is made.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from policy.identity import Identity
from protocols.errors import AirlockError, GatewayShuttingDown
from proxy.approvals import ApprovalHub
from proxy.channel import Channel
from proxy.classifying import Classifiers
from proxy.config import Settings
from proxy.credentials import CredentialBook
from proxy.transcript import Recorder

log = logging.getLogger("airlock")

CLOSE_TIMEOUT_S = 2.0


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


class Session(Protocol):
    id: str
    client_side: Channel
    server_side: Channel | None

    async def run(self) -> None: ...

    def end(self, reason: str, error: AirlockError | None = None) -> None: ...

    def uncounted_statements(self) -> int: ...


S = TypeVar("S", bound=Session)


class Listener(Generic[S]):
    def __init__(
        self,
        settings: Settings,
        verifier: TokenVerifier,
        tls_context: ssl.SSLContext | None,
        *,
        hub: ApprovalHub,
        classifiers: Classifiers,
        recorder: Recorder | None = None,
        credentials: CredentialBook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        #: Gateway-minted user names and passwords (POST /api/v1/credentials).
        self.credentials = credentials if credentials is not None else CredentialBook(clock)
        self.recorder = recorder
        self.verifier = verifier
        self.tls_context = tls_context
        self.hub = hub
        self.classifiers = classifiers
        self.clock = clock
        #: Sessions relaying now (logged in, both sides up).
        self.sessions: set[S] = set()
        #: Statements decided in every session since the listener started.
        self.statements = 0
        #: Every open socket of this listener: clients, upstreams, side connections.
        self.channels: set[Channel] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.init_protocol_state()

    def init_protocol_state(self) -> None:
        """Set up what only this protocol's listener keeps (cancel keys, connection ids)."""

    def new_session(self, channel: Channel) -> S:
        raise NotImplementedError

    async def start(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, host, port, reuse_address=True)
        return self._server

    def _accept(self) -> Channel:
        return Channel(on_connection_made=self._connected, registry=self.channels)

    def new_channel(self) -> Channel:
        return Channel(registry=self.channels)

    def _connected(self, channel: Channel) -> None:
        self.spawn(self._handle(channel))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a background job the listener owns (and waits for at shutdown)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, channel: Channel) -> None:
        session = self.new_session(channel)
        try:
            await session.run()
        except Exception:
            # A bug in one session must not take the listener down; it is logged, loudly.
            log.exception("session %s failed", session.id)
            session.end("internal error", AirlockError("internal gateway error"))
        finally:
            session.end(
                "gateway shutting down", GatewayShuttingDown("the gateway is shutting down")
            )
            # The task (which the listener waits for at shutdown) lasts until both sockets
            # are really closed: a TLS close needs the loop for one more round trip.
            await session.client_side.wait_closed(CLOSE_TIMEOUT_S)
            if session.server_side is not None:
                await session.server_side.wait_closed(CLOSE_TIMEOUT_S)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for session in list(self.sessions):
            session.end(
                "gateway shutting down", GatewayShuttingDown("the gateway is shutting down")
            )
        for task in list(self._tasks):
            task.cancel()  # sessions still logging in
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5.0)
        # Sockets still closing (a TLS close takes a round trip) get a moment, then an abort.
        await asyncio.gather(*(c.wait_closed(CLOSE_TIMEOUT_S) for c in list(self.channels)))
        if self._server is not None:
            await self._server.wait_closed()
