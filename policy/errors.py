"""The root of Airlock's exception tree, and the errors policy itself raises.

Every error a client can see carries its PostgreSQL SQLSTATE and its MySQL error
number as class attributes, so a single function per protocol turns any of them
into an ErrorResponse or an ERR packet. Messages never contain secrets: callers
describe what was wrong with a token or password, never its value.

The root lives here, in a module that imports nothing, so that both lower layers can
derive from it without depending on each other: the wire layer's own errors
(ProtocolViolation, MessageTooLarge, LoginRefused) are in protocols/errors.py, the
gateway's (StatementDenied, HoldTimedOut, ...) in proxy/errors.py. policy/ imports
nothing from protocols/ or proxy/.
"""

from __future__ import annotations


class AirlockError(Exception):
    """Base of every error Airlock reports to a client."""

    sqlstate: str = "XX000"
    mysql_errno: int = 1105  # ER_UNKNOWN_ERROR
    mysql_sqlstate: str = "HY000"
    #: FATAL errors end the session; plain ERRORs leave it usable.
    fatal: bool = False

    def __init__(
        self,
        message: str,
        *,
        detail: str | None = None,
        hint: str | None = None,
        log_detail: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint
        #: For the gateway's own log only, never sent to a client (an upstream's words
        #: may name the service role or its host).
        self.log_detail = log_detail


class AuthenticationFailed(AirlockError):
    """The client's token or password did not verify."""

    sqlstate = "28P01"
    mysql_errno = 1045  # ER_ACCESS_DENIED_ERROR
    mysql_sqlstate = "28000"
    fatal = True
