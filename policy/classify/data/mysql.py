"""MySQL's data: the read-safe functions, the harmless session settings, character sets
and sql_mode flags that keep the gateway's lexer right, optimizer hints, and grammar."""

from __future__ import annotations

from policy.classify.data import common, names
from policy.classify.verdicts import ADMIN, READ

#: The read-safe functions (see `common.FUNCTIONS`): the common ones and this server's own.
FUNCTIONS = common.FUNCTIONS | names(
    """
    adddate addtime aes_decrypt aes_encrypt any_value ascii bin bin_to_uuid char charset
    connection_id date_add date_sub
    coercibility collation compress conv convert convert_tz crc32 curdate current_role
    curtime database date date_format datediff day dayname dayofmonth dayofweek
    dayofyear elt export_set field find_in_set format_bytes format_pico_time found_rows
    from_base64 from_days from_unixtime get_format group_concat hex hour icu_version if
    ifnull inet6_aton inet6_ntoa inet_aton inet_ntoa insert instr interval is_ipv4
    is_ipv4_compat is_ipv4_mapped is_ipv6 is_uuid isnull json_array_append
    json_array_insert json_contains json_contains_path json_depth json_extract
    json_insert json_keys json_length json_merge json_merge_patch json_merge_preserve
    json_overlaps json_pretty json_quote json_remove json_replace json_schema_valid
    json_schema_validation_report json_search json_set json_storage_free
    json_storage_size json_type json_unquote json_valid last_day last_insert_id lcase
    locate log2 make_set makedate maketime match microsecond mid minute month monthname
    oct ord period_add period_diff pow quarter quote rand random_bytes regexp
    roles_graphml row_count schema sec_to_time second sha sha1 sha2 soundex space std
    str_to_date strcmp subdate substring_index subtime sysdate system_user time
    time_format time_to_sec timediff timestamp timestampadd timestampdiff to_base64
    to_days to_seconds truncate ucase uncompress uncompressed_length unhex
    unix_timestamp user utc_date utc_time utc_timestamp uuid uuid_short uuid_to_bin
    week weekday weekofyear weight_string year yearweek
    """
)

#: Session settings drivers and tools send on connect, harmless to change.
SETTINGS = names(
    """
    autocommit character_set_client character_set_connection character_set_results
    collation_connection div_precision_increment group_concat_max_len
    innodb_lock_wait_timeout interactive_timeout lc_time_names lock_wait_timeout
    max_execution_time net_read_timeout net_write_timeout sql_mode sql_select_limit
    time_zone transaction_isolation tx_isolation wait_timeout
    """
)

#: Character sets the gateway's lexer reads correctly: the one list for both the login's
#: character set and SET NAMES / CHARACTER SET / character_set_* (proxy/mysql/session.py
#: checks the login against it). Each is ASCII-compatible and no multibyte character of
#: it contains a quote or backslash byte (unlike sjis, big5, gbk, cp932, gb18030).
CHARSETS = frozenset({"utf8mb4", "utf8mb3", "utf8", "ascii", "latin1"})

#: sql_mode flags that do not change how a statement is lexed (ANSI_QUOTES and
#: NO_BACKSLASH_ESCAPES do, and so do the combination modes that include them).
SAFE_SQL_MODES = names(
    """
    allow_invalid_dates error_for_division_by_zero high_not_precedence ignore_space
    no_auto_create_user no_auto_value_on_zero no_dir_in_create no_engine_substitution
    no_unsigned_subtraction no_zero_date no_zero_in_date only_full_group_by
    pad_char_to_full_length pipes_as_concat real_as_float strict_all_tables
    strict_trans_tables time_truncate_fractional traditional
    """
)

#: MySQL optimizer hints /*+ ... */ that only steer the plan. SET_VAR and RESOURCE_GROUP
#: change settings, so they are left out.
OPTIMIZER_HINTS = names(
    """
    bka bnl derived_condition_pushdown group_index hash_join index index_merge
    join_fixed_order join_index join_order join_prefix join_suffix max_execution_time
    merge mrr no_bka no_bnl no_derived_condition_pushdown no_group_index no_hash_join
    no_icp no_index no_index_merge no_join_index no_merge no_mrr no_order_index
    no_range_optimization no_semijoin no_skip_scan order_index qb_name semijoin
    skip_scan subquery
    """
)

#: SET's scopes: a server-wide one is administration whatever the setting.
SCOPES = {
    "GLOBAL": ADMIN,
    "PERSIST": ADMIN,
    "PERSIST_ONLY": ADMIN,
    "SESSION": READ,
    "LOCAL": READ,
}

#: Settings whose value decides how the server lexes statements: checked value by value.
CHECKED_SETTINGS = frozenset(
    {
        "sql_mode",
        "character_set_client",
        "character_set_connection",
        "character_set_results",
        "collation_connection",
    }
)

#: MySQL's reserved words that are operators or join grammar and name no built-in function:
#: the server never reads one of them before "(" as a function's name (a stored function
#: so named must be quoted). Reserved words that do name built-ins (MOD, LEFT, INSERT, IF,
#: ...) are checked against the allowlist like any other name.
RESERVED_OPERATORS = names("AND OR XOR NOT IN IS LIKE RLIKE REGEXP DIV BETWEEN JOIN ON USING AS")

#: MySQL index hints and partition selection: t USE INDEX (i), t PARTITION (p).
GRAMMAR_AFTER_OPERAND = frozenset({"PARTITION"})

#: ... and the words of index hints: t USE INDEX (i).
GRAMMAR_AFTER_WORD: dict[str, frozenset[str]] = {
    "INDEX": frozenset({"USE", "FORCE", "IGNORE", "JOIN", "ORDER BY", "GROUP BY"}),
    "KEY": frozenset({"USE", "FORCE", "IGNORE", "JOIN", "ORDER BY", "GROUP BY"}),
}

#: MySQL parses these as built-in functions only when "(" follows the name directly; with a
#: space in between (and no IGNORE_SPACE) the name is an identifier: a stored function.
SPACE_SENSITIVE_FUNCTIONS = names(
    """
    adddate bit_and bit_or bit_xor cast count curdate curtime date_add date_sub extract
    group_concat max mid min now position session_user std stddev stddev_pop stddev_samp
    st_collect subdate substr substring sum sysdate system_user trim variance var_pop var_samp
    """
)
