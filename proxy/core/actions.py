"""What a sans-I/O relay asks its session to do, for either protocol.

Each relay adds its own hold action (PostgreSQL's `HoldMessage`, MySQL's `HoldCommand`).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.errors import AirlockError


@dataclass(frozen=True, slots=True)
class SendToServer:
    raw: bytes


@dataclass(frozen=True, slots=True)
class SendToClient:
    raw: bytes


@dataclass(frozen=True, slots=True)
class EndSession:
    """Close both sides; `error` (if any) goes to the client first: a PostgreSQL FATAL,
    or a MySQL ERR numbered `sequence` when the relay knows what the client waits for."""

    reason: str
    error: AirlockError | None = None
    sequence: int | None = None
