"""Authentication exchanges, sans-I/O: the gateway as a client of the upstream
(trust, cleartext, MD5, SCRAM-SHA-256) and as a SCRAM-SHA-256 server.

https://www.postgresql.org/docs/current/sasl-authentication.html
As a client, SCRAM is scramp's and this module only moves its messages in and out
of PostgreSQL's Authentication* / SASL* envelopes; as a server, the exchange is
written out here (see ScramServerExchange), with scramp making the stored keys.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import scramp

from policy.errors import AuthenticationFailed
from protocols.errors import LoginRefused, ProtocolViolation
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
            raise LoginRefused(
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
                raise LoginRefused(
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
                raise LoginRefused(f"upstream SCRAM exchange failed: {exc}") from None
            return m.SASLInitialResponse.build(SCRAM_SHA_256, first).raw
        if isinstance(message, m.AuthenticationSASLContinue):
            scram = self._need_scram()
            try:
                scram.set_server_first(message.data.decode())
                return m.SASLResponse.build(scram.get_client_final().encode()).raw
            except scramp.ScramException as exc:
                raise LoginRefused(f"upstream SCRAM exchange failed: {exc}") from None
        if isinstance(message, m.AuthenticationSASLFinal):
            scram = self._need_scram()
            try:
                scram.set_server_final(message.data.decode())
            except scramp.ScramException:
                # The server could not prove it knows the password: not our upstream.
                raise LoginRefused("upstream failed SCRAM server verification") from None
            self._scram = None
            return b""
        if isinstance(message, m.AuthenticationOther):
            raise LoginRefused(f"upstream asks for unsupported authentication {message.code}")
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
            raise LoginRefused("upstream asks for a password and none is configured")
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


def _server_nonce() -> str:
    return base64.b64encode(secrets.token_bytes(18)).decode()


@functools.cache
def _stand_in_auth_info() -> ScramAuthInfo:
    """Stored keys for no password at all, made once: an unknown user's exchange runs to
    its end (and fails) without a PBKDF2 on the event loop for every attempt."""
    return make_scram_auth_info(secrets.token_urlsafe(32))


class ScramServerExchange:
    """The gateway as SCRAM-SHA-256 server (RFC 5802 / 7677), for gateway-minted
    credentials.

    `start()` gives the AuthenticationSASL message; feed the client's first 'p'
    to `client_first` and its second to `client_final`. `client_final` raises
    AuthenticationFailed on a wrong password and returns the AuthenticationSASLFinal
    message on success; AuthenticationOk is the caller's to send when the session is
    ready.

    Written out here rather than with scramp's server, which refuses the empty SCRAM
    user name every libpq client sends (PostgreSQL takes the startup packet's user).
    Channel binding is not offered: a client may send `n` or `y`, never `p=`.
    """

    def __init__(self, lookup: Callable[[str], ScramAuthInfo | None], user: str) -> None:
        self._user = user
        info = lookup(user)
        # An unknown user runs the exchange against stand-in keys and fails at its end,
        # as a wrong password does.
        self._known = info is not None
        self._info = info if info is not None else _stand_in_auth_info()
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    @staticmethod
    def start() -> bytes:
        return m.AuthenticationSASL.build((SCRAM_SHA_256,)).raw

    def client_first(self, raw: bytes) -> bytes:
        initial = m.decode_sasl_initial(raw)
        if initial.mechanism != SCRAM_SHA_256 or initial.data is None:
            raise AuthenticationFailed("unsupported SASL mechanism")
        malformed = AuthenticationFailed("malformed SCRAM client-first message")
        try:
            text = initial.data.decode("utf-8")
        except UnicodeDecodeError:
            raise malformed from None
        # gs2-header = cbind-flag "," [authzid] "," ; then n=user,r=nonce[,extensions]
        flag, _, rest = text.partition(",")
        authzid, comma, bare = rest.partition(",")
        if flag.startswith("p="):
            raise AuthenticationFailed("SCRAM channel binding is not offered by the gateway")
        if flag not in ("n", "y") or authzid or not comma:
            raise malformed
        attributes = bare.split(",")
        if (
            len(attributes) < 2
            or not attributes[0].startswith("n=")
            or not attributes[1].startswith("r=")
            or len(attributes[1]) < 3
            or any(a.startswith("m=") for a in attributes)  # a mandatory extension
        ):
            raise malformed
        salt, _stored_key, _server_key, iterations = self._info
        self._gs2_header = text[: len(text) - len(bare)]
        self._client_first_bare = bare
        self._nonce = attributes[1][2:] + _server_nonce()
        self._server_first = f"r={self._nonce},s={base64.b64encode(salt).decode()},i={iterations}"
        return m.AuthenticationSASLContinue.build(self._server_first.encode()).raw

    def client_final(self, raw: bytes) -> bytes:
        if not self._nonce:
            raise ProtocolViolation("SCRAM client-final before client-first")
        refused = AuthenticationFailed(f'password authentication failed for user "{self._user}"')
        try:
            text = m.decode_sasl_response(raw).data.decode("utf-8")
        except UnicodeDecodeError:
            raise refused from None
        without_proof, comma, proof_attribute = text.rpartition(",")
        attributes = without_proof.split(",")
        binding = "c=" + base64.b64encode(self._gs2_header.encode()).decode()
        if (
            not comma
            or not proof_attribute.startswith("p=")
            or len(attributes) < 2
            or attributes[0] != binding
            or attributes[1] != "r=" + self._nonce
        ):
            raise refused
        try:
            proof = base64.b64decode(proof_attribute[2:], validate=True)
        except ValueError:
            raise refused from None
        _salt, stored_key, server_key, _iterations = self._info
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(stored_key, auth_message, "sha256")
        if len(proof) != len(signature):
            raise refused
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key):
            raise refused
        if not self._known:
            raise refused
        server_signature = hmac.digest(server_key, auth_message, "sha256")
        return m.AuthenticationSASLFinal.build(b"v=" + base64.b64encode(server_signature)).raw
