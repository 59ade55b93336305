"""The auditor's commands on a data dir: sessions list, replay, verify, export, keys."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from proxy.cli.audit import add_parsers
from proxy.recording import signing
from proxy.recording.ledger import Ledger, verify_ledger
from proxy.recording.render import render
from proxy.recording.sessions import parse_since
from proxy.recording.signing import SigningKey
from proxy.recording.verifier import read_transcript
from proxy.recording.writer import Recorder
from tests.proxy.test_transcript import END, START_TS, Clock, record_session, start_data

SEALED = "3f2a9c1e5b7d4e0f8a6c2b1d9e7f5a3c"
KILLED = "7b1e0c9d8a6f4e2d1c3b5a7f9e8d6c4b"
TAMPERED = "c0ffee00aa11bb22cc33dd44ee55ff66"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="airlock")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.handler(args)
    return code


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Three sessions: one sealed, one cut off by a kill, one sealed and then edited."""
    data_dir = tmp_path / "airlock-data"
    key = signing.load_or_create(data_dir)
    for number, session_id in enumerate((SEALED, KILLED, TAMPERED)):
        recorder = Recorder(data_dir, key, clock=Clock(START_TS + number * 3600))
        sub = "agent-2" if session_id == KILLED else "agent-1"
        recording = recorder.open(session_id, start_data(sub, "shop" if number else "orders"))
        record_session(recording)
        if session_id == KILLED:
            recording.flush()
        else:
            recording.seal(END)
    tampered = next(data_dir.glob(f"transcripts/*/{TAMPERED}.airlock"))
    tampered.write_bytes(tampered.read_bytes().replace(b"DROP TABLE", b"DROP VIEW "))
    return data_dir


def path_of(data_dir: Path, session_id: str) -> Path:
    return next(data_dir.glob(f"transcripts/*/{session_id}.airlock"))


# --- sessions list -----------------------------------------------------------------------------


def test_sessions_list_is_a_table_oldest_first(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("sessions", "list", "--data-dir", str(data_dir)) == 0
    assert capsys.readouterr().out.splitlines() == [
        "SESSION                           STARTED (UTC)        IDENTITY  TARGET  "
        "CLIENT          STATEMENTS  END",
        f"{SEALED}  2020-09-13 12:26:40  agent-1   orders  10.0.0.5:51234  3           "
        "client closed the connection",
        f"{KILLED}  2020-09-13 13:26:40  agent-2   shop    10.0.0.5:51234  3           "
        "(no end: open, or cut off)",
        f"{TAMPERED}  2020-09-13 14:26:40  agent-1   shop    10.0.0.5:51234  3           "
        "client closed the connection",
    ]


def test_sessions_list_filters(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def listed(*options: str) -> list[str]:
        assert run("sessions", "list", "--data-dir", str(data_dir), "--json", *options) == 0
        return [json.loads(line)["session_id"] for line in capsys.readouterr().out.splitlines()]

    assert listed() == [SEALED, KILLED, TAMPERED]
    assert listed("--identity", "agent-1") == [SEALED, TAMPERED]
    assert listed("--identity", "agent-2@example.com") == [KILLED]
    assert listed("--target", "shop") == [KILLED, TAMPERED]
    assert listed("--since", "2020-09-13T13:00Z") == [KILLED, TAMPERED]
    assert listed("--identity", "nobody") == []


def test_sessions_list_json_says_what_the_start_and_end_say(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("sessions", "list", "--data-dir", str(data_dir), "--json") == 0
    first = json.loads(capsys.readouterr().out.splitlines()[0])
    assert first == {
        "session_id": SEALED,
        "path": str(path_of(data_dir, SEALED)),
        "started_at": START_TS,
        "subject": "agent-1",
        "email": "agent-1@example.com",
        "groups": ["data-agents"],
        "target": "orders",
        "client": "10.0.0.5:51234",
        "statements": 3,
        "last_at": START_TS + 2.25,
        "ended_at": START_TS + 2.25,
        "end_reason": "client closed the connection",
        "sealed": True,
    }


def test_a_data_dir_without_transcripts_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in (["sessions", "list"], ["export"], ["verify", "--all"]):
        assert run(*command, "--data-dir", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert f"no transcripts under {tmp_path} (is --data-dir right?)" in err


# --- replay ------------------------------------------------------------------------------------


def test_replay_prints_the_transcript_and_that_it_verifies(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("replay", SEALED[:8], "--data-dir", str(data_dir)) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = list(render(read_transcript(path_of(data_dir, SEALED))))
    assert lines == [*expected, "-- verified: sealed, 10 events"]
    assert lines[1].startswith("12:26:40.000  agent-1 → orders  session start (postgres)")


def test_replay_of_a_transcript_that_does_not_verify_says_so_and_exits_1(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("replay", TAMPERED, "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "-- DOES NOT VERIFY: event 7: altered (its hash does not match the link in event 8)"
    )
    assert run("replay", KILLED, "--data-dir", str(data_dir)) == 1
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith("-- UNSEALED: unsealed: 9 events intact (0 to 8)")
    )


def test_replay_with_no_key_says_it_did_not_verify(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("transcript_ed25519.pem", "transcript_ed25519.pub.pem"):
        (data_dir / "keys" / name).unlink()
    assert run("replay", SEALED, "--data-dir", str(data_dir)) == 1
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .startswith("-- not verified: no transcript signing key in")
    )


def test_replay_json_is_one_event_per_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("replay", SEALED, "--json", "--data-dir", str(data_dir)) == 0
    captured = capsys.readouterr()
    documents = [json.loads(line) for line in captured.out.splitlines()]
    assert [d["seq"] for d in documents] == list(range(10))
    assert [documents[0]["kind"], documents[-1]["kind"]] == ["session.start", "session.end"]
    assert captured.err == ""
    assert run("replay", KILLED, "--json", "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().err.startswith("airlock: UNSEALED: unsealed: 9 events intact")


def test_replay_at_a_speed(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("replay", SEALED, "--speed", "1000", "--data-dir", str(data_dir)) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "-- verified: sealed, 10 events"
    with pytest.raises(SystemExit):
        run("replay", SEALED, "--speed", "0", "--data-dir", str(data_dir))
    assert "must be a positive number" in capsys.readouterr().err


def test_replay_of_an_unknown_session(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("replay", "feedface", "--data-dir", str(data_dir)) == 2
    assert capsys.readouterr().err == (
        f"airlock: no session feedface under {data_dir / 'transcripts'}\n"
    )


# --- verify ------------------------------------------------------------------------------------


def test_verify_an_intact_session(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("verify", SEALED, "--data-dir", str(data_dir)) == 0
    assert capsys.readouterr().out == f"valid     {SEALED}  sealed, 10 events\n"


def test_verify_names_the_altered_event(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("verify", TAMPERED, "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().out == (
        f"invalid   {TAMPERED}  event 7: altered (its hash does not match the link in event 8)\n"
    )


def test_verify_an_unsealed_session_fails(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("verify", KILLED, "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().out == (
        f"unsealed  {KILLED}  not sealed (gateway crashed or still running): 9 events intact "
        "(0 to 8), and the ledger lists its start but no seal\n"
    )


def test_verify_all(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["valid", SEALED],
        ["unsealed", KILLED],
        ["invalid", TAMPERED],
    ]
    assert lines[3] == "3 transcripts: 1 valid, 1 unsealed, 1 invalid"
    assert lines[4].startswith("ledger: 3 sessions listed, 0 missing, 0 unlisted, 0 problems")


def test_verify_all_names_a_transcript_deleted_whole(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path_of(data_dir, KILLED).unlink()
    path_of(data_dir, TAMPERED).unlink()
    # What is left verifies, but the session ledger still lists the two sessions.
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        f"valid     {SEALED}  sealed, 10 events",
        "1 transcripts: 1 valid, 0 unsealed, 0 invalid",
    ]
    assert lines[2:4] == [
        f"missing   {KILLED}  listed in the ledger, but its transcript is gone",
        f"missing   {TAMPERED}  listed in the ledger, but its transcript is gone",
    ]
    assert lines[4].startswith("ledger: 3 sessions listed, 2 missing")


def test_verify_all_names_an_edited_or_foreign_or_missing_ledger(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for session_id in (KILLED, TAMPERED):
        path_of(data_dir, session_id).unlink()
    ledger = data_dir / "transcripts" / "ledger.airlock"
    original = ledger.read_bytes()
    # An entry rewritten to hide a session: its signature no longer verifies, and the
    # entry after it no longer follows it.
    ledger.write_bytes(original.replace(KILLED.encode(), SEALED.encode(), 1))
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 1
    out = capsys.readouterr().out
    assert "invalid   ledger  entry 2: signature does not verify" in out
    assert "invalid   ledger  entry 3: does not follow the entry before it" in out
    # The ledger signed by another key (rewritten whole by someone without ours).
    ledger.unlink()
    stranger = SigningKey.generate()
    recorder = Recorder(data_dir, stranger, clock=Clock(START_TS))
    recorder.open("0" * 32, start_data("agent-1", "orders")).seal(END)
    capsys.readouterr()
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 1
    out = capsys.readouterr().out
    assert "invalid   ledger  entry 0: signature does not verify" in out
    assert f"unlisted  {SEALED}  not in the session ledger" in out
    # No ledger at all, though there are transcripts.
    ledger.unlink()
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 1
    assert "ledger.airlock is missing, though transcripts exist" in capsys.readouterr().out


def test_verify_lists_several_problems_under_one_another(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = path_of(data_dir, SEALED)
    raw = path.read_bytes()
    path.write_bytes(
        raw.replace(b"SELECT id, total", b"SELECT id, t0tal").replace(b"DROP", b"DR0P")
    )
    assert run("verify", SEALED, "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"invalid   {SEALED}  event 1: altered (its hash does not match the link in event 2)",
        " " * (10 + len(SEALED))
        + "  event 7: altered (its hash does not match the link in event 8)",
    ]


def test_verify_against_an_exported_public_key(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "airlock.pub.pem"
    exported.write_text(signing.load_or_create(data_dir).public_key_pem())
    assert run("verify", SEALED, "--data-dir", str(data_dir), "--public-key", str(exported)) == 0
    other = SigningKey.generate()
    exported.write_text(other.public_key_pem())
    assert run("verify", SEALED, "--data-dir", str(data_dir), "--public-key", str(exported)) == 1
    assert "seal: signed by another key" in capsys.readouterr().out
    exported.write_text("not a key")
    assert run("verify", SEALED, "--data-dir", str(data_dir), "--public-key", str(exported)) == 2
    assert capsys.readouterr().err == f"airlock: {exported}: not a PEM public key\n"


def test_verify_needs_a_session_or_all(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run("verify", "--data-dir", str(data_dir))
    with pytest.raises(SystemExit):
        run("verify", SEALED, "--all", "--data-dir", str(data_dir))
    assert "not allowed with argument" in capsys.readouterr().err


def test_verify_without_any_key_is_a_usage_error(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("transcript_ed25519.pem", "transcript_ed25519.pub.pem"):
        (data_dir / "keys" / name).unlink()
    assert run("verify", SEALED, "--data-dir", str(data_dir)) == 2
    assert "no transcript signing key in" in capsys.readouterr().err


# --- export and keys ---------------------------------------------------------------------------


def test_export_since_a_time(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("export", "--data-dir", str(data_dir)) == 0
    everything = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(everything) == 10 + 1 + 9 + 10 + 1
    assert run("export", "--data-dir", str(data_dir), "--since", "2020-09-13T14:26:41Z") == 0
    later = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {d["session_id"] for d in later} == {TAMPERED}
    assert [d["seq"] for d in later] == [4, 5, 6, 7, 8, 9, 9]
    assert later[0]["time"] == "2020-09-13T14:26:41.000Z"


def test_keys_export_public(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = signing.load_or_create(data_dir)
    assert run("keys", "export-public", "--data-dir", str(data_dir)) == 0
    captured = capsys.readouterr()
    assert captured.out == key.public_key_pem()
    assert captured.err == f"# key id {key.key_id}\n"
    assert run("keys", "export-public", "--data-dir", str(data_dir / "nowhere")) == 2


# --- --since -----------------------------------------------------------------------------------

NOW = 1_600_000_000.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-09-13", 1_599_955_200.0),
        ("2020-09-13T12:26:40Z", NOW),
        ("2020-09-13T12:26:40", NOW),
        ("2020-09-13T14:26:40+02:00", NOW),
        ("30m", NOW - 1800),
        ("7d", NOW - 7 * 86_400),
        ("1h30m", NOW - 5400),
    ],
)
def test_since_is_a_date_a_time_or_a_duration_ago(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1600000000", "needs a unit"),
        ("yesterday", "neither an ISO 8601 date or time"),
        ("-5m", "neither an ISO 8601 date or time"),
    ],
)
def test_since_refuses_what_it_cannot_read(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_since(text, NOW)


# --- the ledger's seal records


def test_verify_tells_a_cut_tail_from_a_session_never_sealed(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = path_of(data_dir, SEALED)
    record = read_transcript(path)
    # Cut at a record boundary, the end event and the seal with it: the file alone reads
    # as if the gateway had stopped, but the ledger recorded the seal.
    path.write_bytes(path.read_bytes()[: record.events[-1].offset])
    assert run("verify", SEALED, "--data-dir", str(data_dir)) == 1
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith(
        f"tail cut  {SEALED}  tail cut: the ledger records it sealed at event 9 "
        f"({record.events[-1].hash[:16]}), but the file ends at event 8"
    )
    # Cut mid-record, and the killed session beside it: each named for what it is.
    path.write_bytes(path.read_bytes()[:-3])
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"tail cut  {SEALED}  tail cut: the ledger records it sealed")
    assert "but the file ends at event 7" in lines[0]
    assert (
        f"unsealed  {KILLED}  not sealed (gateway crashed or still running): 9 events"
        in "\n".join(lines)
    )
    assert "3 transcripts: 0 valid, 1 unsealed, 1 tail cut, 1 invalid" in lines


def test_a_tail_replaced_by_another_sealed_end_is_cut_too(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The transcript of another session sealed with the same key, renamed over this one:
    # its own seal verifies only for its own id, and the ledger's seal names other events.
    path = path_of(data_dir, SEALED)
    path.write_bytes(path_of(data_dir, TAMPERED).read_bytes())
    assert run("verify", SEALED, "--data-dir", str(data_dir)) == 1
    assert capsys.readouterr().out.startswith(f"tail cut  {SEALED}  tail cut:")


def test_a_ledger_written_without_seal_records_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Ledgers from before seal records (start records only) read as before."""
    data_dir = tmp_path / "airlock-data"
    key = signing.load_or_create(data_dir)
    ids = [f"{n:032x}" for n in (1, 2)]
    for session_id in ids:
        recording = Recorder(data_dir, key, clock=Clock(START_TS)).open(session_id, start_data())
        record_session(recording)
        recording.seal(END)
    ledger_path = data_dir / "transcripts" / "ledger.airlock"
    written = verify_ledger(ledger_path.parent, key.public_key)
    assert written is not None
    assert sorted(written.seals) == ids
    starts = written.entries
    # The start records alone, as the gateway wrote them before this change (its start
    # record format is unchanged: Ledger.append is that code).
    ledger_path.unlink()
    old = Ledger(ledger_path.parent, key)
    for entry in starts:
        old.append(entry.session_id, entry.path, entry.ts)
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 0
    out = capsys.readouterr().out
    assert "2 transcripts: 2 valid, 0 unsealed, 0 invalid" in out
    assert "ledger: 2 sessions listed, 0 missing, 0 unlisted, 0 problems" in out
    # A gateway running the new code goes on with that ledger, seal records and all.
    Recorder(data_dir, key, clock=Clock(START_TS)).open("f" * 32, start_data()).seal(END)
    assert run("verify", "--all", "--data-dir", str(data_dir)) == 0
