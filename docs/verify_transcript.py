"""Verify an Airlock transcript without Airlock: msgpack, hashlib and cryptography only.

    python verify_transcript.py SESSION.airlock transcript_ed25519.pub.pem [ledger.airlock]

Checks what docs/transcript-format.md describes: every event's `seq` counts from 0 and
its `prev` is the SHA-256 of the previous event's bytes; the seal names the last event's
hash and seq and carries a valid Ed25519 signature by the given key; nothing follows the
seal. With the ledger, also checks the ledger's chain and signatures and that it lists
the session, and, if it holds the session's seal record, that the record matches.
Prints "valid: N events" and exits 0, or prints the first problem and exits 1.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

ZERO_HASH = "0" * 64


class Invalid(Exception):
    pass


def records(raw: bytes) -> list[tuple[object, bytes]]:
    """Each msgpack record in the file with its exact bytes."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=0)
    unpacker.feed(raw)
    out, offset = [], 0
    while offset < len(raw):
        try:
            record = unpacker.unpack()
        except Exception as error:  # a cut or damaged record
            raise Invalid(f"unreadable record at byte {offset}: {error!r}") from None
        end = unpacker.tell()
        out.append((record, raw[offset:end]))
        offset = end
    return out


def check_signature(key: Ed25519PublicKey, signature: object, message: bytes, what: str) -> None:
    if not isinstance(signature, bytes):
        raise Invalid(f"{what}: no signature")
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise Invalid(f"{what}: signature invalid") from None


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def verify_transcript(path: Path, key: Ed25519PublicKey) -> tuple[str, str, int]:
    """(session id, last event's hash, last event's seq) of a valid, sealed transcript."""
    prev, seq, session_id, seal = ZERO_HASH, 0, None, None
    for record, raw in records(path.read_bytes()):
        if seal is not None:
            raise Invalid("a record after the seal")
        if isinstance(record, dict) and list(record) == ["seal"]:
            seal = record["seal"]
            continue
        if not isinstance(record, dict) or list(record) != ["seq", "ts", "kind", "data", "prev"]:
            raise Invalid(f"event {seq}: not an event")
        if record["seq"] != seq:
            raise Invalid(f"event {seq}: numbered {record['seq']} (events missing or moved)")
        if record["prev"] != prev:
            raise Invalid(f"event {seq}: does not link to the event before (altered)")
        if seq == 0:
            if record["kind"] != "session.start":
                raise Invalid("event 0: not a session start")
            session_id = record["data"].get("session_id")
        prev, seq = hashlib.sha256(raw).hexdigest(), seq + 1
    if seal is None or seq == 0:
        raise Invalid("unsealed: events may be missing from the end")
    if not isinstance(seal, dict) or list(seal) != ["last", "seq", "key_id", "sig"]:
        raise Invalid("malformed seal")
    if seal["key_id"] != key_id(key):
        raise Invalid(f"sealed by another key ({seal['key_id']})")
    if (seal["last"], seal["seq"]) != (prev, seq - 1):
        raise Invalid("the seal does not cover the last event (events cut or altered)")
    if not isinstance(session_id, str) or path.name != f"{session_id}.airlock":
        raise Invalid("the session start does not name this file")
    message = b"airlock transcript seal v1\x00" + b"\x00".join(
        (session_id.encode(), prev.encode(), str(seq - 1).encode())
    )
    check_signature(key, seal["sig"], message, "seal")
    return session_id, prev, seq - 1


def verify_ledger(path: Path, key: Ed25519PublicKey, session: tuple[str, str, int]) -> None:
    """The ledger's chain and signatures, and that it lists (and, once sealed, seals)
    the session as its transcript says."""
    session_id, last, last_seq = session
    prev, listed = ZERO_HASH, False
    for seq, (record, raw) in enumerate(records(path.read_bytes())):
        if not isinstance(record, dict) or record.get("seq") != seq or record.get("prev") != prev:
            raise Invalid(f"ledger record {seq}: altered, missing or out of order")
        fields: tuple[object, ...]
        if record.get("kind") == "seal":
            fields = (seq, record["session_id"], record["last"], record["events"], prev)
            context = b"airlock session ledger seal v1\x00"
            if record["session_id"] == session_id and (record["last"], record["events"]) != (
                last,
                last_seq,
            ):
                raise Invalid("the ledger's seal record does not match the transcript")
        else:
            fields = (seq, record["session_id"], record["path"], prev)
            context = b"airlock session ledger v1\x00"
            listed = listed or record["session_id"] == session_id
        message = context + "\x00".join(str(f) for f in fields).encode()
        check_signature(key, record.get("sig"), message, f"ledger record {seq}")
        prev = hashlib.sha256(raw).hexdigest()
    if not listed:
        raise Invalid(f"the ledger does not list session {session_id}")


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 4):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    key = serialization.load_pem_public_key(Path(argv[2]).read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        print("not an Ed25519 public key", file=sys.stderr)
        return 2
    try:
        session = verify_transcript(Path(argv[1]), key)
        if len(argv) == 4:
            verify_ledger(Path(argv[3]), key, session)
    except Invalid as problem:
        print(f"INVALID: {problem}")
        return 1
    print(f"valid: {session[2] + 1} events, sealed by {key_id(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
