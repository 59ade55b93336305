"""Data both servers share: the functions both allow, functions known to have effects,
and the grammar words that may stand before "(" without calling a function."""

from __future__ import annotations

from policy.classify.data import names
from policy.classify.verdicts import ADMIN, UNKNOWN, WRITE, StatementClass

#: Functions that only compute a value: no writes, no locks, no waiting, no file or
#: network access, no other sessions, no SQL text executed. Matched by the name as written
#: (lower case); PostgreSQL also allows the `pg_catalog.` qualifier, MySQL no qualifier.
FUNCTIONS = names(
    """
    abs acos all any array asin atan atan2 avg bit_and bit_count bit_length bit_or bit_xor
    cast ceil exists row some
    ceiling char_length character_length coalesce concat concat_ws cos cot count
    cume_dist current_date current_role current_time current_timestamp current_user
    degrees dense_rank exp extract first_value floor format greatest
    json_array json_arrayagg json_object json_objectagg json_table json_value lag
    last_value lead least left length ln localtime localtimestamp log log10 lower lpad
    ltrim max md5 min mod now nth_value ntile nullif octet_length percent_rank pi
    position power radians rank regexp_instr regexp_like regexp_replace regexp_substr
    repeat replace reverse right round row_number rpad rtrim session_user sign sin sqrt
    stddev stddev_pop stddev_samp substr substring sum tan trim upper var_pop var_samp
    variance version
    """
)

#: Functions known to have effects, with a sharper class and reason than "not allowlisted".
KNOWN_EFFECTS: dict[str, tuple[StatementClass, str]] = {
    **dict.fromkeys(("nextval", "setval"), (WRITE, "changes a sequence")),
    **dict.fromkeys(
        (
            "pg_advisory_lock",
            "pg_advisory_lock_shared",
            "pg_advisory_unlock",
            "pg_advisory_unlock_all",
            "pg_advisory_unlock_shared",
            "pg_advisory_xact_lock",
            "pg_advisory_xact_lock_shared",
            "pg_try_advisory_lock",
            "pg_try_advisory_lock_shared",
            "pg_try_advisory_xact_lock",
            "pg_try_advisory_xact_lock_shared",
            "get_lock",
            "release_lock",
            "release_all_locks",
        ),
        (WRITE, "takes or releases a lock"),
    ),
    **dict.fromkeys(
        ("lo_create", "lo_creat", "lo_from_bytea", "lo_put", "lo_unlink", "lo_truncate"),
        (WRITE, "changes a large object"),
    ),
    "pg_notify": (WRITE, "sends a notification to other sessions"),
    "txid_current": (WRITE, "assigns a transaction id"),
    "pg_current_xact_id": (WRITE, "assigns a transaction id"),
    "set_config": (ADMIN, "changes a server setting"),
    **dict.fromkeys(
        (
            "pg_cancel_backend",
            "pg_terminate_backend",
            "pg_reload_conf",
            "pg_rotate_logfile",
            "pg_switch_wal",
            "pg_create_restore_point",
            "pg_promote",
            "pg_log_backend_memory_contexts",
            "pg_stat_reset",
            "pg_stat_reset_shared",
            "pg_stat_reset_single_table_counters",
            "pg_stat_reset_single_function_counters",
            "pg_stat_reset_slru",
            "pg_stat_reset_replication_slot",
            "pg_stat_statements_reset",
            "pg_backup_start",
            "pg_backup_stop",
            "pg_wal_replay_pause",
            "pg_wal_replay_resume",
            "pg_create_physical_replication_slot",
            "pg_create_logical_replication_slot",
            "pg_drop_replication_slot",
            "pg_import_system_collations",
        ),
        (ADMIN, "acts on the server or other sessions"),
    ),
    **dict.fromkeys(
        (
            "pg_read_file",
            "pg_read_binary_file",
            "pg_stat_file",
            "pg_ls_dir",
            "pg_ls_logdir",
            "pg_ls_waldir",
            "pg_ls_tmpdir",
            "pg_ls_archive_statusdir",
            "pg_ls_logicalmapdir",
            "pg_ls_logicalsnapdir",
            "pg_ls_replslotdir",
            "lo_import",
            "lo_export",
            "load_file",
        ),
        (ADMIN, "reads or writes the server's file system"),
    ),
    **dict.fromkeys(
        (
            "dblink",
            "dblink_exec",
            "dblink_connect",
            "dblink_connect_u",
            "dblink_send_query",
            "query_to_xml",
            "query_to_xmlschema",
            "query_to_xml_and_xmlschema",
            "cursor_to_xml",
            "ts_rewrite",
        ),
        (UNKNOWN, "runs SQL text the gateway cannot see"),
    ),
}

#: Reserved words that start a clause or expression: never a function name.
GRAMMAR_ANYWHERE = names(
    """
    SELECT WHERE HAVING WHEN THEN ELSE CASE NOT EXISTS ANY ALL SOME ARRAY ROW VALUES
    LATERAL FROM INTO DISTINCT LIMIT OFFSET RETURNING UNION INTERSECT EXCEPT TABLE WITH FOR
    """
)

#: Words that follow an operand or a table: x IN (...), f(x) OVER (...), t JOIN (...).
GRAMMAR_AFTER_OPERAND = names(
    """
    FILTER OVER OVERLAPS LIKE ILIKE RLIKE REGEXP DIV MOD XOR ESCAPE AND OR IN JOIN AGAINST
    REPEATABLE COLUMNS USING ON AS SET BETWEEN
    """
)

#: Words that follow particular words: WITHIN GROUP (...), TABLESAMPLE SYSTEM (...), ...
GRAMMAR_AFTER_WORD: dict[str, frozenset[str]] = {
    "GROUP": frozenset({"WITHIN"}),
    "SYSTEM": frozenset({"TABLESAMPLE"}),
    "BERNOULLI": frozenset({"TABLESAMPLE"}),
    "MATERIALIZED": frozenset({"AS", "NOT"}),
    "ROLLUP": frozenset({"GROUP BY"}),
    "CUBE": frozenset({"GROUP BY"}),
    "SETS": frozenset({"GROUPING"}),
    "ZONE": frozenset({"TIME"}),
    "CONFLICT": frozenset({"ON"}),
    "FIRST": frozenset({"FETCH"}),
    "NEXT": frozenset({"FETCH"}),
    "INSERT": frozenset({"THEN"}),
    "ON": frozenset({"DISTINCT"}),
    "IN": frozenset({"NOT"}),
    "LIKE": frozenset({"NOT"}),
    "ILIKE": frozenset({"NOT"}),
    "RLIKE": frozenset({"NOT"}),
    "REGEXP": frozenset({"NOT"}),
    "BETWEEN": frozenset({"NOT"}),
    "JOIN": frozenset(
        {"LEFT", "RIGHT", "FULL", "INNER", "OUTER", "CROSS", "NATURAL", "STRAIGHT_JOIN", "FOR"}
    ),
}

#: Type names take parameters after :: or AS: x::numeric(10, 2), CAST(x AS varchar(10)).
TYPE_NAMES = names(
    """
    VARCHAR CHAR CHARACTER NCHAR NVARCHAR BPCHAR DECIMAL NUMERIC DEC FLOAT DOUBLE REAL BIT
    VARBIT TIMESTAMP TIMESTAMPTZ TIME TIMETZ INTERVAL DATETIME BINARY VARBINARY INT INTEGER
    BIGINT SMALLINT TINYINT MEDIUMINT YEAR VECTOR HALFVEC SPARSEVEC SIGNED UNSIGNED
    """
)
