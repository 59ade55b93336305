"""Re-capturing the framework corpora in tests/policy/cases/captured_*.jsonl: the statements
real drivers, ORMs, pools and tools send, recorded on the wire (`wire`) between the real
library and the real server (`capture`). See tests/policy/cases/CAPTURED.md."""
