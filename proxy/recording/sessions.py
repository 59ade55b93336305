"""Finding sessions: the transcripts under a data dir, and a summary of each."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.config import parse_duration
from proxy.recording.format import SESSION_ID, STATEMENT, SUFFIX, client_address, transcripts_dir
from proxy.recording.verifier import Transcript, read_transcript

log = logging.getLogger("airlock.transcript")


@dataclass(frozen=True, slots=True)
class SessionSummary:
    session_id: str
    path: Path
    started_at: float | None
    subject: str | None
    email: str | None
    groups: tuple[str, ...]
    target: str | None
    client: str | None
    statements: int
    #: The last event's time: the end, or as far as an open or cut transcript goes.
    last_at: float | None
    ended_at: float | None
    end_reason: str | None
    sealed: bool
    #: The gateway that shipped it into the shared store (None: read from a data_dir).
    gateway: str | None = None

    def to_json(self) -> dict[str, Any]:
        shipped = {} if self.gateway is None else {"gateway": self.gateway}
        return {
            **shipped,
            "session_id": self.session_id,
            "path": str(self.path),
            "started_at": self.started_at,
            "subject": self.subject,
            "email": self.email,
            "groups": list(self.groups),
            "target": self.target,
            "client": self.client,
            "statements": self.statements,
            "last_at": self.last_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
            "sealed": self.sealed,
        }


def summary_from_row(row: dict[str, Any]) -> SessionSummary:
    """A session as the shared store lists it (store_pg.TranscriptStore.summaries): every
    one there is sealed, so its last event is its end."""
    groups = json.loads(row["groups_json"])
    return SessionSummary(
        session_id=row["session_id"],
        path=Path(row["path"]),
        started_at=row["started_at"],
        subject=row["subject"],
        email=row["email"],
        groups=tuple(g for g in groups if isinstance(g, str)),
        target=row["target"],
        client=row["client"],
        statements=int(row["statements"]),
        last_at=row["last_at"],
        ended_at=row["last_at"] if row["end_reason"] is not None else None,
        end_reason=row["end_reason"],
        sealed=True,
        gateway=row["gateway_id"],
    )


def transcript_paths(data_dir: Path, *, modified_since: float | None = None) -> list[Path]:
    """Every transcript file under data_dir, oldest day first.

    `modified_since` skips files last written before then: a file's events are all
    older than its modification time (they are written after they happen).
    """
    paths = sorted(transcripts_dir(data_dir).glob("*/*" + SUFFIX))
    if modified_since is None:
        return paths
    return [p for p in paths if _mtime(p) >= modified_since]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")  # let the reader say what is wrong with it


def find_transcript(data_dir: Path, session: str) -> Path:
    """The transcript of a session id, a unique prefix of one, or a file path.

    Raises LookupError naming what was searched.
    """
    as_path = Path(session)
    if as_path.suffix == SUFFIX and as_path.is_file():
        return as_path
    directory = transcripts_dir(data_dir)
    if not SESSION_ID.fullmatch(session):
        raise LookupError(f"{session!r} is neither a session id nor a transcript file")
    exact = sorted(directory.glob(f"*/{session}{SUFFIX}"))
    matches = exact or sorted(directory.glob(f"*/{session}*{SUFFIX}"))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LookupError(f"no session {session} under {directory}")
    names = ", ".join(p.name.removesuffix(SUFFIX) for p in matches[:5])
    raise LookupError(f"{session} matches {len(matches)} sessions: {names}")


def summarize(transcript: Transcript) -> SessionSummary:
    start = transcript.start or {}
    identity = start.get("identity")
    identity = identity if isinstance(identity, dict) else {}
    groups = identity.get("groups")
    end = transcript.end
    events = transcript.events
    return SessionSummary(
        session_id=transcript.session_id,
        path=transcript.path,
        started_at=events[0].ts if events else None,
        subject=_str(identity.get("sub")),
        email=_str(identity.get("email")),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        target=_str(start.get("target")),
        client=client_address(start.get("client")),
        statements=sum(1 for e in events if e.kind == STATEMENT),
        last_at=events[-1].ts if events else None,
        ended_at=events[-1].ts if end is not None else None,
        end_reason=_str(end.get("reason")) if end is not None else None,
        sealed=transcript.seal is not None,
    )


def find_sessions(
    data_dir: Path,
    *,
    identity: str | None = None,
    target: str | None = None,
    since: float | None = None,
) -> list[SessionSummary]:
    """Sessions, oldest first, from their start (and end) events.

    `identity` matches the subject or the email (case-insensitively); `since` keeps
    sessions active at or after that time (started then, or still running).
    """
    summaries: list[SessionSummary] = []
    for path in transcript_paths(data_dir, modified_since=since):
        try:
            summary = summarize(read_transcript(path))
        except OSError as error:
            log.warning("%s: %s", path, error.strerror or error)
            continue
        if identity is not None and identity.casefold() not in {
            (summary.subject or "").casefold(),
            (summary.email or "").casefold(),
        }:
            continue
        if target is not None and summary.target != target:
            continue
        if since is not None and (summary.last_at is None or summary.last_at < since):
            continue
        summaries.append(summary)
    summaries.sort(key=lambda s: (s.started_at or 0.0, s.session_id))
    return summaries


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_since(text: str, now: float) -> float:
    """Unix time from an ISO 8601 date or time (UTC unless it says) or a duration ago."""
    stripped = text.strip()
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        pass
    else:
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    if stripped and stripped.replace(".", "", 1).isdigit():
        raise ValueError(
            f"{text!r} needs a unit (e.g. 30m, 24h, 7d) or an ISO 8601 date such as 2025-06-01"
        )
    try:
        return now - parse_duration(stripped)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither an ISO 8601 date or time (2025-06-01, "
            "2025-06-01T18:00Z) nor a duration ago (30m, 24h, 7d)"
        ) from None
