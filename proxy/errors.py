"""The gateway's errors: one flat tree under `AirlockError`.

Every error a client can see carries its PostgreSQL SQLSTATE and its MySQL error
number as class attributes, so one function per protocol turns any of them into a
packet: `proxy.pg_relay.error_message` (an ErrorResponse) and
`proxy.mysql_relay.error_packet` (an ERR packet). Messages never contain secrets:
callers describe what was wrong with a token or password, never its value.

The root and the error policy/ raises itself (`AuthenticationFailed`) are in
policy/errors.py, re-exported here so the gateway imports its tree from one place;
the wire layer's errors (`ProtocolViolation`, `MessageTooLarge`, `LoginRefused`) are
in protocols/errors.py.
"""

from __future__ import annotations

from policy.errors import AirlockError as AirlockError
from policy.errors import AuthenticationFailed as AuthenticationFailed


class IssuerUnavailable(AuthenticationFailed):
    """No key set has ever been fetched, so no token can be verified yet."""

    def __init__(self) -> None:
        super().__init__("identity provider keys unavailable")


class FeatureNotSupported(AirlockError):
    """A protocol feature the gateway refuses (FunctionCall, replication, ...)."""

    sqlstate = "0A000"
    mysql_errno = 1235  # ER_NOT_SUPPORTED_YET
    mysql_sqlstate = "42000"
    fatal = True


class AuthorizationDenied(AirlockError):
    """The client is who it says, but no rule lets it reach this target."""

    sqlstate = "28000"
    mysql_errno = 1045
    mysql_sqlstate = "28000"
    fatal = True


class InsecureTransport(AuthorizationDenied):
    """A token was about to travel in cleartext over a non-TLS connection."""


class UnknownTarget(AirlockError):
    """The database name the client asked for names no configured target."""

    sqlstate = "3D000"
    mysql_errno = 1049  # ER_BAD_DB_ERROR
    mysql_sqlstate = "42000"
    fatal = True


class SessionExpired(AirlockError):
    """The session's time is up: its token expired (and no fresh one was presented), or it
    reached its rule's session_ttl; or the identity's groups changed under it."""

    sqlstate = "57P01"  # admin_shutdown: what drivers treat as "server closed the session"
    mysql_errno = 1927  # ER_CONNECTION_KILLED
    mysql_sqlstate = "70100"
    fatal = True


class RefreshRefused(AirlockError):
    """A fresh token presented for a session was not taken: it did not verify, names
    another subject, or the in-band form was malformed. The session goes on unchanged."""

    sqlstate = "28000"  # invalid_authorization_specification
    mysql_errno = 1045  # ER_ACCESS_DENIED_ERROR
    mysql_sqlstate = "28000"


class UpstreamUnavailable(AirlockError):
    """The gateway could not reach or log in to the target's upstream."""

    sqlstate = "08006"
    mysql_errno = 2013
    mysql_sqlstate = "HY000"
    fatal = True


class RoleNotRestored(AirlockError):
    """The upstream session could not be returned to the target's read role."""

    sqlstate = "XX000"  # internal_error
    mysql_errno = 1105  # ER_UNKNOWN_ERROR
    mysql_sqlstate = "HY000"
    fatal = True


class WriteRoleRefused(AirlockError):
    """The upstream would not take the target's write role for an allowed statement."""

    sqlstate = "XX000"
    mysql_errno = 1105
    mysql_sqlstate = "HY000"


class StatementDenied(AirlockError):
    """A statement was refused by policy or by an approver."""

    sqlstate = "42501"
    mysql_errno = 1142  # ER_TABLEACCESS_DENIED_ERROR
    mysql_sqlstate = "42000"


class DatabaseAccessDenied(StatementDenied):
    """A statement or COM_INIT_DB names a database its target does not expose."""

    mysql_errno = 1044  # ER_DBACCESS_DENIED_ERROR
    mysql_sqlstate = "42000"


class StatementTooLarge(AirlockError):
    """A statement longer than limits.max_statement_bytes: refused, never parsed."""

    sqlstate = "54000"  # program_limit_exceeded
    mysql_errno = 1153  # ER_NET_PACKET_TOO_LARGE
    mysql_sqlstate = "HY000"  # not 08S01: the session stays usable


class QueryCanceled(AirlockError):
    """The client cancelled a statement (which, if it was held, withdraws its request)."""

    sqlstate = "57014"
    mysql_errno = 1317  # ER_QUERY_INTERRUPTED
    mysql_sqlstate = "70100"


class HoldTimedOut(QueryCanceled):
    """A held statement was not decided within hold_timeout."""


class RecordingUnavailable(AirlockError):
    """The session's transcript cannot be written: the gateway refuses the session."""

    sqlstate = "58030"  # io_error
    mysql_errno = 1021  # ER_DISK_FULL
    mysql_sqlstate = "HY000"
    fatal = True


class RecordingFailed(RecordingUnavailable):
    """A session's events can no longer be written: the gateway ends the session rather
    than relay what it cannot record."""

    mysql_errno = 1026  # ER_ERROR_ON_WRITE


class ApprovalStoreUnavailable(AirlockError):
    """A statement needs approval and the approval store (a shared PostgreSQL store)
    cannot be reached: it is refused, never run unapproved. The session stays usable;
    statements that need no approval relay as ever."""

    sqlstate = "58000"  # system_error
    mysql_errno = 1105  # ER_UNKNOWN_ERROR
    mysql_sqlstate = "HY000"


class GatewayShuttingDown(AirlockError):
    """The gateway is stopping: it ends the session."""

    sqlstate = "57P01"
    mysql_errno = 1053  # ER_SERVER_SHUTDOWN
    mysql_sqlstate = "08S01"
    fatal = True


class UnknownSession(AirlockError):
    """KILL named a connection id that is not one of the agent's own sessions."""

    sqlstate = "42704"  # undefined_object
    mysql_errno = 1094  # ER_NO_SUCH_THREAD
    mysql_sqlstate = "HY000"


class TooManyLogins(AirlockError):
    """Too many connections are logging in at once (from one address, or in total)."""

    sqlstate = "53300"  # too_many_connections
    mysql_errno = 1040  # ER_CON_COUNT_ERROR
    mysql_sqlstate = "08004"
    fatal = True


class LoginTimedOut(AirlockError):
    """A connection did not finish logging in within limits.login_timeout."""

    sqlstate = "08006"  # connection_failure
    mysql_errno = 1159  # ER_NET_READ_INTERRUPTED
    mysql_sqlstate = "08S01"
    fatal = True
