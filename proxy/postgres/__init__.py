"""The PostgreSQL session: its gate (the state machine of the server's session), relay,
login (startup) and upstream connections."""
