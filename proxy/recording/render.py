"""Transcripts for people and machines: replay lines, and events as JSON (replay
--json, export, the API). Values from agents are shown escaped (proxy/rendering.py)."""

from __future__ import annotations

import base64
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from proxy.recording.format import (
    APPROVAL_DECIDED,
    APPROVAL_REQUESTED,
    FIRST_VERSION,
    RESULT,
    SESSION_END,
    SESSION_START,
    STATEMENT,
    TOKEN_REFRESHED,
    Result,
    TokenRefreshed,
    client_address,
)
from proxy.recording.format import is_count as _is_int
from proxy.recording.parameters import decoded_parameters
from proxy.recording.sessions import transcript_paths
from proxy.recording.verifier import Event, Seal, Transcript, read_transcript
from proxy.rendering import format_age, format_parameter, one_line_sql

log = logging.getLogger("airlock.transcript")


def _utc(ts: object) -> datetime | None:
    """The time a unix timestamp names; None for one no calendar holds (a damaged file)."""
    if not isinstance(ts, float | int) or isinstance(ts, bool):
        return None
    try:
        return datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _clock_time(ts: float) -> str:
    moment = _utc(ts)
    return moment.strftime("%H:%M:%S.%f")[:-3] if moment else f"{ts!r:>12}"


def _moment(ts: object) -> str:
    moment = _utc(ts)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else _line(ts)


def _line(value: object) -> str:
    """A value as one line of printable text: control and bidi characters escaped."""
    if value is None:
        return "?"
    text = value if isinstance(value, str) else json.dumps(_jsonable(value))
    return one_line_sql(text, sys.maxsize)


def _duration(seconds: object) -> str | None:
    if not isinstance(seconds, float | int) or isinstance(seconds, bool):
        return None
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


_INDENT = " " * len("00:00:00.000  ")


def _first(data: Mapping[str, Any], *keys: str) -> Any:
    """The first of `keys` that `data` holds a value for (writers name some fields twice)."""
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _number(value: object) -> float | None:
    if isinstance(value, float | int) and not isinstance(value, bool):
        return float(value)
    return None


def _client(data: Mapping[str, Any]) -> list[str]:
    """Where the session came from: "from addr:port", TLS, the application's name."""
    client = data.get("client")
    tls = data.get("tls")
    details = [f"from {_line(client_address(client))}"]
    if isinstance(client, dict) and tls is None:
        tls = client.get("tls")
    if isinstance(tls, dict):
        details.append(" ".join(_line(v) for v in (tls.get("version"), tls.get("cipher")) if v))
    elif tls is True:
        details.append("TLS")
    elif tls is None or tls is False:
        details.append("no TLS")
    else:
        details.append(_line(tls))
    if isinstance(client, dict) and client.get("application_name"):
        details.append(f"application {_line(client['application_name'])}")
    return details


class _Replay:
    """Turns events into lines, remembering who and where from the session start."""

    def __init__(self, version: int = FIRST_VERSION) -> None:
        self.who = "?"
        self.target = "?"
        self.version = version

    def lines(self, event: Event) -> list[str]:
        data = event.data
        head = _clock_time(event.ts) + "  "
        if event.kind == SESSION_START:
            return self._start(head, data)
        if event.kind == STATEMENT:
            return self._statement(head, data)
        if event.kind == RESULT:
            return [head + "  ← " + _result(Result.from_data(data, self.version))]
        if event.kind == APPROVAL_REQUESTED:
            return [head + "  " + _approval_requested(data)]
        if event.kind == APPROVAL_DECIDED:
            return [head + "  " + _approval_decided(data)]
        if event.kind == SESSION_END:
            return [head + _session_end(data)]
        if event.kind == TOKEN_REFRESHED:
            return [head + _token_refreshed(TokenRefreshed.from_data(data))]
        return [head + f"{_line(event.kind)}  {_line(data)}"]

    def _start(self, head: str, data: dict[str, Any]) -> list[str]:
        identity = data.get("identity")
        identity = identity if isinstance(identity, dict) else {}
        self.who = _line(identity.get("sub"))
        self.target = _line(data.get("target"))
        line = f"{head}{self.who} → {self.target}  session start"
        if data.get("protocol"):
            line += f" ({_line(data['protocol'])})"
        about = []
        if identity.get("email"):
            about.append(_line(identity["email"]))
        groups = identity.get("groups")
        if isinstance(groups, list) and groups:
            about.append("groups " + ", ".join(_line(g) for g in groups))
        if about:
            line += "  " + "; ".join(about)
        details = _client(data)
        if data.get("policy") is not None:
            details.append(f"policy {_line(data['policy'])}")
        token = []
        if identity.get("jti") is not None:
            token.append(f"token {_line(identity['jti'])}")
        if identity.get("exp") is not None:
            token.append(f"expires {_moment(identity['exp'])}")
        if identity.get("iss") is not None:
            token.append(f"issuer {_line(identity['iss'])}")
        lines = [line, _INDENT + ", ".join(details)]
        if token:
            lines.append(_INDENT + ", ".join(token))
        return lines

    def _statement(self, head: str, data: dict[str, Any]) -> list[str]:
        statement_class = _line(data.get("class"))
        line = (
            f"{head}{self.who} → {self.target}  {statement_class:<5}  "
            f"{_line(data.get('sql'))}  [{_decision(data)}]"
        )
        lines = [line]
        reasons = data.get("reasons")
        if data.get("class") != "read" and isinstance(reasons, list) and reasons:
            lines.append(_INDENT + "because " + "; ".join(_line(r) for r in reasons))
        params = decoded_parameters(data)
        if params:
            lines.extend(_INDENT + format_parameter(i, p) for i, p in enumerate(params, start=1))
        return lines


def _decision(data: dict[str, Any]) -> str:
    decision = data.get("decision")
    if decision in ("approve", "hold"):
        return f"held: {_line(data.get('approval_id'))}"
    if decision == "allow" and data.get("grant"):
        return f"allow: grant {_line(data['grant'])}"
    if decision == "deny":
        return "denied"
    return _line(decision)


def _result(result: Result) -> str:
    facts = []
    if result.rows is not None:
        facts.append(f"{result.rows} row" + ("" if result.rows == 1 else "s"))
    duration = _duration(result.duration_s)
    if duration:
        facts.append(duration)
    suffix = f" ({', '.join(facts)})" if facts else ""
    error = result.error if result.error is not None else result.extra
    if _first(error, "sqlstate", "errno") is not None:
        code = " ".join(_line(error[k]) for k in ("errno", "sqlstate") if error.get(k) is not None)
        return f"error {code}: {_line(error.get('message'))}{suffix}"
    return f"{'ok' if result.tag is None else _line(result.tag)}{suffix}"


def _approval_requested(data: dict[str, Any]) -> str:
    line = f"approval {_line(_first(data, 'approval_id', 'id'))} requested"
    if data.get("sql") is not None:
        line += f" for {_line(data.get('class'))} {_line(data['sql'])}"
    facts = []
    approvers = _first(data, "approvers", "approver_groups")
    if isinstance(approvers, list) and approvers:
        facts.append("approvers " + ", ".join(_line(a) for a in approvers))
    timeout = _number(data.get("timeout_s"))
    if timeout is not None:
        facts.append(f"{_line(data.get('hold') or 'wait')} up to {format_age(timeout)}")
    elif data.get("hold") is not None:
        facts.append(f"hold {_line(data['hold'])}")
    if data.get("why") is not None:
        facts.append(f"why: {_line(data['why'])}")
    return line + (f" ({'; '.join(facts)})" if facts else "")


def _approval_decided(data: dict[str, Any]) -> str:
    line = f"approval {_line(_first(data, 'approval_id', 'id'))} {_line(data.get('state'))}"
    approver = _first(data, "approver", "by")
    if isinstance(approver, dict):
        line += f" by {_line(approver.get('sub'))}"
        if approver.get("email"):
            line += f" <{_line(approver['email'])}>"
    elif approver is not None:
        line += f" by {_line(approver)}"
    groups = data.get("groups")
    if isinstance(groups, list) and groups:
        line += " (" + ", ".join(_line(g) for g in groups) + ")"
    facts = []
    if data.get("scope") is not None:
        facts.append(f"scope {_line(data['scope'])}")
    ttl = _number(data.get("ttl_s"))
    if ttl is not None:
        facts.append(f"for {format_age(ttl)}")
    elif data.get("expires_at") is not None:
        facts.append(f"until {_moment(data['expires_at'])}")
    if _is_int(data.get("approvals")) and _is_int(data.get("approvals_required")):
        facts.append(f"{data['approvals']} of {data['approvals_required']} approvals")
    if facts:
        line += f" ({', '.join(facts)})"
    said = _first(data, "comment", "reason")
    if said is not None:
        line += f": {json.dumps(_line(said), ensure_ascii=False)}"
    return line


def _session_end(data: dict[str, Any]) -> str:
    line = f"session end: {_line(data.get('reason'))}"
    error = data.get("error")
    if isinstance(error, dict):
        line += f"; error {_line(error.get('sqlstate'))}: {_line(error.get('message'))}"
    totals = data.get("totals")
    if isinstance(totals, dict) and totals:
        line += " (" + ", ".join(f"{_line(k)} {_line(v)}" for k, v in totals.items()) + ")"
    elif _is_int(data.get("statements")):
        count = data["statements"]
        line += f" ({count} statement{'' if count == 1 else 's'})"
    return line


def _token_refreshed(refreshed: TokenRefreshed) -> str:
    ends = _utc(refreshed.ends_at)
    when = "?" if ends is None else ends.strftime("%Y-%m-%d %H:%M:%S UTC")
    line = f"token refreshed ({_line(refreshed.via)}): the session now ends {when}"
    line += f" ({_line(refreshed.ends_because)})"
    if refreshed.jti is not None:
        line += f"; token jti {_line(refreshed.jti)}"
    return line


def render(
    transcript: Transcript,
    *,
    speed: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Replay lines, like a terminal transcript; times are UTC.

    With `speed`, waits between events for the recorded gap divided by `speed`.
    """
    replay = _Replay(transcript.version)
    day = None
    if transcript.events:
        first = _utc(transcript.events[0].ts)
        day = first.date() if first else None
        started = day.isoformat() if day else "?"
        yield f"session {_line(transcript.session_id)}, {started} (times UTC)"
    for event in paced(transcript.events, speed, sleep):
        moment = _utc(event.ts)
        if moment is not None and moment.date() != day:
            day = moment.date()
            yield f"-- {day.isoformat()}"
        yield from replay.lines(event)


def paced(
    events: Iterable[Event],
    speed: float | None,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[Event]:
    """The events, each after the recorded gap before it divided by `speed` (None: at once)."""
    previous: Event | None = None
    for event in events:
        if speed and previous is not None:
            gap_s = event.ts - previous.ts
            if 0 < gap_s < math.inf:
                sleep(gap_s / speed)
        yield event
        previous = event


# --- JSON: replay --json and export ------------------------------------------------------------


def _jsonable(value: object) -> object:
    """What json.dumps takes: bytes as {"$base64": ...}, map keys as strings."""
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else json.dumps(_jsonable(k)): _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, bytes):
        return {"$base64": base64.b64encode(value).decode("ascii")}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


_PARAMETER_KEYS = ("bind", "execute", "params", "parameters")


def event_json(session_id: str, event: Event) -> str:
    """One event as a JSON line: bytes as {"$base64": ...}, time also as ISO 8601.

    A statement recorded with parameters (raw, as a Bind or COM_STMT_EXECUTE, or
    decoded) also gets them decoded as `params`.
    """
    document = {
        "session_id": session_id,
        "seq": event.seq,
        "ts": event.ts,
        "time": _iso(event.ts),
        "kind": event.kind,
        "data": event.data,
        "prev": event.prev,
        "hash": event.hash,
    }
    if event.kind == STATEMENT and any(k in event.data for k in _PARAMETER_KEYS):
        # One place for them however they were recorded: raw on the hot path, decoded by
        # the session when it decided the statement (so, under recording.on_failure:
        # refuse, every execute that may change data).
        document["params"] = decoded_parameters(event.data)
    return json.dumps(_jsonable(document), separators=(",", ":"))


def seal_json(session_id: str, seal: Seal, ts: float | None) -> str:
    """The seal as a JSON line; it has no time of its own, so it takes its last event's."""
    document = {
        "session_id": session_id,
        "seq": seal.seq,
        "ts": ts,
        "time": _iso(ts) if ts is not None else None,
        "kind": "session.sealed",
        "data": {
            "last": seal.last,
            "key_id": seal.key_id,
            "sig": base64.b64encode(seal.sig).decode("ascii"),
        },
    }
    return json.dumps(document, separators=(",", ":"))


def _iso(ts: float) -> str | None:
    moment = _utc(ts)
    if moment is None:
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def transcript_lines(transcript: Transcript) -> Iterator[str]:
    """Every event of one transcript as JSON lines, and its seal when there is one."""
    for event in transcript.events:
        yield event_json(transcript.session_id, event)
    if transcript.seal is not None:
        yield seal_json(transcript.session_id, transcript.seal, _last_ts(transcript))


def export_lines(data_dir: Path, since: float | None) -> Iterator[str]:
    """JSON lines, one per event at or after `since`, session by session in start order.

    A seal is a line of kind "session.sealed". Export does not verify: `verify` does.
    """
    by_day: dict[str, list[Path]] = {}
    for path in transcript_paths(data_dir, modified_since=since):
        by_day.setdefault(path.parent.name, []).append(path)
    for day in sorted(by_day):
        # A day at a time: sessions in start order without holding every transcript.
        for transcript in sorted(_readable(by_day[day]), key=_start_order):
            yield from export_transcript(transcript, since)


def _readable(paths: list[Path]) -> list[Transcript]:
    transcripts = []
    for path in paths:
        try:
            transcripts.append(read_transcript(path))
        except OSError as error:
            log.warning("%s: %s", path, error.strerror or error)
    return transcripts


def _start_order(transcript: Transcript) -> tuple[float, str]:
    return (transcript.events[0].ts if transcript.events else 0.0, transcript.session_id)


def export_transcript(transcript: Transcript, since: float | None) -> Iterator[str]:
    """One transcript's export lines: its events at or after `since`, then its seal."""
    for event in transcript.events:
        if since is None or event.ts >= since:
            yield event_json(transcript.session_id, event)
    seal, last_ts = transcript.seal, _last_ts(transcript)
    if seal is not None and (since is None or (last_ts is not None and last_ts >= since)):
        yield seal_json(transcript.session_id, seal, last_ts)


def _last_ts(transcript: Transcript) -> float | None:
    return transcript.events[-1].ts if transcript.events else None
