"""The MySQL session: its relay and gate, login and upstream connections."""
