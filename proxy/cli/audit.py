"""The auditor's commands: `airlock sessions list`, `replay`, `verify`, `export`, `keys`.

They read transcripts straight from `--data-dir` (proxy/recording/), offline: no
gateway needs to run. `verify` and `replay` check seals against the public key in the
data dir's keys/, or against `--public-key FILE` (one exported earlier with `airlock
keys export-public`, which does not trust whatever key now sits beside the transcripts).

Exit codes: 0 done (for verify and replay: every transcript valid), 1 a transcript
failed to verify (altered, incomplete, or unsealed; for replay also: no key to check it
with), 2 usage (no such session, no key, bad option). A reader that closes the pipe
(`airlock replay X | head`) ends the command quietly (proxy/cli/main.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.cli.approvals import (
    ApiClient,
    BadAnswer,
    add_connection_options,
    add_session_refresh,
    positive_number,
    with_client,
)
from proxy.recording import signing
from proxy.recording.format import SESSION_ID, SUFFIX, transcripts_dir
from proxy.recording.ledger import LEDGER_FILE, SealEntry, verify_ledger
from proxy.recording.render import event_json, export_lines, export_transcript, paced, render
from proxy.recording.sessions import (
    SessionSummary,
    find_sessions,
    find_transcript,
    parse_since,
    transcript_paths,
)
from proxy.recording.shared import public_key_from_pem
from proxy.recording.verifier import (
    Transcript,
    VerifyResult,
    describe,
    parse_transcript,
    read_transcript,
    verify_transcript,
)
from proxy.rendering import one_line_sql

DEFAULT_DATA_DIR = Path("./airlock-data")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Per transcript, `verify` names this many problems and counts the rest.
PROBLEMS_SHOWN = 20
IDENTITY_COLUMN_CHARS = 32
END_COLUMN_CHARS = 40


class _Usage(Exception):
    """Exit 2 with this message."""


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"airlock: {message}", file=sys.stderr)
    return code


def _since(text: str) -> float:
    try:
        return parse_since(text, time.time())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _public_key(args: argparse.Namespace) -> Ed25519PublicKey:
    if args.public_key is not None:
        return signing.load_public_key_file(args.public_key)
    return signing.load_public_key(args.data_dir)


def _cell(value: str | None, width: int) -> str:
    return "-" if value is None else one_line_sql(value, width)


def _utc(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _emit(lines: Iterable[str]) -> None:
    """Print lines as they come (replay --speed is watched live)."""
    for line in lines:
        print(line, flush=True)


# --- sessions list -----------------------------------------------------------------------------


def _sessions_list(args: argparse.Namespace) -> int:
    if args.server is not None:
        return with_client(
            args, lambda client: _show_sessions(args, _remote_sessions(args, client))
        )
    if not transcripts_dir(args.data_dir).is_dir():
        return _fail(f"no transcripts under {args.data_dir} (is --data-dir right?)")
    sessions = find_sessions(
        args.data_dir, identity=args.identity, target=args.target, since=args.since
    )
    return _show_sessions(args, sessions)


def _show_sessions(args: argparse.Namespace, sessions: list[SessionSummary]) -> int:
    if args.json:
        for session in sessions:
            print(json.dumps(session.to_json()))
        return EXIT_OK
    if not sessions:
        print("no sessions")
        return EXIT_OK
    header = ("SESSION", "STARTED (UTC)", "IDENTITY", "TARGET", "CLIENT", "STATEMENTS", "END")
    rows = [header]
    for session in sessions:
        end = session.end_reason if session.ended_at is not None else None
        rows.append(
            (
                session.session_id,
                _utc(session.started_at),
                _cell(session.subject, IDENTITY_COLUMN_CHARS),
                _cell(session.target, IDENTITY_COLUMN_CHARS),
                _cell(session.client, IDENTITY_COLUMN_CHARS),
                str(session.statements),
                _cell(end, END_COLUMN_CHARS) if end else "(no end: open, or cut off)",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return EXIT_OK


# --- replay ------------------------------------------------------------------------------------


def _replay(args: argparse.Namespace) -> int:
    if args.server is not None:
        return with_client(args, lambda client: _replay_remote(args, client))
    try:
        path = find_transcript(args.data_dir, args.session)
        record = read_transcript(path)
    except LookupError as error:
        return _fail(str(error))
    except OSError as error:
        return _fail(f"{args.session}: {error.strerror or error}")
    return _show_replay(args, record, _replay_footer(args, record))


def _replay_remote(args: argparse.Namespace, client: ApiClient) -> int:
    try:
        sealed = _remote_sealed(client, args.session)
        public_key = _remote_key(args, sealed)
    except _Usage as error:
        return _fail(str(error))
    except signing.SigningKeyError as error:
        return _show_replay(args, sealed.transcript, f"not verified: {error}")
    footer = _footer(verify_transcript(sealed.transcript, public_key))
    return _show_replay(args, sealed.transcript, footer)


def _show_replay(args: argparse.Namespace, record: Transcript, footer: str) -> int:
    if args.json:
        # The events only: whether they verify goes to stderr, and `verify` says more.
        _emit(event_json(record.session_id, event) for event in paced(record.events, args.speed))
        if not footer.startswith("verified"):
            print(f"airlock: {footer}", file=sys.stderr)
        return _verified(footer)
    _emit(render(record, speed=args.speed))
    print(f"-- {footer}")
    return _verified(footer)


def _verified(footer: str) -> int:
    """Replay's status: 0 when the transcript verifies, 1 when it does not (altered,
    unsealed, or no key to check it with), as `verify` would say."""
    return EXIT_OK if footer.startswith("verified") else EXIT_FAILED


def _replay_footer(args: argparse.Namespace, record: Transcript) -> str:
    try:
        public_key = _public_key(args)
    except signing.SigningKeyError as error:
        return f"not verified: {error}"
    return _footer(verify_transcript(record, public_key))


def _footer(result: VerifyResult) -> str:
    if result.ok:
        return f"verified: {describe(result)}"
    if result.status == "unsealed":
        return f"UNSEALED: {describe(result)}"
    return f"DOES NOT VERIFY: {describe(result)}"


# --- verify ------------------------------------------------------------------------------------


def _verify(args: argparse.Namespace) -> int:
    if args.server is not None:
        return with_client(args, lambda client: _verify_remote(args, client))
    try:
        public_key = _public_key(args)
    except signing.SigningKeyError as error:
        return _fail(str(error))
    if args.all:
        if not transcripts_dir(args.data_dir).is_dir():
            return _fail(f"no transcripts under {args.data_dir} (is --data-dir right?)")
        paths = transcript_paths(args.data_dir)
    else:
        try:
            paths = [find_transcript(args.data_dir, args.session)]
        except LookupError as error:
            return _fail(str(error))
    ledger = verify_ledger(transcripts_dir(args.data_dir), public_key)
    listed = {entry.session_id for entry in ledger.entries} if ledger is not None else set()
    counts = {"valid": 0, "unsealed": 0, TAIL_CUT: 0, "invalid": 0}
    for path in paths:
        name = path.name.removesuffix(SUFFIX)
        try:
            record = read_transcript(path)
        except OSError as error:
            counts["invalid"] += 1
            print(f"invalid   {name}  cannot read {path}: {error.strerror or error}")
            continue
        result = verify_transcript(record, public_key)
        seal = ledger.seals.get(name) if ledger is not None else None
        status, problems = _with_ledger(record, result, seal, listed=name in listed)
        counts[status] += 1
        if status == "valid":
            print(f"valid     {name}  {describe(result)}")
            continue
        first, *rest = problems
        print(f"{status:<8}  {name}  {first}")
        for problem in rest[: PROBLEMS_SHOWN - 1]:
            print(" " * 10 + " " * len(name) + f"  {problem}")
        if len(rest) >= PROBLEMS_SHOWN:
            more = len(rest) - (PROBLEMS_SHOWN - 1)
            print(" " * 10 + " " * len(name) + f"  ... and {more} more")
    if not args.all:
        return EXIT_OK if counts["valid"] == len(paths) else EXIT_FAILED
    cut = f"{counts[TAIL_CUT]} tail cut, " if counts[TAIL_CUT] else ""
    print(
        f"{len(paths)} transcripts: {counts['valid']} valid, "
        f"{counts['unsealed']} unsealed, {cut}{counts['invalid']} invalid"
    )
    ledger_ok = _verify_ledger(args.data_dir, public_key, paths)
    return EXIT_OK if counts["valid"] == len(paths) and ledger_ok else EXIT_FAILED


def _with_ledger(
    record: Transcript,
    result: VerifyResult,
    seal: SealEntry | None,
    *,
    listed: bool,
) -> tuple[str, list[str]]:
    """The transcript's status and problems, told apart by the ledger: a file the ledger
    records as sealed but that ends earlier or differently had its tail cut; a listed
    session with no seal record anywhere was never sealed."""
    if seal is not None:
        own = record.seal
        if own is None or (own.last, own.seq) != (seal.last, seal.events):
            events = record.events
            if not events or events[-1].seq < seal.events:
                ends = f"the file ends at event {events[-1].seq}" if events else "the file is empty"
            else:
                ends = "the file ends differently"
            problem = (
                f"tail cut: the ledger records it sealed at event {seal.events} "
                f"({seal.last[:16]}), but {ends}"
            )
            return TAIL_CUT, [problem, *result.problems]
    elif listed and result.status == "unsealed":
        last = f" (0 to {record.events[-1].seq})" if record.events else ""
        return "unsealed", [
            f"not sealed (gateway crashed or still running): {result.events} events "
            f"intact{last}, and the ledger lists its start but no seal",
        ]
    return result.status, result.problems


#: verify's status for a transcript whose ledger seal record its file does not match.
TAIL_CUT = "tail cut"


def _verify_ledger(data_dir: Path, public_key: Ed25519PublicKey, paths: list[Path]) -> bool:
    """The session ledger: intact, and a transcript for every session it lists (a
    transcript deleted whole is found only this way) and a listing for every transcript."""
    directory = transcripts_dir(data_dir)
    result = verify_ledger(directory, public_key)
    if result is None:
        if not paths:
            return True
        print(f"invalid   ledger  {LEDGER_FILE} is missing, though transcripts exist")
        return False
    for problem in result.problems:
        print(f"invalid   ledger  {problem}")
    for session_id in result.missing:
        print(f"missing   {session_id}  listed in the ledger, but its transcript is gone")
    listed = {entry.session_id for entry in result.entries}
    unlisted = [p for p in paths if p.name.removesuffix(SUFFIX) not in listed]
    for path in unlisted:
        name = path.name.removesuffix(SUFFIX)
        print(f"unlisted  {name}  not in the session ledger (added, or older than the ledger)")
    last = result.last
    tail = f"; last entry {last.seq}, {last.hash[:16]}" if last is not None else ""
    print(
        f"ledger: {len(result.entries)} sessions listed, {len(result.missing)} missing, "
        f"{len(unlisted)} unlisted, {len(result.problems)} problems{tail}"
    )
    return result.ok and not unlisted


def _verify_remote(args: argparse.Namespace, client: ApiClient) -> int:
    """Verify on this side: the transcript's bytes as sealed, downloaded, checked with
    --public-key or else the signer's public key as the shared store records it."""
    listed = _remote_sessions(args, client) if args.all else []
    names = [summary.session_id for summary in listed] if args.all else [args.session]
    counts = {"valid": 0, "unsealed": 0, "invalid": 0}
    for name in names:
        try:
            sealed = _remote_sealed(client, name)
        except _Usage as error:
            return _fail(str(error))
        try:
            result = verify_transcript(sealed.transcript, _remote_key(args, sealed))
        except signing.SigningKeyError as error:
            counts["invalid"] += 1
            print(f"invalid   {sealed.session_id}  {error}")
            continue
        counts[result.status] += 1
        gateway = f" (gateway {sealed.gateway})" if sealed.gateway else ""
        if result.ok:
            print(f"valid     {sealed.session_id}  {describe(result)}{gateway}")
            continue
        first, *rest = result.problems
        print(f"{result.status:<8}  {sealed.session_id}  {first}{gateway}")
        for problem in rest[: PROBLEMS_SHOWN - 1]:
            print(" " * 10 + " " * len(sealed.session_id) + f"  {problem}")
    if args.all:
        print(
            f"{len(names)} transcripts: {counts['valid']} valid, "
            f"{counts['unsealed']} unsealed, {counts['invalid']} invalid "
            "(verified here; each gateway's ledger stays on its data_dir: "
            "`airlock verify --all --data-dir` there checks it)"
        )
    return EXIT_OK if counts["valid"] == len(names) else EXIT_FAILED


# --- through the API (--server) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Sealed:
    session_id: str
    transcript: Transcript
    public_key_pem: str | None
    gateway: str | None


def _remote_sessions(args: argparse.Namespace, client: ApiClient) -> list[SessionSummary]:
    query = {"identity": getattr(args, "identity", None), "target": getattr(args, "target", None)}
    since = getattr(args, "since", None)
    if since is not None:
        query["since"] = datetime.fromtimestamp(since, UTC).isoformat()
    given = {name: value for name, value in query.items() if value is not None}
    answer = client.get("/api/v1/sessions" + ("?" + urlencode(given) if given else ""))
    sessions = answer.get("sessions") if isinstance(answer, dict) else None
    if not isinstance(sessions, list) or not all(isinstance(s, dict) for s in sessions):
        raise BadAnswer('expected {"sessions": [...]}')
    return [_summary(session) for session in sessions]


def _summary(fields: dict[str, Any]) -> SessionSummary:
    def text(name: str) -> str | None:
        value = fields.get(name)
        return value if isinstance(value, str) else None

    def number(name: str) -> float | None:
        value = fields.get(name)
        return float(value) if isinstance(value, int | float) else None

    session_id = text("session_id")
    if session_id is None or not SESSION_ID.fullmatch(session_id):
        raise BadAnswer("a session without a valid session_id")
    groups = fields.get("groups")
    statements = fields.get("statements")
    return SessionSummary(
        session_id=session_id,
        path=Path(text("path") or session_id + SUFFIX),
        started_at=number("started_at"),
        subject=text("subject"),
        email=text("email"),
        groups=tuple(g for g in groups if isinstance(g, str)) if isinstance(groups, list) else (),
        target=text("target"),
        client=text("client"),
        statements=statements if isinstance(statements, int) else 0,
        last_at=number("last_at"),
        ended_at=number("ended_at"),
        end_reason=text("end_reason"),
        sealed=fields.get("sealed") is True,
        gateway=text("gateway"),
    )


def _remote_sealed(client: ApiClient, session: str) -> _Sealed:
    """A session's transcript bytes as sealed, from the API; never the server's verdict."""
    if not SESSION_ID.fullmatch(session):
        raise _Usage(f"{session!r} is not a session id (a file needs --data-dir, not --server)")
    answer = client.get("/api/v1/sessions/" + quote(session, safe="") + "/sealed")
    if not isinstance(answer, dict):
        raise BadAnswer("expected a JSON object")
    session_id, encoded = answer.get("session_id"), answer.get("transcript")
    if not isinstance(session_id, str) or not SESSION_ID.fullmatch(session_id):
        raise BadAnswer("no valid session_id")
    if not session_id.startswith(session):
        raise BadAnswer(f"asked for session {session}, got {session_id}")
    if not isinstance(encoded, str):
        raise BadAnswer("no transcript")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise BadAnswer("the transcript is not base64") from None
    pem, gateway = answer.get("public_key_pem"), answer.get("gateway")
    return _Sealed(
        session_id,
        parse_transcript(raw, Path(session_id + SUFFIX)),
        pem if isinstance(pem, str) else None,
        gateway if isinstance(gateway, str) else None,
    )


def _remote_key(args: argparse.Namespace, sealed: _Sealed) -> Ed25519PublicKey:
    """--public-key when given (the auditor's own copy); else the signer's key as the
    gateway hands it out from the shared store."""
    if args.public_key is not None:
        return signing.load_public_key_file(args.public_key)
    return public_key_from_pem(sealed.public_key_pem)


def _export_remote(args: argparse.Namespace, client: ApiClient) -> int:
    for summary in _remote_sessions(args, client):
        try:
            sealed = _remote_sealed(client, summary.session_id)
        except _Usage as error:
            return _fail(str(error))
        _emit(export_transcript(sealed.transcript, args.since))
    return EXIT_OK


# --- export ------------------------------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    if args.server is not None:
        return with_client(args, lambda client: _export_remote(args, client))
    if not transcripts_dir(args.data_dir).is_dir():
        return _fail(f"no transcripts under {args.data_dir} (is --data-dir right?)")
    _emit(export_lines(args.data_dir, args.since))
    return EXIT_OK


# --- keys --------------------------------------------------------------------------------------


def _keys_export_public(args: argparse.Namespace) -> int:
    try:
        public_key = signing.load_public_key(args.data_dir)
    except signing.SigningKeyError as error:
        return _fail(str(error))
    print(signing.public_key_pem_of(public_key), end="")
    print(f"# key id {signing.key_id(public_key)}", file=sys.stderr)
    return EXIT_OK


# --- argparse ----------------------------------------------------------------------------------


def _data_dir_option() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"the gateway's data_dir (default {DEFAULT_DATA_DIR})",
    )
    return common


def _public_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--public-key",
        type=Path,
        metavar="FILE",
        help="verify seals with this PEM public key (default: the one in DIR/keys/)",
    )


def _server_options(parser: argparse.ArgumentParser) -> None:
    add_connection_options(
        parser,
        server_help="read through a gateway's API instead of --data-dir: every gateway's "
        "sessions when they share a store",
        bearer_help="an auditor's bearer token (default $AIRLOCK_TOKEN, which keeps it out of ps)",
    )


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `sessions list`, `replay`, `verify`, `export` and `keys export-public`."""
    common = _data_dir_option()

    sessions = commands.add_parser("sessions", help="list recorded sessions")
    sessions_actions = sessions.add_subparsers(dest="sessions_command", required=True)
    listing = sessions_actions.add_parser("list", parents=[common], help="list sessions")
    listing.add_argument("--identity", metavar="X", help="only this subject or email")
    listing.add_argument("--target", metavar="T", help="only this target")
    listing.add_argument(
        "--since",
        type=_since,
        metavar="T",
        help="only sessions active at or after T: 2025-06-01, 2025-06-01T18:00Z, or 24h (ago)",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    _server_options(listing)
    listing.set_defaults(handler=_sessions_list)
    add_session_refresh(sessions_actions)

    replay = commands.add_parser("replay", parents=[common], help="replay a session transcript")
    replay.add_argument("session", metavar="SESSION", help="session id, a unique prefix, or a file")
    replay.add_argument("--json", action="store_true", help="the events as JSON lines")
    replay.add_argument(
        "--speed",
        type=positive_number,
        metavar="N",
        help="pause between events, at N times the recorded pace (default: no pauses)",
    )
    _public_key_option(replay)
    _server_options(replay)
    replay.set_defaults(handler=_replay)

    verify = commands.add_parser(
        "verify",
        parents=[common],
        help="check transcripts for altered, removed or reordered events and their seals",
    )
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument("session", nargs="?", metavar="SESSION", help="session id, prefix, or file")
    which.add_argument("--all", action="store_true", help="every transcript in the data dir")
    _public_key_option(verify)
    _server_options(verify)
    verify.set_defaults(handler=_verify)

    export = commands.add_parser(
        "export", parents=[common], help="events as JSON lines, for a SIEM"
    )
    export.add_argument(
        "--since",
        type=_since,
        metavar="T",
        help="only events at or after T: 2025-06-01, 2025-06-01T18:00Z, or 24h (ago)",
    )
    _server_options(export)
    export.set_defaults(handler=_export)

    keys = commands.add_parser("keys", help="the gateway's transcript signing key")
    keys_actions = keys.add_subparsers(dest="keys_command", required=True)
    export_public = keys_actions.add_parser(
        "export-public", parents=[common], help="print the public key (PEM) for auditors"
    )
    export_public.set_defaults(handler=_keys_export_public)
