"""Which statements the server itself refuses inside a READ ONLY transaction.

A statement that needs approval is not held when the session is inside a READ ONLY
transaction and the server would refuse it there anyway: it is forwarded, and the agent
gets the server's own error (PostgreSQL 25006, MySQL/MariaDB 1792) at once instead of
waiting for a DBA to approve a statement that cannot run. Pure: no I/O.

Only what the servers are verified to refuse before anything runs counts
(tests/integration/test_read_only_transactions.py runs each against PostgreSQL 15 and
MariaDB 10.11); anything else is held as before (fail closed):

- PostgreSQL: INSERT, UPDATE, DELETE and MERGE (refused as the executor starts, when the
  table written is not temporary: the caller makes sure the session has no temporary
  relation at all), and CREATE, ALTER, DROP, TRUNCATE and COMMENT (refused as the
  utility command starts, temporary or not). Not: a statement that starts with WITH,
  COPY, LOCK, NOTIFY, GRANT or REVOKE (class admin), nextval/setval in a SELECT, EXPLAIN
  ANALYZE, ALTER SYSTEM.
- MySQL/MariaDB: INSERT, UPDATE, DELETE and REPLACE (refused as the tables are locked,
  when the table written is not temporary: the caller makes sure the session cannot
  have one). Not DDL: it commits the transaction implicitly and then runs.

Exactly one statement, whose first word decides; a text the lexers cannot agree on, or
a MySQL text with an executable comment (`/*! ... */`, which the server runs), is held.
"""

from __future__ import annotations

from policy.classify import Lexed, StatementClass, lex
from policy.classify.tokens import split_statements, word_of

#: First words of statements the server refuses in a READ ONLY transaction, by dialect
#: and class, as long as the table written is not temporary.
_DATA_CHANGES = {
    "postgres": frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"}),
    "mysql": frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"}),
}
#: PostgreSQL utility commands refused in a READ ONLY transaction, temporary or not.
_PG_UTILITY = frozenset({"CREATE", "ALTER", "DROP", "TRUNCATE", "COMMENT"})


def refused_in_read_only(sql: str, dialect: str, statement_class: StatementClass) -> bool:
    """Whether the server refuses `sql` (one statement of `statement_class`) in a READ ONLY
    transaction before running any of it, provided the session has no temporary table."""
    if statement_class not in (StatementClass.WRITE, StatementClass.DDL):
        return False
    lexed = lex(sql, dialect)
    if not isinstance(lexed, Lexed):
        return False  # the lexers disagree: unknown
    if dialect == "mysql" and any(c.text.startswith(("/*!", "/*M!")) for c in lexed.comments):
        return False
    statements = split_statements(lexed.tokens)
    if len(statements) != 1:
        return False
    words = [word_of(token) for token in statements[0][:2]]
    first = words[0]
    if first in _DATA_CHANGES.get(dialect, frozenset()):
        return True
    if dialect != "postgres" or first not in _PG_UTILITY:
        return False
    return not (first == "ALTER" and len(words) > 1 and words[1] == "SYSTEM")
