"""The wire layer's own errors: what protocols/ raises when bytes are not a valid
message, or a login exchange cannot complete.

They derive from the root of Airlock's exception tree, `AirlockError` (in
policy/errors.py, a module with no imports that both lower layers share), so the
gateway turns them into an ErrorResponse or an ERR packet like any other. The
gateway's own errors (a statement denied, a hold timed out, ...) live in
proxy/errors.py; protocols/ imports neither proxy/ nor policy/ beyond that root.
"""

from __future__ import annotations

from policy.errors import AirlockError


class ProtocolViolation(AirlockError):
    """A peer sent bytes that are not a valid message at this point."""

    sqlstate = "08P01"
    mysql_errno = 1835  # ER_MALFORMED_PACKET
    mysql_sqlstate = "HY000"
    fatal = True


class MessageTooLarge(ProtocolViolation):
    """A message announced a length above the configured cap."""

    sqlstate = "54000"
    mysql_errno = 1153  # ER_NET_PACKET_TOO_LARGE
    mysql_sqlstate = "08S01"


class LoginRefused(AirlockError):
    """The upstream refused the gateway's login, or asked for what it cannot do (an
    unsupported method, a password it was not given). The gateway reports it to the
    client as an UpstreamUnavailable."""

    sqlstate = "08006"
    mysql_errno = 2013
    mysql_sqlstate = "HY000"
    fatal = True
