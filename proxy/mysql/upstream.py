"""Opening the gateway's own connection to a MySQL or MariaDB upstream and logging in.

The gateway logs in with the credentials in its config, never the client's, and
with the capabilities the client agreed with the gateway (so the command phase
is the same on both legs and can be relayed verbatim). mysql_native_password,
caching_sha2_password (fast path, and full authentication over TLS or by RSA
key exchange) and, over TLS only, mysql_clear_password.

A target with read and write roles logs in without a database (its account has no
privileges of its own, so the server would refuse one), takes the read role with
`SET ROLE`, and only then enters the database with COM_INIT_DB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from protocols.errors import ProtocolViolation
from protocols.mysql import auth
from protocols.mysql.messages import (
    AuthMoreData,
    AuthSwitchRequest,
    Capability,
    ErrPacket,
    HandshakeResponse41,
    HandshakeV10,
    OkPacket,
    ServerStatus,
    SslRequest,
)
from protocols.mysql.packets import Packet, PacketReader, frame, read_lenenc_bytes
from protocols.mysql.responses import ResponseTracker
from proxy.config import UpstreamSettings
from proxy.core.channel import Channel, ConnectionClosed
from proxy.core.tls import upstream_context
from proxy.errors import UpstreamUnavailable
from proxy.mysql.relay import set_role

log = logging.getLogger("airlock.mysql")

#: Capabilities that shape the command phase: the upstream must grant each the client has.
COMMAND_PHASE = (
    Capability.PROTOCOL_41
    | Capability.DEPRECATE_EOF
    | Capability.MULTI_STATEMENTS
    | Capability.MULTI_RESULTS
    | Capability.PS_MULTI_RESULTS
    | Capability.TRANSACTIONS
)
_MAX_LOGIN_PACKET = 64 * 1024
#: sql_mode flags under which the gateway's lexer would read statements otherwise than
#: the server: a session that starts with one of them is refused.
UNSAFE_SQL_MODES = frozenset({"ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "ANSI"})


@dataclass(frozen=True, slots=True)
class UpstreamSession:
    channel: Channel
    handshake: HandshakeV10
    status_flags: int
    #: Bytes the server sent after the login's last answer (normally empty).
    leftover: bytes


class PacketStream:
    """Whole packets from a channel, during login (before the relay takes over)."""

    def __init__(self, channel: Channel, max_payload_bytes: int = _MAX_LOGIN_PACKET) -> None:
        self.channel = channel
        self.reader = PacketReader(max_payload_bytes)
        self.pending: list[Packet] = []

    async def packet(self) -> Packet:
        while not self.pending:
            self.pending.extend(self.reader.feed(await self.channel.read()))
        return self.pending.pop(0)

    @property
    def has_unread(self) -> bool:
        return bool(self.pending) or self.reader.buffered > 0 or self.channel.has_unread

    def rest(self) -> bytes:
        if self.pending:
            raise ProtocolViolation("the upstream sent packets after its login answer")
        return self.reader.take_rest()


async def connect_upstream(
    upstream: UpstreamSettings,
    *,
    capabilities: int,
    character_set: int,
    channel_factory: Callable[[], Channel] = Channel,
    role: str | None = None,
) -> UpstreamSession:
    """Connect, negotiate TLS per sslmode, log in, check the session's sql_mode, and
    when `role` is given (the target's read role) SET ROLE it before entering the
    database; raise UpstreamUnavailable on any failure (its log_detail has the server's
    words)."""
    loop = asyncio.get_running_loop()
    where = f"{upstream.host}:{upstream.port}"
    try:
        async with asyncio.timeout(upstream.connect_timeout_s):
            _, channel = await loop.create_connection(channel_factory, upstream.host, upstream.port)
            try:
                return await _login(channel, upstream, capabilities, character_set, role)
            except BaseException:
                channel.abort()
                raise
    except TimeoutError:
        raise UpstreamUnavailable(f"timed out connecting to the upstream at {where}") from None
    except (OSError, ConnectionClosed) as exc:
        raise UpstreamUnavailable(
            f"could not reach the upstream at {where}", log_detail=str(exc)
        ) from None
    except ProtocolViolation as exc:
        raise UpstreamUnavailable(
            "the upstream spoke out of turn during login", log_detail=exc.message
        ) from None


async def upstream_version(
    upstream: UpstreamSettings, channel_factory: Callable[[], Channel] = Channel
) -> str:
    """The server version in the upstream's greeting, read without logging in (the
    connection is closed after it); UpstreamUnavailable when there is none."""
    loop = asyncio.get_running_loop()
    where = f"{upstream.host}:{upstream.port}"
    channel: Channel | None = None
    try:
        async with asyncio.timeout(upstream.connect_timeout_s):
            _, channel = await loop.create_connection(channel_factory, upstream.host, upstream.port)
            greeting = await PacketStream(channel).packet()
        if greeting.payload[:1] == b"\xff":
            raise UpstreamUnavailable("the upstream refused the connection")
        return HandshakeV10.parse(greeting.payload).server_version
    except TimeoutError:
        raise UpstreamUnavailable(f"timed out connecting to the upstream at {where}") from None
    except (OSError, ConnectionClosed, ProtocolViolation) as exc:
        raise UpstreamUnavailable(f"could not read the greeting of {where}: {exc}") from None
    finally:
        if channel is not None:
            channel.abort()


async def _login(
    channel: Channel,
    upstream: UpstreamSettings,
    capabilities: int,
    character_set: int,
    role: str | None,
) -> UpstreamSession:
    reader = PacketStream(channel)
    greeting = await reader.packet()
    if greeting.payload[:1] == b"\xff":
        error = ErrPacket.parse(greeting.payload)
        raise UpstreamUnavailable("the upstream refused the connection", log_detail=error.message)
    handshake = HandshakeV10.parse(greeting.payload)
    missing = capabilities & COMMAND_PHASE & ~handshake.capabilities
    if missing:
        raise UpstreamUnavailable(
            "the upstream does not support what the client asked for",
            log_detail=f"missing capabilities {Capability(missing)!r}",
        )
    # LONG_PASSWORD is MariaDB's CLIENT_MYSQL: set, no MariaDB extended capability (such as
    # metadata caching or progress reports, which change where answers end) is negotiated.
    flags = (capabilities & handshake.capabilities) | Capability.PROTOCOL_41
    flags |= Capability.LONG_PASSWORD
    flags |= Capability.SECURE_CONNECTION | Capability.PLUGIN_AUTH
    flags |= Capability.PLUGIN_AUTH_LENENC_CLIENT_DATA & handshake.capabilities
    flags &= ~(Capability.LOCAL_FILES | Capability.COMPRESS | Capability.CONNECT_ATTRS)
    flags &= ~(Capability.SSL | Capability.QUERY_ATTRIBUTES | Capability.SESSION_TRACK)
    if upstream.database and role is None:
        flags |= Capability.CONNECT_WITH_DB
    else:
        flags &= ~Capability.CONNECT_WITH_DB
    sequence = greeting.last_sequence_id + 1
    tls = False
    server_tls = bool(handshake.capabilities & Capability.SSL)
    if upstream.sslmode != "disable" and (server_tls or upstream.sslmode != "prefer"):
        if not server_tls:
            raise UpstreamUnavailable(
                f"the upstream does not offer TLS (sslmode={upstream.sslmode})"
            )
        flags |= Capability.SSL
        request = SslRequest(int(flags), 16 * 1024 * 1024, character_set)
        channel.write(frame(request.build(), sequence))
        sequence += 1
        context = upstream_context(upstream.sslmode, upstream.sslrootcert)
        assert context is not None  # every sslmode but disable has one
        await channel.start_tls(context, server_side=False, server_hostname=upstream.host)
        tls = True
    password = (upstream.password or "").encode()
    plugin = handshake.auth_plugin_name or "mysql_native_password"
    nonce = handshake.auth_data
    response = HandshakeResponse41(
        capabilities=int(flags),
        max_packet_size=16 * 1024 * 1024,
        character_set=character_set,
        username=upstream.user,
        auth_response=_scramble(plugin, password, nonce, tls),
        database=(upstream.database or None) if role is None else None,
        auth_plugin_name=plugin,
        connect_attributes={},
    )
    channel.write(frame(response.build(), sequence & 0xFF))
    while True:
        answer = await reader.packet()
        sequence = answer.last_sequence_id + 1
        first = answer.payload[:1]
        if first == b"\x00":
            ok = OkPacket.parse(answer.payload, int(flags))
            break
        if first == b"\xff":
            error = ErrPacket.parse(answer.payload)
            raise UpstreamUnavailable(
                "the upstream refused the gateway's login", log_detail=error.message
            )
        if first == b"\xfe":
            switch = AuthSwitchRequest.parse(answer.payload)
            plugin, nonce = switch.plugin_name, switch.auth_data.rstrip(b"\0") or nonce
            channel.write(frame(_scramble(plugin, password, nonce, tls), sequence & 0xFF))
            continue
        if first == b"\x01" and plugin == "caching_sha2_password":
            more = AuthMoreData.parse(answer.payload).data
            if more == auth.FAST_AUTH_OK:
                continue  # the OK follows
            if more == auth.PERFORM_FULL_AUTH:
                if tls:
                    channel.write(frame(password + b"\0", sequence & 0xFF))
                else:
                    channel.write(frame(auth.REQUEST_PUBLIC_KEY, sequence & 0xFF))
                    key = await reader.packet()
                    pem = AuthMoreData.parse(key.payload).data
                    encrypted = auth.rsa_encrypt_password(password, nonce, pem)
                    channel.write(frame(encrypted, (key.last_sequence_id + 1) & 0xFF))
                continue
        raise ProtocolViolation(f"unexpected login packet {first!r} from the upstream")
    session = UpstreamSession(channel, handshake, ok.status_flags, b"")
    await _check_sql_mode(reader, int(flags))
    if role is not None:
        await _enter_role(reader, int(flags), role, upstream.database)
    return UpstreamSession(channel, handshake, session.status_flags, reader.rest())


async def _command(reader: PacketStream, capabilities: int, raw: bytes) -> ResponseTracker:
    """Send one command of the gateway's own and read its whole answer."""
    tracker = ResponseTracker(raw[4], capabilities)
    reader.channel.write(raw)
    while not tracker.feed((await reader.packet()).payload):
        pass
    return tracker


async def _enter_role(
    reader: PacketStream, capabilities: int, role: str, database: str | None
) -> None:
    """SET ROLE the read role, then enter the database (COM_INIT_DB), before the
    client's first command."""
    taken = await _command(reader, capabilities, set_role(role))
    if taken.error is not None:
        raise UpstreamUnavailable(
            f'the gateway could not take the target\'s read role "{role}" upstream',
            hint="the gateway's log has the upstream's reason",
            log_detail=f"{taken.error.code} {taken.error.message}",
        )
    if database:
        entered = await _command(reader, capabilities, frame(b"\x02" + database.encode(), 0))
        if entered.error is not None:
            raise UpstreamUnavailable(
                f'the gateway could not enter the target\'s database under the read role "{role}"',
                hint="the gateway's log has the upstream's reason",
                log_detail=f"{entered.error.code} {entered.error.message}",
            )


def _scramble(plugin: str, password: bytes, nonce: bytes, tls: bool) -> bytes:
    nonce = nonce[:20]
    if plugin == "mysql_native_password":
        return auth.native_password(password, nonce)
    if plugin == "caching_sha2_password":
        return auth.caching_sha2(password, nonce)
    if plugin == "mysql_clear_password":
        if not tls:
            raise UpstreamUnavailable(
                "the upstream asked for the password in cleartext without TLS; refused"
            )
        return password + b"\0"
    raise UpstreamUnavailable(f"the upstream asked for an unsupported auth plugin {plugin!r}")


async def _check_sql_mode(reader: PacketStream, capabilities: int) -> None:
    """Refuse an upstream whose sessions start in a mode the gateway cannot lex."""
    rows: list[bytes] = []
    tracker = ResponseTracker(0x03, capabilities, on_row=rows.append)
    reader.channel.write(frame(b"\x03SELECT @@SESSION.sql_mode", 0))
    while not tracker.feed((await reader.packet()).payload):
        pass
    if tracker.error is not None or len(rows) != 1:
        raise UpstreamUnavailable(
            "could not read the upstream session's sql_mode",
            log_detail=tracker.error.message if tracker.error else None,
        )
    value, _ = read_lenenc_bytes(rows[0], 0)
    modes = set((value or b"").decode(errors="replace").upper().split(","))
    unsafe = modes & UNSAFE_SQL_MODES
    if unsafe or tracker.status_flags & ServerStatus.NO_BACKSLASH_ESCAPES:
        raise UpstreamUnavailable(
            "the upstream's sql_mode changes how statements are lexed; "
            "the gateway cannot classify them",
            log_detail=f"sql_mode has {', '.join(sorted(unsafe)) or 'NO_BACKSLASH_ESCAPES'}",
        )


async def kill_query(
    upstream: UpstreamSettings, thread_id: int, *, connection: bool, role: str | None = None
) -> None:
    """Run KILL [QUERY] thread_id on a connection of its own (the session's own
    connection is busy with the query), under the target's read role when it has one.
    Failures are logged, not raised."""
    try:
        session = await connect_upstream(
            upstream,
            capabilities=int(COMMAND_PHASE & ~Capability.MULTI_STATEMENTS),
            character_set=45,
            role=role,
        )
    except UpstreamUnavailable as exc:
        log.warning("could not connect to kill upstream thread %d: %s", thread_id, exc.message)
        return
    channel = session.channel
    try:
        kind = "" if connection else "QUERY "
        channel.write(frame(f"\x03KILL {kind}{thread_id}".encode(), 0))
        reader = PacketStream(channel)
        reader.reader.feed(session.leftover)
        async with asyncio.timeout(5.0):
            answer = await reader.packet()
        if answer.payload[:1] == b"\xff":
            log.warning(
                "KILL of upstream thread %d failed: %s",
                thread_id,
                ErrPacket.parse(answer.payload).message,
            )
    except (OSError, ConnectionClosed, TimeoutError, ProtocolViolation) as exc:
        log.warning("KILL of upstream thread %d failed: %s", thread_id, exc)
    finally:
        channel.write(frame(b"\x01", 0))  # COM_QUIT
        channel.close()
