"""PostgreSQL frontend/backend protocol 3.0, sans-I/O.

https://www.postgresql.org/docs/current/protocol.html
"""
