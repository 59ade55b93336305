"""Session transcripts: the format on disk, buffering and flushing, failing closed,
tamper detection (edit, delete, swap, truncate, another key), replay and export."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import os
import stat
import struct
import threading
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from proxy.core.gated_session import seal_abandoned
from proxy.recording import signing, writer
from proxy.recording.format import seal_message, transcripts_dir
from proxy.recording.ledger import verify_ledger
from proxy.recording.render import export_lines, render, transcript_lines
from proxy.recording.sessions import find_sessions, find_transcript
from proxy.recording.signing import SigningKey
from proxy.recording.verifier import (
    VerifyResult,
    parse_transcript,
    read_transcript,
    verify,
    verify_transcript,
)
from proxy.recording.writer import Recorder, SessionRecording, TranscriptError
from tests.support.waiting import PATIENCE_S, until

START_TS = 1_600_000_000.0  # 2020-09-13 12:26:40 UTC
SESSION = "3f2a9c1e5b7d4e0f8a6c2b1d9e7f5a3c"


class Clock:
    """Each reading is `step_s` after the last."""

    def __init__(self, now: float = START_TS, step_s: float = 0.25) -> None:
        self.now = now - step_s
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def start_data(sub: str = "agent-1", target: str = "orders") -> dict[str, Any]:
    return {
        "identity": {
            "iss": "https://example.okta.com/oauth2/default",
            "sub": sub,
            "email": f"{sub}@example.com",
            "groups": ["data-agents"],
            "jti": "7f3e2a",
            "exp": START_TS + 3600,
        },
        "target": target,
        "protocol": "postgres",
        "client": "10.0.0.5:51234",
        "tls": {"version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
        "policy": "sha256:1a2b3c4d",
    }


def record_session(recording: SessionRecording) -> None:
    """A read, a held write approved and run, a denied DDL: events 1 to 8."""
    recording.event(
        "statement",
        {
            "sql": "SELECT id, total FROM orders WHERE id = $1",
            "params": [{"type": "int4", "value": "42"}],
            "class": "read",
            "reasons": ["SELECT is read-only"],
            "decision": "allow",
        },
    )
    recording.event("result", {"tag": "SELECT 1", "rows": 1, "duration_s": 0.0031})
    recording.event(
        "statement",
        {
            "sql": "UPDATE orders SET status = 'shipped' WHERE id = $1",
            "params": [{"type": "int4", "value": "42"}],
            "class": "write",
            "reasons": ["UPDATE modifies data"],
            "decision": "approve",
            "approval_id": "apr_5d1c0e9a2b7f",
        },
    )
    recording.event(
        "approval.requested",
        {
            "approval_id": "apr_5d1c0e9a2b7f",
            "approvers": ["oncall-dba"],
            "hold": "wait",
            "timeout_s": 300,
        },
    )
    recording.event(
        "approval.decided",
        {
            "approval_id": "apr_5d1c0e9a2b7f",
            "state": "approved",
            "approver": {"sub": "dba-1", "email": "dba@example.com", "groups": ["oncall-dba"]},
            "scope": "statement",
            "ttl_s": None,
            "comment": "ticket OPS-123",
        },
    )
    recording.flush()
    recording.event("result", {"tag": "UPDATE 1", "rows": 1, "duration_s": 0.0112})
    recording.event(
        "statement",
        {
            "sql": "DROP TABLE orders",
            "params": [],
            "class": "ddl",
            "reasons": ["DROP changes the schema"],
            "decision": "deny",
        },
    )
    recording.event(
        "result",
        {"sqlstate": "42501", "message": "ddl statements are denied", "duration_s": 0.0002},
    )


END = {
    "reason": "client closed the connection",
    "totals": {"statements": 3, "held": 1, "denied": 1, "errors": 1},
}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def recorder(tmp_path: Path, key: SigningKey) -> Recorder:
    return Recorder(tmp_path / "data", key, clock=Clock())


@pytest.fixture
def sealed(recorder: Recorder) -> Path:
    """A whole session, sealed: events 0 (start) to 9 (end), then the seal."""
    recording = recorder.open(SESSION, start_data())
    record_session(recording)
    recording.seal(END)
    return recording.path


def chunks(path: Path) -> list[bytes]:
    """The file's records as raw bytes, in order (the seal last)."""
    read = read_transcript(path)
    offsets = [e.offset for e in read.events]
    if read.seal is not None:
        offsets.append(read.seal.offset)
    raw = path.read_bytes()
    return [raw[a:b] for a, b in zip(offsets, [*offsets[1:], len(raw)], strict=True)]


def problems(path: Path, key: SigningKey) -> list[str]:
    return verify(path, key.public_key).problems


# --- the format --------------------------------------------------------------------------------


def test_the_file_is_a_hash_chain_of_msgpack_events_and_a_signed_seal(
    sealed: Path, key: SigningKey
) -> None:
    assert sealed.parent.parent.name == "transcripts"
    assert sealed.parent.name == "2020-09-13"
    assert sealed.name == SESSION + ".airlock"
    records = chunks(sealed)
    assert len(records) == 11
    previous = "0" * 64
    for seq, raw in enumerate(records[:-1]):
        record = msgpack.unpackb(raw)
        assert list(record) == ["seq", "ts", "kind", "data", "prev"]
        assert record["seq"] == seq
        assert record["prev"] == previous
        previous = hashlib.sha256(raw).hexdigest()
    first = msgpack.unpackb(records[0])
    assert first["kind"] == "session.start"
    assert first["ts"] == START_TS
    assert first["data"] == {"session_id": SESSION, "format": 2, **start_data()}
    assert msgpack.unpackb(records[-2])["data"] == END
    seal = msgpack.unpackb(records[-1])["seal"]
    assert seal["last"] == previous
    assert seal["seq"] == 9
    assert seal["key_id"] == key.key_id
    message = b"airlock transcript seal v1\x00" + f"{SESSION}\x00{previous}\x009".encode()
    assert seal_message(SESSION, previous, 9) == message
    assert signing.verify(key.public_key, seal["sig"], message)


def test_transcripts_are_private(sealed: Path) -> None:
    assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
    assert stat.S_IMODE(sealed.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(sealed.parent.parent.stat().st_mode) == 0o700


def test_the_start_event_keeps_the_writers_session_id_and_format(recorder: Recorder) -> None:
    recording = recorder.open("s1", {"session_id": "other", "format": 9, "target": "orders"})
    recording.flush()
    start = read_transcript(recording.path).events[0].data
    assert start == {"session_id": "s1", "format": 2, "target": "orders"}


# --- verification: intact, tampered, unsealed -------------------------------------------------


def test_an_intact_sealed_transcript_verifies(sealed: Path, key: SigningKey) -> None:
    result = verify(sealed, key.public_key)
    assert result == VerifyResult(ok=True, sealed=True, events=10, problems=[], intact=10)
    assert result.status == "valid"


def test_one_byte_edited_inside_an_event_names_that_event(sealed: Path, key: SigningKey) -> None:
    raw = sealed.read_bytes()
    at = raw.index(b"UPDATE orders SET status = 'shipped'") + len("UPDATE orders SET status = '")
    sealed.write_bytes(raw[:at] + b"S" + raw[at + 1 :])
    result = verify(sealed, key.public_key)
    assert not result.ok
    assert result.problems == ["event 3: altered (its hash does not match the link in event 4)"]
    assert result.status == "invalid"


def test_an_edit_to_the_last_event_breaks_the_seal(sealed: Path, key: SigningKey) -> None:
    raw = sealed.read_bytes()
    sealed.write_bytes(
        raw.replace(b"client closed the connection", b"client closed the c0nnection")
    )
    assert problems(sealed, key) == ["event 9: altered (its hash does not match the seal)"]


def test_an_edit_that_makes_a_record_undecodable_stops_there(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    broken = bytearray(records[4])
    broken[0] = 0xC1  # "never used" in msgpack
    sealed.write_bytes(b"".join([*records[:4], bytes(broken), *records[5:]]))
    offset = sum(len(r) for r in records[:4])
    result = verify(sealed, key.public_key)
    assert result.problems == [
        f"event 4: undecodable record at byte {offset}; nothing after it can be read"
    ]
    assert (result.sealed, result.events) == (False, 4)


def test_a_deleted_event_is_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    sealed.write_bytes(b"".join(records[:4] + records[5:]))
    assert problems(sealed, key) == ["event 4: missing (deleted) before event 5"]


def test_deleted_events_at_the_start_are_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    sealed.write_bytes(b"".join(records[2:]))
    assert problems(sealed, key) == [
        "events 0 to 1: missing (deleted) before event 2",
        "event 2: not a session start",
    ]


def test_two_swapped_events_are_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    records[3], records[4] = records[4], records[3]
    sealed.write_bytes(b"".join(records))
    assert problems(sealed, key) == ["events 3 and 4: swapped (reordered)"]


def test_an_event_moved_elsewhere_is_out_of_order(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    moved = records.pop(2)
    records.insert(6, moved)
    sealed.write_bytes(b"".join(records))
    found = problems(sealed, key)
    assert found[0] == "event 3: out of order (it follows event 2, found after event 1)"
    assert any(p.startswith("event 2: out of order") for p in found)


def test_a_copied_event_is_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    records.insert(4, records[3])
    sealed.write_bytes(b"".join(records))
    assert problems(sealed, key)[0].startswith("event 3: duplicated (a second copy at byte ")


def test_an_edited_sequence_number_is_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    assert records[5][:6] == b"\x85\xa3seq\x05"
    records[5] = b"\x85\xa3seq\x07" + records[5][6:]
    sealed.write_bytes(b"".join(records))
    assert problems(sealed, key) == [
        "event 5: altered (its sequence number reads 7)",
        "event 5: altered (its hash does not match the link in event 6)",
    ]


def test_the_tail_cut_mid_record_is_truncated_without_a_seal(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    kept = b"".join(records[:7])
    sealed.write_bytes(kept + records[7][:10])
    result = verify(sealed, key.public_key)
    assert result.problems == [
        f"truncated after event 6: incomplete record at byte {len(kept)} "
        f"({len(records[7][:10])} bytes) (no seal)"
    ]
    # A gateway killed mid-write can leave this too: no seal, events up to 6 intact.
    assert (result.ok, result.sealed, result.events, result.status) == (
        False,
        False,
        7,
        "unsealed",
    )


def test_the_tail_cut_on_a_record_boundary_is_unsealed(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    sealed.write_bytes(b"".join(records[:7]))
    result = verify(sealed, key.public_key)
    assert result.status == "unsealed"
    assert result.problems[0].startswith("unsealed: 7 events intact (0 to 6); no seal")


def test_removing_events_before_the_seal_is_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    sealed.write_bytes(b"".join([*records[:8], records[-1]]))
    assert problems(sealed, key) == [
        "events 8 to 9: missing (removed from the end; the seal covers event 9)"
    ]


def test_rewriting_the_chain_after_an_edit_fails_the_signature(
    sealed: Path, key: SigningKey
) -> None:
    """Whoever edits an event and recomputes every later hash still cannot re-sign."""
    read = read_transcript(sealed)
    previous = "0" * 64
    rewritten = []
    for event in read.events:
        data = dict(event.data)
        if event.seq == 7:
            data["sql"] = "SELECT 1"
        raw = msgpack.packb(
            {"seq": event.seq, "ts": event.ts, "kind": event.kind, "data": data, "prev": previous}
        )
        rewritten.append(raw)
        previous = hashlib.sha256(raw).hexdigest()
    assert read.seal is not None
    seal = {"last": previous, "seq": 9, "key_id": read.seal.key_id, "sig": read.seal.sig}
    sealed.write_bytes(b"".join([*rewritten, msgpack.packb({"seal": seal})]))
    assert problems(sealed, key) == ["seal: signature invalid"]


def test_a_transcript_sealed_by_another_key_fails(sealed: Path, key: SigningKey) -> None:
    other = SigningKey.generate()
    result = verify(sealed, other.public_key)
    assert (result.ok, result.sealed, result.status) == (False, True, "invalid")
    assert result.problems == [f"seal: signed by another key ({key.key_id}, not {other.key_id})"]


def test_a_seal_claiming_the_right_key_id_needs_the_right_signature(
    sealed: Path, key: SigningKey
) -> None:
    records = chunks(sealed)
    seal = msgpack.unpackb(records[-1])
    seal["seal"]["sig"] = SigningKey.generate().sign(b"anything")
    sealed.write_bytes(b"".join([*records[:-1], msgpack.packb(seal)]))
    assert problems(sealed, key) == ["seal: signature invalid"]


def test_records_after_the_seal_are_named(sealed: Path, key: SigningKey) -> None:
    records = chunks(sealed)
    sealed.write_bytes(b"".join([*records, records[1]]))
    assert problems(sealed, key) == [
        f"seal: a record after the seal, at byte {sum(map(len, records))} "
        "(added after the session was sealed)"
    ]


def test_a_renamed_transcript_is_named(sealed: Path, key: SigningKey) -> None:
    renamed = sealed.with_name("0000aaaa.airlock")
    sealed.rename(renamed)
    assert problems(renamed, key) == [f"event 0: names session {SESSION}, the file 0000aaaa"]


def test_an_empty_file_is_not_valid(tmp_path: Path, key: SigningKey) -> None:
    empty = tmp_path / "x.airlock"
    empty.write_bytes(b"")
    assert problems(empty, key) == ["no events: the file is empty", "unsealed: no events"]


def test_no_proper_prefix_of_a_transcript_verifies(sealed: Path, key: SigningKey) -> None:
    """Read whole, then cut at every byte: reading never fails, verifying never passes."""
    raw = sealed.read_bytes()
    seen = 0
    for length in range(len(raw)):
        cut = parse_transcript(raw[:length], sealed)
        result = verify_transcript(cut, key.public_key)
        assert not result.ok, length
        assert result.events >= seen
        seen = result.events
    assert seen == 10


def test_every_single_bit_flip_is_detected_and_still_replays(sealed: Path, key: SigningKey) -> None:
    raw = sealed.read_bytes()
    assert verify_transcript(parse_transcript(raw, sealed), key.public_key).ok
    for position in range(len(raw)):
        altered = bytearray(raw)
        altered[position] ^= 0x01
        flipped = parse_transcript(bytes(altered), sealed)
        assert not verify_transcript(flipped, key.public_key).ok, position
        # What auditors run on a damaged file still works.
        list(render(flipped))
        assert all(json.loads(line) for line in transcript_lines(flipped))


# --- writing: buffering, flushing, sealing ----------------------------------------------------


def test_events_are_not_written_before_flush(recorder: Recorder) -> None:
    recording = recorder.open(SESSION, start_data())
    size = recording.path.stat().st_size
    assert len(read_transcript(recording.path).events) == 1
    recording.event("statement", {"sql": "SELECT 1", "class": "read", "decision": "allow"})
    recording.event("result", {"tag": "SELECT 1", "rows": 1})
    assert recording.path.stat().st_size == size
    recording.flush()
    assert [e.kind for e in read_transcript(recording.path).events] == [
        "session.start",
        "statement",
        "result",
    ]


async def test_the_periodic_flush_writes_within_the_interval(
    tmp_path: Path, key: SigningKey
) -> None:
    recorder = Recorder(tmp_path, key, flush_interval_s=0.05)
    await recorder.start()
    try:
        recording = recorder.open(SESSION, start_data())
        recording.event("statement", {"sql": "SELECT 1", "class": "read", "decision": "allow"})
        # Many intervals (the flush runs in a worker thread, slow on a busy machine); with
        # no periodic flush nothing would be written before the recorder closes.
        await until(
            lambda: len(read_transcript(recording.path).events) == 2, 2.0, "the periodic flush"
        )
    finally:
        await recorder.close()


async def test_close_flushes_but_does_not_seal(tmp_path: Path, key: SigningKey) -> None:
    recorder = Recorder(tmp_path, key, flush_interval_s=60)
    await recorder.start()
    recording = recorder.open(SESSION, start_data())
    record_session(recording)
    await recorder.close()
    result = verify(recording.path, key.public_key)
    assert result.status == "unsealed"
    assert result.problems[0].startswith("unsealed: 9 events intact")


def test_a_killed_gateway_leaves_an_unsealed_transcript_that_verifies_as_far_as_it_goes(
    recorder: Recorder, key: SigningKey
) -> None:
    recording = recorder.open(SESSION, start_data())
    record_session(recording)
    recording.flush()
    # SIGKILL: nothing more is written; the file is read as it was left.
    result = verify(recording.path, key.public_key)
    assert (result.ok, result.sealed, result.events, result.intact) == (False, False, 9, 9)
    assert result.status == "unsealed"
    assert result.problems == [
        "unsealed: 9 events intact (0 to 8); no seal, so events after 8 may be missing "
        "(the gateway stopped before the session ended, or the end of the file was cut)"
    ]


def test_a_sealed_recording_takes_no_more_events(recorder: Recorder) -> None:
    recording = recorder.open(SESSION, start_data())
    recording.seal(END)
    assert recording.sealed
    with pytest.raises(TranscriptError, match="already sealed"):
        recording.event("statement", {"sql": "SELECT 1"})
    assert recorder._recordings() == []


def test_a_seal_left_to_the_recorder_is_written_in_a_worker_thread_and_closes_the_file(
    recorder: Recorder, key: SigningKey
) -> None:
    recording = recorder.open(SESSION, start_data())
    record_session(recording)
    written = recording.path.stat().st_size
    recording.seal(END, flush=False)
    assert recording.sealed
    assert recording.path.stat().st_size == written  # nothing written on the caller's thread
    assert recorder._recordings() == [recording]  # still open until its seal is on disk

    async def seal_soon() -> None:
        recorder.flush_soon(recording)
        await until(lambda: not recorder._recordings(), PATIENCE_S, "the seal on disk")

    asyncio.run(seal_soon())
    assert recorder._recordings() == []
    assert verify(recording.path, key.public_key).ok


def test_a_transcript_opened_for_a_login_that_gave_up_is_sealed_as_such(
    recorder: Recorder, key: SigningKey
) -> None:
    async def login_gives_up() -> None:
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, recorder.open, SESSION, start_data())
        await asyncio.wait([opening])
        seal_abandoned(recorder, opening)
        await until(lambda: not recorder._recordings(), PATIENCE_S, "the seal on disk")

    asyncio.run(login_gives_up())
    [path] = (recorder.directory).rglob(f"{SESSION}.airlock")
    assert verify(path, key.public_key).ok
    [*_, end] = read_transcript(path).events
    assert end.kind == "session.end"
    assert end.data["reason"] == "the session ended during login"


def test_values_msgpack_cannot_hold_are_refused_before_anything_changes(
    recorder: Recorder, key: SigningKey
) -> None:
    recording = recorder.open(SESSION, start_data())
    with pytest.raises(TypeError, match="cannot record a object"):
        recording.event("statement", {"sql": object()})
    recording.seal(END)
    assert verify(recording.path, key.public_key).ok


# --- failing closed ----------------------------------------------------------------------------


def test_a_file_where_the_transcripts_directory_belongs_refuses_sessions(
    tmp_path: Path, key: SigningKey
) -> None:
    (tmp_path / "transcripts").write_text("not a directory")
    recorder = Recorder(tmp_path, key)
    with pytest.raises(TranscriptError) as refused:
        recorder.open(SESSION, start_data())
    assert str(refused.value) == (
        f"cannot record the session: {tmp_path / 'transcripts'}: "
        "a file is in the way: it is not a directory"
    )


def test_a_data_dir_that_is_a_file_refuses_sessions(tmp_path: Path, key: SigningKey) -> None:
    (tmp_path / "data").write_text("")
    with pytest.raises(TranscriptError, match="not a directory"):
        Recorder(tmp_path / "data", key).open(SESSION, start_data())


def half_then_disk_full(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make transcript writes write half their bytes, then fail as a full disk does."""
    calls: list[int] = []

    def write(fd: int, raw: bytes) -> None:
        calls.append(len(raw))
        os.write(fd, raw[: len(raw) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer, "_write_all", write)
    return calls


def test_a_full_disk_refuses_new_sessions_and_leaves_no_file(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    half_then_disk_full(monkeypatch)
    with pytest.raises(TranscriptError, match="No space left on device") as refused:
        recorder.open(SESSION, start_data())
    assert str(refused.value).startswith("cannot record the session: cannot write the transcript")
    assert list(recorder.directory.glob("*/*")) == []
    assert recorder._recordings() == []


def test_a_failed_flush_is_cut_back_and_retried_whole(
    recorder: Recorder, key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = recorder.open(SESSION, start_data())
    size = recording.path.stat().st_size
    recording.event("statement", {"sql": "UPDATE t SET a = 1", "class": "write"})
    with monkeypatch.context() as patched:
        calls = half_then_disk_full(patched)
        with pytest.raises(TranscriptError, match="No space left on device"):
            recording.flush()
        assert calls
        # Half a record would make everything after it unreadable: it was cut off.
        assert recording.path.stat().st_size == size
        recording.event("result", {"tag": "UPDATE 1", "rows": 1})
        with pytest.raises(TranscriptError):
            recording.seal(END)
        assert recording.path.stat().st_size == size
    recorder.flush_all()  # the periodic flush, once the disk has room again
    assert recording.path.stat().st_size > size
    assert verify(recording.path, key.public_key).ok
    assert recorder._recordings() == []


def test_every_failed_write_is_counted_and_told_to_the_session_from_the_writing_thread(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    recording = recorder.open(SESSION, start_data())
    told: list[tuple[str, str]] = []
    recording.on_write_failed = lambda error: told.append(
        (str(error), threading.current_thread().name)
    )
    recording.event("statement", {"sql": "SELECT 1", "class": "read"})
    recorder.flush_all()
    assert (recorder.write_failures, told) == (0, [])
    recording.event("statement", {"sql": "UPDATE t SET a = 1", "class": "write"})
    with monkeypatch.context() as patched:
        half_then_disk_full(patched)
        with pytest.raises(TranscriptError):
            recording.flush()  # the session's own flush, before it forwards a write
        worker = threading.Thread(target=recorder.flush_all, name="flusher")
        worker.start()  # the Recorder's periodic flush, retrying
        worker.join()
    assert recorder.write_failures == 2
    assert [thread for _, thread in told] == [threading.current_thread().name, "flusher"]
    assert all("No space left on device" in message for message, _ in told)
    recorder.flush_all()  # room again: written whole, nothing more told
    assert (recorder.write_failures, len(told)) == (2, 2)
    events = read_transcript(recording.path).events
    assert [e.data.get("sql") for e in events[1:]] == ["SELECT 1", "UPDATE t SET a = 1"]


def test_the_same_session_id_twice_is_refused(recorder: Recorder) -> None:
    recorder.open(SESSION, start_data())
    with pytest.raises(TranscriptError, match="already has a transcript"):
        recorder.open(SESSION, start_data())


@pytest.mark.parametrize("session_id", ["", "../etc", "a/b", ".hidden", "x" * 200])
def test_session_ids_that_cannot_name_a_file_are_refused(
    recorder: Recorder, session_id: str
) -> None:
    with pytest.raises(TranscriptError, match="cannot name a transcript file"):
        recorder.open(session_id, start_data())


# --- the signing key ---------------------------------------------------------------------------


def test_the_key_is_created_once_private_with_its_public_half_beside_it(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    private = tmp_path / "keys" / "transcript_ed25519.pem"
    public = tmp_path / "keys" / "transcript_ed25519.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(private.parent.stat().st_mode) == 0o700
    assert public.read_text() == key.public_key_pem()
    assert key.public_key_pem().startswith("-----BEGIN PUBLIC KEY-----")
    assert signing.load_or_create(tmp_path).key_id == key.key_id
    assert signing.key_id(signing.load_public_key(tmp_path)) == key.key_id
    public.unlink()
    assert signing.key_id(signing.load_public_key(tmp_path)) == key.key_id
    assert [p.name for p in private.parent.iterdir()] == [private.name]


def test_signatures_verify_only_with_the_signing_key() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    signature = key.sign(b"data")
    assert signing.verify(key.public_key, signature, b"data")
    assert not signing.verify(key.public_key, signature, b"date")
    assert not signing.verify(other.public_key, signature, b"data")
    assert key.key_id.startswith("ed25519:")
    assert len(key.key_id) == len("ed25519:") + 16


def test_reading_a_key_never_creates_one(tmp_path: Path) -> None:
    with pytest.raises(signing.SigningKeyError, match="no transcript signing key in"):
        signing.load_public_key(tmp_path)
    assert not (tmp_path / "keys").exists()


def test_a_key_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "transcript_ed25519.pem").write_text("garbage")
    with pytest.raises(signing.SigningKeyError, match="not an unencrypted PEM private key"):
        signing.load_or_create(tmp_path)


# --- replay ------------------------------------------------------------------------------------


def test_replay_reads_like_a_terminal_transcript(sealed: Path) -> None:
    lines = list(render(read_transcript(sealed)))
    assert lines == [
        f"session {SESSION}, 2020-09-13 (times UTC)",
        "12:26:40.000  agent-1 → orders  session start (postgres)  agent-1@example.com; "
        "groups data-agents",
        "              from 10.0.0.5:51234, TLSv1.3 TLS_AES_256_GCM_SHA384, policy sha256:1a2b3c4d",
        "              token 7f3e2a, expires 2020-09-13 13:26:40Z, "
        "issuer https://example.okta.com/oauth2/default",
        "12:26:40.250  agent-1 → orders  read   SELECT id, total FROM orders WHERE id = $1  "
        "[allow]",
        "              $1 = 42 (int4)",
        "12:26:40.500    ← SELECT 1 (1 row, 3.1 ms)",
        "12:26:40.750  agent-1 → orders  write  UPDATE orders SET status = 'shipped' "
        "WHERE id = $1  [held: apr_5d1c0e9a2b7f]",
        "              because UPDATE modifies data",
        "              $1 = 42 (int4)",
        "12:26:41.000    approval apr_5d1c0e9a2b7f requested (approvers oncall-dba; wait up to 5m)",
        "12:26:41.250    approval apr_5d1c0e9a2b7f approved by dba-1 <dba@example.com> "
        '(scope statement): "ticket OPS-123"',
        "12:26:41.500    ← UPDATE 1 (1 row, 11.2 ms)",
        "12:26:41.750  agent-1 → orders  ddl    DROP TABLE orders  [denied]",
        "              because DROP changes the schema",
        "12:26:42.000    ← error 42501: ddl statements are denied (0.2 ms)",
        "12:26:42.250  session end: client closed the connection "
        "(statements 3, held 1, denied 1, errors 1)",
    ]


def test_replay_escapes_what_could_redraw_the_terminal(recorder: Recorder) -> None:
    recording = recorder.open(SESSION, start_data())
    recording.event(
        "statement",
        {"sql": "SELECT 1\x1b[2J\u202e", "class": "read", "decision": "allow"},
    )
    recording.flush()
    line = list(render(read_transcript(recording.path)))[-1]
    assert line.endswith("SELECT 1\\x1b[2J\\u202e  [allow]")


def test_replay_paces_at_n_times_the_recorded_speed(sealed: Path) -> None:
    pauses: list[float] = []
    list(render(read_transcript(sealed), speed=10, sleep=pauses.append))
    assert pauses == pytest.approx([0.025] * 9)
    pauses.clear()
    list(render(read_transcript(sealed), sleep=pauses.append))
    assert pauses == []


def test_replay_marks_a_new_day(tmp_path: Path, key: SigningKey) -> None:
    recorder = Recorder(tmp_path, key, clock=Clock(START_TS + 39_600, step_s=3600))
    recording = recorder.open(SESSION, start_data())
    recording.seal(END)
    lines = list(render(read_transcript(recording.path)))
    assert "-- 2020-09-14" in lines


def test_replay_shows_denials_grants_expiry_and_unknown_kinds(recorder: Recorder) -> None:
    recording = recorder.open(SESSION, start_data())
    recording.event(
        "statement",
        {"sql": "UPDATE t SET a = 2", "class": "write", "decision": "allow", "grant": "apr_1"},
    )
    recording.event(
        "approval.decided",
        {"approval_id": "apr_2", "state": "denied", "approver": "dba-2", "reason": "no"},
    )
    recording.event("approval.decided", {"approval_id": "apr_3", "state": "expired"})
    recording.event("grant.used", {"approval_id": "apr_1"})
    recording.flush()
    lines = list(render(read_transcript(recording.path)))[-4:]
    assert lines[0].endswith("write  UPDATE t SET a = 2  [allow: grant apr_1]")
    assert lines[1].endswith('approval apr_2 denied by dba-2: "no"')
    assert lines[2].endswith("approval apr_3 expired")
    assert lines[3].endswith('grant.used  {"approval_id": "apr_1"}')


# --- finding sessions and export --------------------------------------------------------------


def three_sessions(tmp_path: Path, key: SigningKey) -> Path:
    for number, (sub, target, start) in enumerate(
        [
            ("agent-1", "orders", START_TS),
            ("agent-2", "shop", START_TS + 86_400),
            ("agent-1", "shop", START_TS + 2 * 86_400),
        ]
    ):
        recorder = Recorder(tmp_path, key, clock=Clock(start))
        recording = recorder.open(f"s{number}", start_data(sub, target))
        recording.event("statement", {"sql": "SELECT 1", "class": "read", "decision": "allow"})
        if number < 2:
            recording.seal(END)
        else:
            recording.flush()
    return tmp_path


def test_sessions_are_found_by_identity_target_and_time(tmp_path: Path, key: SigningKey) -> None:
    data_dir = three_sessions(tmp_path, key)

    def ids(**filters: Any) -> list[str]:
        return [s.session_id for s in find_sessions(data_dir, **filters)]

    assert ids() == ["s0", "s1", "s2"]
    assert ids(identity="agent-1") == ["s0", "s2"]
    assert ids(identity="AGENT-2@example.com") == ["s1"]
    assert ids(target="shop") == ["s1", "s2"]
    assert ids(identity="agent-1", target="shop") == ["s2"]
    assert ids(since=START_TS + 86_400) == ["s1", "s2"]
    first, _, last = find_sessions(data_dir)
    assert (first.subject, first.target, first.statements, first.sealed) == (
        "agent-1",
        "orders",
        1,
        True,
    )
    assert (first.started_at, first.ended_at, first.end_reason) == (
        START_TS,
        START_TS + 0.5,
        "client closed the connection",
    )
    assert (last.sealed, last.ended_at, last.end_reason) == (False, None, None)


def test_export_is_one_json_line_per_event_since_a_time(tmp_path: Path, key: SigningKey) -> None:
    data_dir = three_sessions(tmp_path, key)
    lines = [json.loads(line) for line in export_lines(data_dir, None)]
    assert [(d["session_id"], d["kind"]) for d in lines] == [
        ("s0", "session.start"),
        ("s0", "statement"),
        ("s0", "session.end"),
        ("s0", "session.sealed"),
        ("s1", "session.start"),
        ("s1", "statement"),
        ("s1", "session.end"),
        ("s1", "session.sealed"),
        ("s2", "session.start"),
        ("s2", "statement"),
    ]
    assert lines[1]["time"] == "2020-09-13T12:26:40.250Z"
    assert lines[1]["data"] == {"sql": "SELECT 1", "class": "read", "decision": "allow"}
    assert lines[1]["prev"] == lines[0]["hash"]
    later = [json.loads(line) for line in export_lines(data_dir, START_TS + 86_400.1)]
    assert [(d["session_id"], d["seq"]) for d in later] == [
        ("s1", 1),
        ("s1", 2),
        ("s1", 2),
        ("s2", 0),
        ("s2", 1),
    ]


def test_export_shows_bytes_as_base64(recorder: Recorder, tmp_path: Path) -> None:
    recording = recorder.open(SESSION, start_data())
    recording.event("statement", {"params": [{"type": "bytea", "value": b"\x00\xff"}]})
    recording.flush()
    last = list(export_lines(tmp_path / "data", None))[-1]
    assert json.loads(last)["data"]["params"][0]["value"] == {"$base64": "AP8="}


def test_maps_with_keys_other_than_strings_read_back_and_export(
    recorder: Recorder, tmp_path: Path, key: SigningKey
) -> None:
    recording = recorder.open(SESSION, start_data())
    recording.event("custom", {"by_oid": {23: "int4"}, "raw": {b"k": None}})
    recording.seal(END)
    assert verify(recording.path, key.public_key).ok
    custom = json.loads(list(export_lines(tmp_path / "data", None))[1])
    assert custom["data"] == {"by_oid": {"23": "int4"}, "raw": {'{"$base64": "aw=="}': None}}
    line = list(render(read_transcript(recording.path)))[4]
    assert line == (
        '12:26:40.250  custom  {"by_oid": {"23": "int4"}, '
        '"raw": {"{\\"$base64\\": \\"aw==\\"}": null}}'
    )


def test_finding_a_transcript_by_id_prefix_or_path(tmp_path: Path, key: SigningKey) -> None:
    data_dir = three_sessions(tmp_path, key)
    path = find_transcript(data_dir, "s1")
    assert path.name == "s1.airlock"
    assert find_transcript(data_dir, str(path)) == path
    with pytest.raises(LookupError, match="s matches 3 sessions: s0, s1, s2"):
        find_transcript(data_dir, "s")
    with pytest.raises(LookupError, match="no session zz under"):
        find_transcript(data_dir, "zz")
    with pytest.raises(LookupError, match="neither a session id nor a transcript file"):
        find_transcript(data_dir, "*")


# --- the PostgreSQL session's own shapes -------------------------------------------------------


def raw_bind(*values: bytes | None, formats: tuple[int, ...] = ()) -> bytes:
    """A PostgreSQL Bind message, as the relay records it."""
    body = b"\x00\x00" + struct.pack("!h", len(formats))
    body += b"".join(struct.pack("!h", f) for f in formats)
    body += struct.pack("!h", len(values))
    for value in values:
        body += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    body += struct.pack("!h", 0)
    return b"B" + struct.pack("!i", len(body) + 4) + body


def test_replay_reads_what_the_postgres_session_records(recorder: Recorder) -> None:
    start = start_data()
    del start["tls"]
    start["client"] = {
        "address": "10.0.0.5",
        "port": 51234,
        "tls": True,
        "application_name": "psql",
    }
    bind = raw_bind(b"shipped", struct.pack("!i", 42), formats=(0, 1))
    recording = recorder.open(SESSION, start)
    recording.event(
        "approval.requested",
        {
            "id": "apr_1",
            "sql": "UPDATE orders SET status = $1 WHERE id = $2",
            "parameters": [{"type": "text", "value": "shipped", "format": "text"}],
            "class": "write",
            "hold": "wait",
            "approver_groups": ["oncall-dba"],
        },
    )
    recording.event(
        "approval.decided",
        {
            "id": "apr_1",
            "state": "approved",
            "by": "dba-1",
            "groups": ["oncall-dba"],
            "at": START_TS + 1,
            "scope": "session",
            "expires_at": START_TS + 601,
            "comment": None,
            "reason": None,
        },
    )
    recording.event(
        "statement",
        {
            "sql": "UPDATE orders SET status = $1 WHERE id = $2",
            "class": "write",
            "reasons": ["UPDATE modifies data"],
            "decision": "approved by dba-1 (apr_1)",
            "bind": bind,
            "types": [25, 23],
        },
    )
    recording.event("result", {"tag": "UPDATE 1"})
    recording.event("statement", {"sql": "SELECT x", "class": "read", "decision": "allow"})
    recording.event("result", {"error": {"sqlstate": "42703", "message": 'column "x" missing'}})
    recording.event("statement", {"sql": "SELECT 1", "bind": b"garbage", "types": []})
    recording.seal({"reason": "client closed the connection", "error": None, "statements": 3})
    lines = list(render(read_transcript(recording.path)))
    assert (
        lines[2]
        == "              from 10.0.0.5:51234, TLS, application psql, policy sha256:1a2b3c4d"
    )
    assert lines[4:] == [
        "12:26:40.250    approval apr_1 requested for write UPDATE orders SET status = $1 "
        "WHERE id = $2 (approvers oncall-dba; hold wait)",
        "12:26:40.500    approval apr_1 approved by dba-1 (oncall-dba) "
        "(scope session, until 2020-09-13 12:36:41Z)",
        "12:26:40.750  agent-1 → orders  write  UPDATE orders SET status = $1 WHERE id = $2  "
        "[approved by dba-1 (apr_1)]",
        "              because UPDATE modifies data",
        "              $1 = 'shipped' (text)",
        "              $2 = 42 (int4)",
        "12:26:41.000    ← UPDATE 1",
        "12:26:41.250  agent-1 → orders  read   SELECT x  [allow]",
        '12:26:41.500    ← error 42703: column "x" missing',
        "12:26:41.750  agent-1 → orders  ?      SELECT 1  [?]",
        "              $1 = 67617262616765 (raw Bind message, hex)",
        "12:26:42.000  session end: client closed the connection (3 statements)",
    ]
    exported = [json.loads(line) for line in transcript_lines(read_transcript(recording.path))]
    assert exported[3]["params"] == [
        {"type": "text", "value": "shipped", "format": "text"},
        {"type": "int4", "value": "42", "format": "text"},
    ]
    assert exported[3]["data"]["bind"] == {"$base64": base64.b64encode(bind).decode()}


# --- the session ledger ------------------------------------------------------------------------


def test_every_session_is_listed_in_a_signed_chained_ledger(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    ids = [f"{n:032x}" for n in (1, 2, 3)]
    for number, session_id in enumerate(ids):
        # A new Recorder (a gateway restart) goes on with the chain on disk.
        recorder = Recorder(tmp_path, key, clock=Clock(START_TS + number))
        recorder.open(session_id, start_data()).seal(END)
    result = verify_ledger(transcripts_dir(tmp_path), key.public_key)
    assert result is not None
    assert result.ok
    # Each start, then (once written) its transcript's seal.
    assert [(e.seq, e.session_id) for e in result.entries] == [
        (0, ids[0]),
        (2, ids[1]),
        (4, ids[2]),
    ]
    assert sorted(result.seals) == ids
    assert all(e.path == f"2020-09-13/{e.session_id}.airlock" for e in result.entries)


def test_a_ledger_that_does_not_read_back_refuses_new_sessions(tmp_path: Path) -> None:
    key = signing.load_or_create(tmp_path)
    Recorder(tmp_path, key, clock=Clock(START_TS)).open("a" * 32, start_data()).seal(END)
    ledger = transcripts_dir(tmp_path) / "ledger.airlock"
    ledger.write_bytes(ledger.read_bytes() + b"\xc1 not msgpack")
    with pytest.raises(TranscriptError, match=r"ledger\.airlock: unreadable"):
        Recorder(tmp_path, key, clock=Clock(START_TS)).open("b" * 32, start_data())
    # Refused whole: no transcript is left behind for the refused session.
    assert not list(tmp_path.glob("transcripts/*/" + "b" * 32 + ".airlock"))
