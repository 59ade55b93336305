"""docs/verify_transcript.py, the auditor's standalone check (msgpack, hashlib and
cryptography only), agrees with Airlock on transcripts both versions of the writer made."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from proxy.recording.signing import load_or_create, public_key_path
from proxy.recording.writer import Recorder

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "docs" / "verify_transcript.py"
FIXTURES = Path(__file__).parent / "fixtures" / "v1"


def run(*args: Path) -> subprocess.CompletedProcess[str]:
    # -I: isolated, so nothing of Airlock (the repository, the working directory) is on
    # the path; only the installed msgpack and cryptography.
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )


@pytest.mark.parametrize("protocol", ["postgres", "mysql"])
def test_version_1_fixtures_verify_with_their_ledger(protocol: str) -> None:
    data_dir = FIXTURES / protocol
    key = data_dir / "keys" / "transcript_ed25519.pub.pem"
    ledger = data_dir / "transcripts" / "ledger.airlock"
    transcripts = sorted((data_dir / "transcripts").glob("*/*.airlock"))
    assert transcripts
    for path in transcripts:
        checked = run(path, key, ledger)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.startswith("valid: ")


def written_now(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A transcript the current writer made: (transcript, public key, ledger)."""
    key = load_or_create(tmp_path)
    recorder = Recorder(tmp_path, key, clock=lambda: 1_800_000_000.0)
    recording = recorder.open("s1", {"protocol": "postgres", "target": "orders"})
    recording.statement("select $1", "read", "allow", b"B\x00\x00\x00\x04", ())
    recording.result_tag("SELECT 1")
    recording.event("approval.requested", {"id": "apr_1", "sql": "delete from t"})
    recording.seal({"reason": "client closed", "error": None, "statements": 1})
    return recording.path, public_key_path(tmp_path), tmp_path / "transcripts" / "ledger.airlock"


def test_a_version_2_transcript_verifies(tmp_path: Path) -> None:
    transcript, key, ledger = written_now(tmp_path)
    checked = run(transcript, key, ledger)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("valid: 5 events")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda raw: raw.replace(b"delete from t", b"delete from u"), "altered"),
        (lambda raw: raw[:-20], "unreadable record"),
        (lambda raw: raw + b"\x80", "a record after the seal"),
    ],
)
def test_a_changed_transcript_does_not(tmp_path: Path, change: object, problem: str) -> None:
    transcript, key, _ledger = written_now(tmp_path)
    assert callable(change)
    transcript.write_bytes(change(transcript.read_bytes()))
    checked = run(transcript, key)
    assert checked.returncode == 1
    assert problem in checked.stdout


def test_a_ledger_that_does_not_list_the_session_fails(tmp_path: Path) -> None:
    transcript, key, _ledger = written_now(tmp_path)
    other = FIXTURES / "postgres" / "transcripts" / "ledger.airlock"
    # Signed by another key, and not listing s1 either way.
    checked = run(transcript, key, other)
    assert checked.returncode == 1
    assert "ledger record 0: signature invalid" in checked.stdout
