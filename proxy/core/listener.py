"""What every protocol's listener does: accept connections, run one session per client,
own background jobs, and close everything cleanly at shutdown.

Logins are bounded here, before any protocol work: a connection over the caps on
pending logins (`limits.max_pending_logins_per_address`, `limits.max_pending_logins`)
is refused at once with the protocol's "too many connections" error, and a login that
has not finished within `limits.login_timeout` is closed with an error saying so.

`PgListener` and `MySqlListener` subclass `Listener` and say how a session is made.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from policy.identity import Identity
from proxy.approvals.credentials import CredentialBook
from proxy.approvals.hub import ApprovalHub
from proxy.config import LoginLimits, Settings
from proxy.core.channel import Channel
from proxy.core.classifying import Classifiers
from proxy.core.metrics import Instruments, StatementCounts, refusal_reason
from proxy.errors import AirlockError, GatewayShuttingDown, TooManyLogins
from proxy.recording.writer import Recorder

log = logging.getLogger("airlock")

CLOSE_TIMEOUT_S = 2.0


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> Identity: ...


class Session(Protocol):
    id: str
    client_side: Channel
    server_side: Channel | None

    async def run(self, login_timeout_s: float, login_finished: Callable[[bool], None]) -> None:
        """Log in within `login_timeout_s`, call `login_finished(timed_out)` once the
        login is over however it went, then relay until the session ends."""

    def end(
        self, reason: str, error: AirlockError | None = None, *, cancel_running: bool = False
    ) -> None: ...

    def uncounted_statements(self) -> StatementCounts: ...

    def drain(self, reason: str) -> None:
        """The gateway drains: a held statement is refused at once (its request withdrawn)."""

    def idle(self) -> bool:
        """Nothing runs upstream, nothing is held or decided, no transaction is open."""


S = TypeVar("S", bound=Session)

#: Why a login was refused or cut short: the labels of airlock_login_refusals_total.
PER_ADDRESS = "per_address"
TOTAL = "total"
TIMEOUT = "timeout"


class PendingLogins:
    """Connections accepted but not yet logged in, counted per source address and in
    total against the configured caps, and the logins refused, by reason."""

    def __init__(self, limits: LoginLimits) -> None:
        self.limits = limits
        self.total = 0
        self.by_address: dict[str, int] = {}
        self.refused: dict[str, int] = {PER_ADDRESS: 0, TOTAL: 0, TIMEOUT: 0}

    def admit(self, address: str) -> TooManyLogins | None:
        """Count a new connection from `address` in; or the error that refuses it."""
        from_address = self.by_address.get(address, 0)
        if from_address >= self.limits.max_pending_per_address:
            self.refused[PER_ADDRESS] += 1
            return TooManyLogins(
                "too many connections from your address are logging in; try again shortly",
                log_detail=f"{from_address} pending from {address}",
            )
        if self.total >= self.limits.max_pending:
            self.refused[TOTAL] += 1
            return TooManyLogins(
                "too many connections are logging in to the gateway; try again shortly",
                log_detail=f"{self.total} pending",
            )
        self.total += 1
        self.by_address[address] = from_address + 1
        return None

    def finished(self, address: str, *, timed_out: bool = False) -> None:
        """An admitted connection's login is over (logged in, refused, closed, timed out)."""
        self.total -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]
        if timed_out:
            self.refused[TIMEOUT] += 1


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
        instruments: Instruments | None = None,
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
        #: The same, by (target, class, decision label), of sessions that ended (the
        #: live ones count their own: `Session.uncounted_statements`).
        self.statement_counts: StatementCounts = StatementCounts()
        #: Logins refused after the session began, by reason (`metrics.refusal_reason`).
        self.login_refusals: Counter[str] = Counter()
        #: Histograms the sessions observe.
        self.instruments = instruments if instruments is not None else Instruments()
        #: SIGTERM: held statements are refused, a new hold is refused at once.
        self.draining = False
        #: Every open socket of this listener: clients, upstreams, side connections.
        self.channels: set[Channel] = set()
        #: Connections still logging in, against limits.max_pending_logins(_per_address).
        self.pending_logins = PendingLogins(settings.logins)
        self._tasks: set[asyncio.Task[None]] = set()
        self._logging_in: set[asyncio.Task[Any]] = set()  # tasks of sessions not yet relaying
        self._server: asyncio.Server | None = None
        self.init_protocol_state()

    def init_protocol_state(self) -> None:
        """Set up what only this protocol's listener keeps (cancel keys, connection ids)."""

    def new_session(self, channel: Channel) -> S:
        raise NotImplementedError

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> asyncio.Server:
        """Listen on host:port; `reuse_port`: share it with the other workers (SO_REUSEPORT:
        the kernel spreads new connections over them)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, host, port, reuse_address=True, reuse_port=reuse_port or None
        )
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
        address = channel.remote_address
        host = address[0] if address is not None else ""
        refusal = self.pending_logins.admit(host)
        if refusal is not None:
            # Refused before reading a byte: the cheapest answer, as a server that cannot
            # take the connection gives it (PostgreSQL: an ErrorResponse where the client
            # expects its first reply; MySQL: an ERR in place of the greeting).
            log.warning(
                "connection from %s refused: %s (%s)", host, refusal.message, refusal.log_detail
            )
            session.end(f"login refused: {refusal.message}", refusal)
            await session.client_side.wait_closed(CLOSE_TIMEOUT_S)
            return

        task = asyncio.current_task()
        if task is not None:
            self._logging_in.add(task)

        def login_finished(timed_out: bool) -> None:
            self.pending_logins.finished(host, timed_out=timed_out)
            self._logging_in.discard(task)

        try:
            await session.run(self.settings.logins.timeout_s, login_finished)
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

    def login_refused(self, error: AirlockError) -> None:
        self.login_refusals[refusal_reason(error)] += 1

    def stop_accepting(self) -> None:
        """Close the listening socket: sessions that are in go on."""
        if self._server is not None:
            self._server.close()

    def drain(self) -> None:
        """SIGTERM: no new connections; a held statement in any session is refused."""
        self.draining = True
        self.stop_accepting()
        for session in list(self.sessions):
            session.drain("the gateway is shutting down")

    def end_idle(self, reason: str, error: AirlockError) -> None:
        """End the sessions with nothing running: a drain's sessions go as they finish."""
        for session in [s for s in self.sessions if s.idle()]:
            session.end(reason, error)

    async def close(
        self,
        reason: str = "gateway shutting down",
        error: AirlockError | None = None,
        *,
        cancel_running: bool = False,
    ) -> None:
        """End every session with `error` (the gateway is shutting down, by default);
        `cancel_running`: stop the statements they still run upstream."""
        self.stop_accepting()
        for task in list(self._logging_in):
            task.cancel()  # sessions still logging in
        if error is None:
            error = GatewayShuttingDown("the gateway is shutting down")
        for session in list(self.sessions):
            session.end(reason, error, cancel_running=cancel_running)
        if self._tasks:
            # The sessions' tasks end as their sockets close; the upstream cancels they
            # spawned take a round trip to the server.
            await asyncio.wait(self._tasks, timeout=5.0)
        for task in list(self._tasks):
            task.cancel()
        # Sockets still closing (a TLS close takes a round trip) get a moment, then an abort.
        await asyncio.gather(*(c.wait_closed(CLOSE_TIMEOUT_S) for c in list(self.channels)))
        if self._server is not None:
            await self._server.wait_closed()
