"""One side of a proxied connection: an asyncio.Protocol with two modes.

During the handshake the session awaits bytes (`read`), which keeps login code
linear. Once relaying, bytes go straight to a callback from `data_received`
with no task switch, which is what makes the relay fast. Flow control is
paired: when a channel's outgoing buffer fills, its peer stops reading, so a
slow client never makes the gateway buffer a whole result set. The one
exception is a client whose statement is held for approval: it is read
regardless (`watch_for_close`), so that its close is seen at once; what it
sends then waits in the session's own bounded buffer, not in the peer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from typing import cast

DataCallback = Callable[[bytes], None]
ClosedCallback = Callable[[BaseException | None], None]


class ConnectionClosed(Exception):
    """The peer closed the connection while a message was awaited."""


class Channel(asyncio.Protocol):
    def __init__(
        self,
        on_connection_made: Callable[[Channel], None] | None = None,
        *,
        registry: set[Channel] | None = None,
    ) -> None:
        self._on_connection_made = on_connection_made
        #: The owner's set of open channels: in it from connection_made to connection_lost,
        #: so a shutdown can wait for every socket, TLS closes included.
        self._registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer: Channel | None = None
        self._inbox = bytearray()
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._close_exc: BaseException | None = None
        self._on_data: DataCallback | None = None
        self._on_closed: ClosedCallback | None = None
        self._pause_reasons: set[str] = set()
        self._watching = False  # read even while paused (see watch_for_close)
        self.is_tls = False
        self.remote_address: tuple[str, int] | None = None
        self._lost: asyncio.Future[None] | None = None

    # --- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._lost = asyncio.get_running_loop().create_future()
        if self._registry is not None:
            self._registry.add(self)
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
        address = transport.get_extra_info("peername")
        if isinstance(address, tuple) and len(address) >= 2:
            self.remote_address = (str(address[0]), int(address[1]))
        if self._on_connection_made is not None:
            self._on_connection_made(self)

    def data_received(self, data: bytes) -> None:
        if self._on_data is not None:
            self._on_data(data)
            return
        self._inbox += data
        self._wake()

    def eof_received(self) -> bool:
        self._mark_closed(None)
        return False  # close our side too: a half-open PostgreSQL/MySQL session is useless

    def connection_lost(self, exc: Exception | None) -> None:
        self._mark_closed(exc)
        if self._registry is not None:
            self._registry.discard(self)
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause_reading("peer buffer full")

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume_reading("peer buffer full")

    # --- handshake mode

    async def read(self) -> bytes:
        """Bytes received so far, waiting for some if there are none."""
        while not self._inbox:
            if self._closed:
                raise ConnectionClosed("connection closed by peer")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        received = bytes(self._inbox)
        self._inbox.clear()
        return received

    @property
    def has_unread(self) -> bool:
        return bool(self._inbox)

    async def start_tls(
        self,
        context: ssl.SSLContext,
        *,
        server_side: bool,
        server_hostname: str | None = None,
        received: bytes | None = None,
    ) -> None:
        """Switch to TLS. `received`: bytes the peer already sent as its first TLS bytes.
        A MySQL client sends its ClientHello right after its SSLRequest, without waiting
        for an answer, so login code may have read the start of the handshake; those
        bytes (and any still in the inbox) go to the TLS layer before anything else."""
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        upgrading = loop.start_tls(
            self.transport,
            self,
            context,
            server_side=server_side,
            server_hostname=server_hostname,
            ssl_handshake_timeout=30.0,
        )
        if received is None:
            # Awaited at once: start_tls takes the transport over before the loop turns,
            # so no byte of the peer's handshake can reach this protocol instead.
            transport = await upgrading
        else:
            self.transport.pause_reading()  # nothing more reaches the inbox from here on
            upgrade = loop.create_task(upgrading)
            # One turn of the loop runs start_tls up to its handshake wait, which has
            # queued the TLS protocol's connection_made and the transport's resume; the
            # early bytes are fed after those and before any new read from the socket.
            await asyncio.sleep(0)
            loop.call_soon(self._feed_tls, received)
            transport = await upgrade
        self.transport = cast(asyncio.Transport, transport)
        self.is_tls = True

    def _feed_tls(self, received: bytes) -> None:
        assert self.transport is not None
        data = received + bytes(self._inbox)
        self._inbox.clear()
        protocol = cast(asyncio.BufferedProtocol, self.transport.get_protocol())
        view = memoryview(data)
        while view:
            buffer = memoryview(protocol.get_buffer(len(view)))
            size = min(len(buffer), len(view))
            buffer[:size] = view[:size]
            protocol.buffer_updated(size)
            view = view[size:]

    # --- relay mode

    def start_relay(self, on_data: DataCallback, on_closed: ClosedCallback) -> None:
        """Hand every further byte to on_data; bytes already read are delivered first."""
        self._on_data = on_data
        self._on_closed = on_closed
        # The relay's hot path: the loop calls data_received for every read, so point it
        # straight at the consumer rather than through one more Python frame. uvloop
        # caches the bound method when the protocol is set, hence set_protocol again.
        self.data_received = on_data  # type: ignore[method-assign, assignment]
        if self.transport is not None:
            self.transport.set_protocol(self)
        if self._inbox:
            pending = bytes(self._inbox)
            self._inbox.clear()
            on_data(pending)
        if self._closed:
            on_closed(self._close_exc)

    def write(self, raw: bytes) -> None:
        # A transport can close under us (a reset during the TLS handshake) before
        # connection_lost reaches this channel: writing then is dropped, not an error.
        transport = self.transport
        if transport is not None and not self._closed and not transport.is_closing():
            transport.write(raw)

    def pause_reading(self, reason: str) -> None:
        """Stop reading until every reason given here has been withdrawn."""
        if self.transport is None or self._closed:
            return
        if not self._pause_reasons and not self._watching:
            self.transport.pause_reading()
        self._pause_reasons.add(reason)

    def resume_reading(self, reason: str) -> None:
        if self.transport is None or self._closed or reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if not self._pause_reasons and not self._watching:
            self.transport.resume_reading()

    def watch_for_close(self, watching: bool) -> None:
        """While `watching`, read even when paused: the peer's close must be seen at once
        (a statement held for approval never runs for a client that has gone), and the
        caller bounds what it buffers meanwhile. Pauses given meanwhile apply after."""
        if self.transport is None or self._closed or watching == self._watching:
            return
        self._watching = watching
        if self._pause_reasons:
            if watching:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    async def wait_closed(self, timeout_s: float) -> None:
        """Wait until the transport is really gone (a TLS close takes a round trip);
        abort it if that takes longer than timeout_s."""
        if self._lost is None or self._lost.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._lost), timeout_s)
        except TimeoutError:
            self.abort()
            # abort() reports connection_lost on a later loop iteration
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._lost), 1.0)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- internals

    def _mark_closed(self, exc: BaseException | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._close_exc = exc
        self._wake()
        if self._on_closed is not None:
            self._on_closed(exc)

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)
