"""The statement handlers, by family: queries (and the PostgreSQL operator and type checks
they need), DML, DDL, session settings, transaction control, EXPLAIN/ANALYZE, utility and
administration commands, and MySQL's own statements. Each family module lists the
statements it handles by first word in `COMMON`, `POSTGRES` and `MYSQL` tables, which
`policy.classify.dialects` assembles into each dialect's table."""
