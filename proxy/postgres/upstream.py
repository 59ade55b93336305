"""Opening the gateway's own connection to a PostgreSQL upstream and logging in.

The gateway logs in with the credentials in its config, never the client's;
only the startup settings the login judged (pg_server) are passed on from the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from protocols.errors import LoginRefused, ProtocolViolation
from protocols.postgres import messages as m
from protocols.postgres.auth import UpstreamLogin
from protocols.postgres.framing import MessageFramer
from proxy.config import UpstreamSettings
from proxy.core.channel import Channel, ConnectionClosed
from proxy.core.tls import upstream_context
from proxy.errors import UpstreamUnavailable

_BACKEND_TYPES = frozenset(m.BACKEND_TYPES)


@dataclass(frozen=True, slots=True)
class UpstreamSession:
    channel: Channel
    login: UpstreamLogin
    #: Bytes the server sent after ReadyForQuery, if it was quick (normally empty).
    leftover: bytes


async def read_message(channel: Channel, framer: MessageFramer) -> bytes:
    """The next whole message, reading from the channel as needed."""
    while (raw := framer.next_message()) is None:
        framer.feed(await channel.read())
    return raw


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def set_role(role: str) -> bytes:
    """The Query that makes `role` the session's current role."""
    return m.Query.build(f"SET ROLE {quote_identifier(role)}").raw


async def connect_upstream(
    upstream: UpstreamSettings,
    parameters: dict[str, str],
    *,
    max_message_bytes: int,
    channel_factory: Callable[[], Channel] = Channel,
    role: str | None = None,
) -> UpstreamSession:
    """Connect, negotiate TLS per sslmode, log in, and SET ROLE `role` when one is given
    (the target's read role); raise UpstreamUnavailable on any failure."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(upstream.connect_timeout_s):
            _, channel = await loop.create_connection(channel_factory, upstream.host, upstream.port)
            try:
                return await _login(channel, upstream, parameters, max_message_bytes, role)
            except BaseException:
                channel.abort()
                raise
    except TimeoutError:
        raise UpstreamUnavailable(
            f"timed out connecting to the upstream at {upstream.host}:{upstream.port}"
        ) from None
    except (OSError, ConnectionClosed) as exc:
        raise UpstreamUnavailable(
            f"could not connect to the upstream at {upstream.host}:{upstream.port}: "
            f"{exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
        ) from None


async def _login(
    channel: Channel,
    upstream: UpstreamSettings,
    parameters: dict[str, str],
    max_message_bytes: int,
    role: str | None,
) -> UpstreamSession:
    context = upstream_context(upstream.sslmode, upstream.sslrootcert)
    if context is not None:
        channel.write(m.SSLRequest().raw)
        answer = await channel.read()
        if answer[:1] == b"S":
            if len(answer) > 1:
                raise ProtocolViolation("upstream sent data before the TLS handshake")
            await channel.start_tls(context, server_side=False, server_hostname=upstream.host)
        elif answer[:1] == b"N":
            if upstream.sslmode not in ("prefer", "allow"):
                raise UpstreamUnavailable(
                    f"upstream does not support TLS and sslmode is {upstream.sslmode}"
                )
            if len(answer) > 1:
                raise ProtocolViolation("upstream sent data after refusing TLS")
        else:
            raise UpstreamUnavailable("upstream answered the SSLRequest with an error")
    startup = {"user": upstream.user, "database": upstream.database or upstream.user, **parameters}
    channel.write(m.StartupMessage.build(startup).raw)
    login = UpstreamLogin(upstream.user, upstream.password)
    framer = MessageFramer(_BACKEND_TYPES, max_message_bytes)
    while login.ready is None:
        raw = await read_message(channel, framer)
        try:
            reply = login.receive(m.decode_backend(raw))
        except LoginRefused as refused:
            raise UpstreamUnavailable(
                refused.message, hint=refused.hint, log_detail=refused.log_detail
            ) from None
        if reply:
            channel.write(reply)
    if role is not None:
        await _enter_role(channel, framer, login, role)
    # Anything after ReadyForQuery (a notification, say) belongs to the relay.
    return UpstreamSession(channel, login, framer.take_buffered())


async def _enter_role(
    channel: Channel, framer: MessageFramer, login: UpstreamLogin, role: str
) -> None:
    """SET ROLE before the client's first statement; what the server reports changed
    (is_superuser) replaces what it announced at login."""
    channel.write(set_role(role))
    while True:
        message = m.decode_backend(await read_message(channel, framer))
        if isinstance(message, m.ErrorResponse):
            raise UpstreamUnavailable(
                f'the gateway could not take the target\'s read role "{role}" upstream',
                hint="the gateway's log has the upstream's reason",
                log_detail=f"{message.code} {message.message}",
            )
        if isinstance(message, m.ParameterStatus):
            login.parameters = [p for p in login.parameters if p.name != message.name]
            login.parameters.append(message)
        elif isinstance(message, m.ReadyForQuery):
            login.ready = message
            return
