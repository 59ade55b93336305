"""Session transcripts: what a session did, as tamper-evident evidence.

- format.py: the file layout and one definition per event kind, with the schema version,
  the one encoder (event_chain.pyx packs the hot-path events in C, held to it) and the one
  decoder (every version's shapes, read as the current definitions).
- writer.py: the Recorder and each session's SessionRecording (writing, flushing,
  sealing, the ledger's records).
- verifier.py: reading a file back and verifying its chain and seal.
- sessions.py: finding transcripts and summarising sessions.
- render.py: replay lines and JSON (replay --json, export, the API).
- parameters.py: bound parameters decoded from the raw messages the relay records.
- event_chain.pyx / event_chain.py: events packed and SHA-256-chained, in C or pure Python.
- ledger.py: each session's start and seal; signing.py: the gateway's Ed25519 key.

docs/transcript-format.md documents the format for auditors.
"""
