"""Authentication exchanges, sans-I/O: the gateway as a client of the upstream
(trust, cleartext, MD5, SCRAM-SHA-256) and as a SCRAM-SHA-256 server.

https://www.postgresql.org/docs/current/sasl-authentication.html
SCRAM itself is scramp's; this module only moves its messages in and out of
PostgreSQL's Authentication* / SASL* envelopes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import scramp

from protocols.errors import AuthenticationFailed, ProtocolViolation, UpstreamUnavailable
from protocols.postgres import messages as m

SCRAM_SHA_256 = "SCRAM-SHA-256"


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """PostgreSQL's MD5 response: 'md5' + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode(), usedforsecurity=False).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt, usedforsecurity=False).hexdigest().encode()


@dataclass
class UpstreamLogin:
    """The client half of a startup: from StartupMessage sent to ReadyForQuery received.

    Feed each backend message to `receive`; it returns the bytes to send back
    (possibly none). When `ready` is set, the upstream session is usable and
    `parameters` and `backend_key` hold what the server announced.
    """

    user: str
    password: str | None = field(repr=False)
    parameters: list[m.ParameterStatus] = field(default_factory=list)
    backend_key: m.BackendKeyData | None = None
    ready: m.ReadyForQuery | None = None
    notices: list[m.NoticeResponse] = field(default_factory=list)
    _scram: scramp.ScramClient | None = field(default=None, repr=False)
    _authenticated: bool = False

    def receive(self, message: m.BackendMessage) -> bytes:
        if isinstance(message, m.ErrorResponse):
            # The upstream's own words name the gateway's service role: they go to the
            # gateway's log, not to the agent.
            raise UpstreamUnavailable(
                "the gateway could not log in to the upstream",
                hint="the gateway's log has the upstream's reason",
                log_detail=f"{message.code} {message.message}",
            )
        if self._authenticated:
            return self._after_auth(message)
        if isinstance(message, m.AuthenticationOk):
            if self._scram is not None:
                raise ProtocolViolation("upstream skipped SASL final message")
            self._authenticated = True
            return b""
        if isinstance(message, m.AuthenticationCleartextPassword):
            return m.PasswordMessage.build(self._need_password().encode()).raw
        if isinstance(message, m.AuthenticationMD5Password):
            return m.PasswordMessage.build(
                md5_password(self.user, self._need_password(), message.salt)
            ).raw
        if isinstance(message, m.AuthenticationSASL):
            if SCRAM_SHA_256 not in message.mechanisms:
                raise UpstreamUnavailable(
                    f"upstream offers no supported SASL mechanism ({', '.join(message.mechanisms)})"
                )
            # Channel binding (-PLUS) would need the upstream's certificate hash; the
            # TLS session to the upstream already authenticates it when sslmode says so.
            try:
                # PostgreSQL ignores the SCRAM username (the startup user counts); scramp
                # wants one.
                self._scram = scramp.ScramClient([SCRAM_SHA_256], self.user, self._need_password())
                first = self._scram.get_client_first().encode()
            except scramp.ScramException as exc:
                raise UpstreamUnavailable(f"upstream SCRAM exchange failed: {exc}") from None
            return m.SASLInitialResponse.build(SCRAM_SHA_256, first).raw
        if isinstance(message, m.AuthenticationSASLContinue):
            scram = self._need_scram()
            try:
                scram.set_server_first(message.data.decode())
                return m.SASLResponse.build(scram.get_client_final().encode()).raw
            except scramp.ScramException as exc:
                raise UpstreamUnavailable(f"upstream SCRAM exchange failed: {exc}") from None
        if isinstance(message, m.AuthenticationSASLFinal):
            scram = self._need_scram()
            try:
                scram.set_server_final(message.data.decode())
            except scramp.ScramException:
                # The server could not prove it knows the password: not our upstream.
                raise UpstreamUnavailable("upstream failed SCRAM server verification") from None
            self._scram = None
            return b""
        if isinstance(message, m.AuthenticationOther):
            raise UpstreamUnavailable(
                f"upstream asks for unsupported authentication {message.code}"
            )
        if isinstance(message, m.NegotiateProtocolVersion):
            return b""  # we ask for 3.0 and send no _pq_ options, so this only informs
        if isinstance(message, m.NoticeResponse):
            self.notices.append(message)
            return b""
        raise ProtocolViolation(f"unexpected {type(message).__name__} during upstream login")

    def _after_auth(self, message: m.BackendMessage) -> bytes:
        if isinstance(message, m.ParameterStatus):
            self.parameters.append(message)
        elif isinstance(message, m.BackendKeyData):
            self.backend_key = message
        elif isinstance(message, m.ReadyForQuery):
            self.ready = message
        elif isinstance(message, m.NoticeResponse):
            self.notices.append(message)
        else:
            raise ProtocolViolation(f"unexpected {type(message).__name__} after upstream login")
        return b""

    def _need_password(self) -> str:
        if self.password is None:
            raise UpstreamUnavailable("upstream asks for a password and none is configured")
        return self.password

    def _need_scram(self) -> scramp.ScramClient:
        if self._scram is None:
            raise ProtocolViolation("SASL message outside a SASL exchange")
        return self._scram


# --- server side

#: Stored SCRAM credentials: (salt, stored_key, server_key, iterations), as scramp makes them.
ScramAuthInfo = tuple[bytes, bytes, bytes, int]


def make_scram_auth_info(password: str) -> ScramAuthInfo:
    """What a server stores for a SCRAM user; the password itself is not kept."""
    salt, stored_key, server_key, iterations = scramp.ScramMechanism(SCRAM_SHA_256).make_auth_info(
        password
    )
    return salt, stored_key, server_key, iterations


class ScramServerExchange:
    """The gateway as SCRAM-SHA-256 server (for gateway-minted credentials).

    `start()` gives the AuthenticationSASL message; feed the client's first 'p'
    to `client_first` and its second to `client_final`. `client_final` raises
    AuthenticationFailed on a wrong password and returns the SASLFinal and
    AuthenticationOk bytes on success.
    """

    def __init__(self, lookup: Callable[[str], ScramAuthInfo | None], user: str) -> None:
        self._user = user
        self._unknown_user = False

        def auth_fn(_username: str) -> ScramAuthInfo:
            # PostgreSQL clients send an empty SCRAM username; the startup user counts.
            info = lookup(user)
            if info is None:
                # Run the exchange with a random verifier so an unknown user looks
                # like a wrong password, not a different failure.
                self._unknown_user = True
                return make_scram_auth_info(hashlib.sha256(user.encode()).hexdigest() + "!")
            return info

        self._server = scramp.ScramMechanism(SCRAM_SHA_256).make_server(auth_fn)

    @staticmethod
    def start() -> bytes:
        return m.AuthenticationSASL.build((SCRAM_SHA_256,)).raw

    def client_first(self, raw: bytes) -> bytes:
        initial = m.decode_sasl_initial(raw)
        if initial.mechanism != SCRAM_SHA_256 or initial.data is None:
            raise AuthenticationFailed("unsupported SASL mechanism")
        try:
            self._server.set_client_first(initial.data.decode())
        except (scramp.ScramException, UnicodeDecodeError):
            raise AuthenticationFailed("malformed SCRAM client-first message") from None
        return m.AuthenticationSASLContinue.build(self._server.get_server_first().encode()).raw

    def client_final(self, raw: bytes) -> bytes:
        response = m.decode_sasl_response(raw)
        try:
            self._server.set_client_final(response.data.decode())
        except (scramp.ScramException, UnicodeDecodeError):
            raise AuthenticationFailed(
                f'password authentication failed for user "{self._user}"'
            ) from None
        if self._unknown_user:
            raise AuthenticationFailed(f'password authentication failed for user "{self._user}"')
        final = m.AuthenticationSASLFinal.build(self._server.get_server_final().encode()).raw
        return final + m.AuthenticationOk().raw
