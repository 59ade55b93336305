"""Sessions as a gateway serves them to auditors: from the shared store when there is
one (every gateway's sealed transcripts, store_pg.TranscriptStore), and from its own
data_dir (its sessions still open, or sealed and not shipped yet; everything, when
there is no store). Blocking: the API and the web page call these in worker threads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from proxy.approvals.store_pg import TranscriptStore
from proxy.recording import signing
from proxy.recording.format import SUFFIX
from proxy.recording.sessions import (
    SessionSummary,
    find_sessions,
    find_transcript,
    summary_from_row,
)
from proxy.recording.verifier import Transcript, VerifyResult, parse_transcript, verify_transcript


@dataclass(frozen=True, slots=True)
class StoredTranscript:
    """A transcript's bytes as sealed, and the public key of the gateway that sealed it."""

    raw: bytes
    transcript: Transcript
    public_key_pem: str | None
    #: The gateway that shipped it into the store (None: read from this data_dir).
    gateway: str | None

    def origin(self) -> dict[str, Any]:
        seal = self.transcript.seal
        return {
            "gateway": self.gateway,
            "key_id": seal.key_id if seal is not None else None,
            "source": "local" if self.gateway is None else "store",
        }

    def verify(self) -> VerifyResult:
        return verify_with_pem(self.transcript, self.public_key_pem)


def verify_with_pem(transcript: Transcript, public_key_pem: str | None) -> VerifyResult:
    """verify_transcript with a PEM public key; invalid when there is none or it is not
    an Ed25519 key (nothing could then prove who sealed it)."""
    try:
        public_key = public_key_from_pem(public_key_pem)
    except signing.SigningKeyError as error:
        return VerifyResult(
            ok=False,
            sealed=transcript.seal is not None,
            events=len(transcript.events),
            problems=[str(error)],
        )
    return verify_transcript(transcript, public_key)


def public_key_from_pem(pem: str | None) -> Ed25519PublicKey:
    if pem is None:
        raise signing.SigningKeyError("no public key is known for the key that sealed it")
    try:
        key = serialization.load_pem_public_key(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise signing.SigningKeyError("the signer's public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise signing.SigningKeyError("the signer's public key is not an Ed25519 key")
    return key


def list_sessions(
    data_dir: Path,
    transcripts: TranscriptStore | None,
    *,
    identity: str | None = None,
    target: str | None = None,
    since: float | None = None,
) -> list[SessionSummary]:
    """Every session, oldest first: the store's and this data_dir's not in the store."""
    local = find_sessions(data_dir, identity=identity, target=target, since=since)
    if transcripts is None:
        return local
    stored = [
        summary_from_row(row)
        for row in transcripts.summaries(identity=identity, target=target, since=since)
    ]
    shipped = {summary.session_id for summary in stored}
    found = stored + [summary for summary in local if summary.session_id not in shipped]
    found.sort(key=lambda s: (s.started_at or 0.0, s.session_id))
    return found


def find_stored(
    data_dir: Path, transcripts: TranscriptStore | None, session_id: str
) -> StoredTranscript:
    """A session by id (or unique prefix): from the store first, then this data_dir.
    Raises LookupError."""
    if transcripts is not None:
        row = transcripts.sealed(session_id)
        if row is not None:
            raw = bytes(row["transcript"])
            path = Path(row["session_id"] + SUFFIX)
            return StoredTranscript(
                raw, parse_transcript(raw, path), row["public_key_pem"], row["gateway_id"]
            )
    path = find_transcript(data_dir, session_id)
    raw = path.read_bytes()
    try:
        pem: str | None = signing.public_key_pem_of(signing.load_public_key(data_dir))
    except signing.SigningKeyError:
        pem = None
    return StoredTranscript(raw, parse_transcript(raw, path), pem, None)
