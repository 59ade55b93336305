"""Transcripts written before the schema's version 2 still read, verify and replay.

The fixtures (tests/proxy/fixtures/v1/) are real sessions recorded by the gateway as it
was before this schema: a PostgreSQL one and two MySQL ones, with their ledgers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.recording.format import Result, Statement
from proxy.recording.ledger import verify_ledger
from proxy.recording.render import export_lines, render
from proxy.recording.sessions import transcript_paths
from proxy.recording.signing import load_public_key_file
from proxy.recording.verifier import read_transcript, verify_transcript

FIXTURES = Path(__file__).parent / "fixtures" / "v1"
PROTOCOLS = ("postgres", "mysql")


def public_key(protocol: str) -> object:
    return load_public_key_file(FIXTURES / protocol / "keys" / "transcript_ed25519.pub.pem")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_version_1_transcripts_and_their_ledger_still_verify(protocol: str) -> None:
    data_dir = FIXTURES / protocol
    key = load_public_key_file(data_dir / "keys" / "transcript_ed25519.pub.pem")
    paths = transcript_paths(data_dir)
    assert paths
    for path in paths:
        transcript = read_transcript(path)
        assert transcript.version == 1
        result = verify_transcript(transcript, key)
        assert result.status == "valid", result.problems
    ledger = verify_ledger(data_dir / "transcripts", key)
    assert ledger is not None
    assert ledger.ok, ledger.problems
    assert {e.session_id for e in ledger.entries} == {p.stem for p in paths}
    assert set(ledger.seals) == {p.stem for p in paths}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_version_1_transcripts_export_exactly_as_they_did(protocol: str) -> None:
    expected = (FIXTURES / "expected" / f"{protocol}.export.jsonl").read_text().splitlines()
    assert list(export_lines(FIXTURES / protocol, None)) == expected


def test_a_version_1_postgresql_result_reads_rows_as_a_count_and_the_bodies_as_row_data() -> None:
    [path] = transcript_paths(FIXTURES / "postgres")
    transcript = read_transcript(path)
    results = [transcript.decoded(e) for e in transcript.events if e.kind == "result"]
    assert all(isinstance(r, Result) for r in results)
    first, cut = results[0], results[1]
    assert isinstance(first, Result)
    assert isinstance(cut, Result)
    assert (first.tag, first.rows, first.rows_cut) == ("SELECT 2", 2, False)
    assert first.row_data is not None
    assert len(first.row_data) == 2
    assert first.row_data[0].startswith(b"\x00\x02")  # a DataRow body: two columns
    # Cut short by max_row_bytes: the bodies kept, and no count the file cannot back.
    assert (cut.tag, cut.rows, cut.rows_cut) == ("SELECT 60", None, True)
    replay = "\n".join(render(transcript))
    assert "← SELECT 2 (2 rows)" in replay
    assert "← SELECT 60\n" in replay


def test_version_1_parameters_decode_the_same_way_for_both_protocols() -> None:
    decoded: list[list[tuple[str | None, object]]] = []
    for protocol in PROTOCOLS:
        for path in transcript_paths(FIXTURES / protocol):
            transcript = read_transcript(path)
            for event in transcript.events:
                statement = transcript.decoded(event)
                if isinstance(statement, Statement) and statement.params:
                    decoded.append([(p.type, p.value) for p in statement.params])
    assert decoded == [
        [("int2", "2")],  # PostgreSQL, raw Bind on the hot path
        [("int2", "7"), ("int2", "2")],  # PostgreSQL, held: raw Bind
        [("unsigned tiny", "14")],  # MySQL, raw COM_STMT_EXECUTE on the hot path
        [("unsigned short", "4242"), ("unsigned tiny", "14")],  # MySQL, held: decoded
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_version_1_transcripts_replay_every_event(protocol: str) -> None:
    for path in transcript_paths(FIXTURES / protocol):
        transcript = read_transcript(path)
        lines = list(render(transcript))
        assert lines[0].startswith(f"session {transcript.session_id}")
        assert any("session end:" in line for line in lines)
        assert sum("approval apr_" in line for line in lines) == sum(
            e.kind.startswith("approval.") for e in transcript.events
        )
