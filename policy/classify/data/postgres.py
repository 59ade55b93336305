"""PostgreSQL's data: the read-safe functions, the harmless session settings, EXPLAIN's
options, and the built-in operators and type names (either can run user code otherwise)."""

from __future__ import annotations

from policy.classify.data import common, names

#: The read-safe functions (see `common.FUNCTIONS`): the common ones and this server's own.
FUNCTIONS = common.FUNCTIONS | names(
    """
    acosd acosh age any_value array_agg array_append array_cat array_dims array_fill
    array_length array_lower array_ndims array_position array_positions array_prepend
    array_remove array_replace array_reverse array_sample array_shuffle array_sort
    array_to_json array_to_string array_to_tsvector array_upper ascii asind asinh atan2d
    atand atanh bool_and bool_or box btrim cardinality cbrt center char chr circle
    clock_timestamp col_description convert convert_from convert_to corr cosd cosh cotd
    covar_pop covar_samp crc32 crc32c current_catalog current_database current_query
    current_schema current_schemas current_setting currval date_bin date_part
    date_subtract date_trunc daterange datemultirange decode diameter div encode
    enum_first enum_last enum_range erf erfc every factorial family float4 float8
    format_type gcd gen_random_uuid generate_series generate_subscripts get_bit get_byte
    has_any_column_privilege has_column_privilege has_database_privilege
    has_foreign_data_wrapper_privilege has_function_privilege has_language_privilege
    has_parameter_privilege has_schema_privilege has_sequence_privilege
    has_server_privilege has_table_privilege has_tablespace_privilege has_type_privilege
    height host hostmask inet_client_addr inet_client_port inet_merge inet_same_family
    inet_server_addr inet_server_port initcap int2 int4 int4range int4multirange int8
    int8range int8multirange isempty isfinite json json_agg json_array_elements
    json_array_elements_text json_array_length json_build_array json_build_object
    json_each json_each_text json_exists json_extract_path json_extract_path_text
    json_object_agg json_object_keys json_populate_record json_populate_recordset
    json_query json_scalar json_serialize json_strip_nulls json_to_record
    json_to_recordset json_typeof jsonb_agg jsonb_array_elements
    jsonb_array_elements_text jsonb_array_length jsonb_build_array jsonb_build_object
    jsonb_each jsonb_each_text jsonb_exists jsonb_extract_path jsonb_extract_path_text
    jsonb_insert jsonb_object jsonb_object_agg jsonb_object_keys jsonb_path_exists
    jsonb_path_exists_tz jsonb_path_match jsonb_path_match_tz jsonb_path_query
    jsonb_path_query_array jsonb_path_query_array_tz jsonb_path_query_first
    jsonb_path_query_first_tz jsonb_path_query_tz jsonb_populate_record
    jsonb_populate_recordset jsonb_pretty jsonb_set jsonb_set_lax jsonb_strip_nulls
    jsonb_to_record jsonb_to_recordset jsonb_typeof justify_days justify_hours
    justify_interval lastval lcm lower_inc lower_inf lseg make_date make_interval
    make_time make_timestamp make_timestamptz masklen min_scale mode multirange
    netmask network normalize num_nonnulls num_nulls numeric numrange nummultirange
    obj_description overlay parse_ident percentile_cont percentile_disc
    pg_backend_pid pg_blocking_pids pg_client_encoding pg_collation_is_visible
    pg_column_compression pg_column_size pg_conf_load_time pg_conversion_is_visible
    pg_current_snapshot pg_database_size pg_describe_object pg_encoding_to_char
    pg_function_is_visible pg_get_constraintdef pg_get_expr pg_get_function_arguments
    pg_get_function_identity_arguments pg_get_function_result pg_get_functiondef
    pg_get_indexdef pg_get_keywords pg_get_partkeydef pg_get_statisticsobjdef_columns
    pg_relation_is_publishable _pg_expandarray pg_get_ruledef
    pg_get_serial_sequence pg_get_statisticsobjdef pg_get_triggerdef pg_get_userbyid
    pg_get_viewdef pg_has_role pg_identify_object pg_index_column_has_property
    pg_index_has_property pg_indexam_has_property pg_indexes_size pg_input_error_info
    pg_input_is_valid pg_is_in_recovery pg_jit_available pg_last_wal_receive_lsn
    pg_last_wal_replay_lsn pg_last_xact_replay_timestamp pg_my_temp_schema
    pg_opclass_is_visible pg_operator_is_visible pg_opfamily_is_visible
    pg_partition_ancestors pg_partition_root pg_partition_tree pg_postmaster_start_time
    pg_relation_filenode pg_relation_filepath pg_relation_size pg_safe_snapshot_blocking_pids
    pg_size_bytes pg_size_pretty pg_snapshot_xip pg_snapshot_xmax pg_snapshot_xmin
    pg_statistics_obj_is_visible pg_table_is_visible pg_table_size pg_tablespace_size
    pg_total_relation_size pg_trigger_depth pg_ts_config_is_visible pg_ts_dict_is_visible
    pg_ts_parser_is_visible pg_ts_template_is_visible pg_type_is_visible pg_typeof
    pg_visible_in_snapshot pg_wal_lsn_diff phraseto_tsquery plainto_tsquery point
    polygon quote_ident quote_literal quote_nullable radius random random_normal
    range_agg range_intersect_agg range_merge regexp_count regexp_match regexp_matches
    regexp_split_to_array regexp_split_to_table regr_avgx regr_avgy regr_count
    regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy row_security_active
    row_to_json scale setweight sha224 sha256 sha384 sha512 shobj_description sind sinh
    slope split_part starts_with statement_timestamp string_agg string_to_array
    string_to_table strip strpos tand tanh text timeofday timezone to_ascii to_char
    to_date to_hex to_json to_jsonb to_number to_regclass to_regcollation
    to_regnamespace to_regoper to_regoperator to_regproc to_regprocedure to_regrole
    to_regtype to_regtypemod to_timestamp to_tsquery to_tsvector transaction_timestamp
    translate trim_array trim_scale trunc ts_headline ts_rank ts_rank_cd tsrange
    tsmultirange tstzrange tstzmultirange tsvector_to_array unistr unnest upper_inc
    upper_inf user websearch_to_tsquery width width_bucket xmlagg xmlconcat
    xmlelement xmlexists xmlforest xmlparse xmlpi xmlroot xmlserialize xmltable xpath
    xpath_exists

    similarity word_similarity strict_word_similarity show_trgm
    levenshtein levenshtein_less_equal soundex difference metaphone dmetaphone
    dmetaphone_alt unaccent
    l2_distance l1_distance cosine_distance inner_product vector_dims vector_norm
    l2_normalize binary_quantize subvector hamming_distance jaccard_distance
    """
)

#: Session settings drivers and tools send on connect, harmless to change (PostgreSQL).
SETTINGS = names(
    """
    application_name bytea_output client_encoding client_min_messages datestyle jit
    default_transaction_isolation extra_float_digits idle_in_transaction_session_timeout
    idle_session_timeout intervalstyle lock_timeout search_path standard_conforming_strings
    statement_timeout timezone transaction_isolation xmloption
    """
)


UTF8_ENCODINGS = frozenset({"utf8", "unicode"})  # PostgreSQL: case and punctuation ignored

#: information_schema's helper functions that JDBC's DatabaseMetaData calls, read-only; in
#: the read-safe allowlist, but only as information_schema.<name>(...): found through
#: search_path instead, the name may be a user's function.
INFORMATION_SCHEMA_FUNCTIONS = {"_pg_expandarray": "information_schema"}

#: A pool's reset of a session before another user gets it (asyncpg's Connection.reset on
#: PostgreSQL 15), statement by statement as its tokens read in upper case. A text that has
#: each of them exactly once (and otherwise only statements that are read anyway) is read:
#: it releases this session's own advisory locks, closes its own cursors, stops its own
#: LISTENs and returns its settings to their values at login, which the gateway judged;
#: RESET ALL keeps the role and session authorization, and the lexer's settings are
#: checked again as the server reports them. Alone, pg_advisory_unlock_all() (locks other
#: code of the session may rely on) and RESET ALL stay held.
SESSION_RESET = frozenset(
    {"SELECT PG_ADVISORY_UNLOCK_ALL ( )", "CLOSE ALL", "UNLISTEN *", "RESET ALL"}
)

#: PostgreSQL's reserved key words (`pg_get_keywords()` with catcode 'R', the same in 15 to
#: 17): the grammar never reads one of them as an unqualified function's name, so before
#: "(" each is grammar (x IN (...), a AND (...)) or a construct sqlglot models.
RESERVED_WORDS = names(
    """
    ALL ANALYSE ANALYZE AND ANY ARRAY AS ASC ASYMMETRIC BOTH CASE CAST CHECK COLLATE COLUMN
    CONSTRAINT CREATE CURRENT_CATALOG CURRENT_DATE CURRENT_ROLE CURRENT_TIME CURRENT_TIMESTAMP
    CURRENT_USER DEFAULT DEFERRABLE DESC DISTINCT DO ELSE END EXCEPT FALSE FETCH FOR FOREIGN
    FROM GRANT GROUP HAVING IN INITIALLY INTERSECT INTO LATERAL LEADING LIMIT LOCALTIME
    LOCALTIMESTAMP NOT NULL OFFSET ON ONLY OR ORDER PLACING PRIMARY REFERENCES RETURNING SELECT
    SESSION_USER SOME SYMMETRIC TABLE THEN TO TRAILING TRUE UNION UNIQUE USER USING VARIADIC
    WHEN WHERE WINDOW WITH
    """
)

#: EXPLAIN ( ... ) options of PostgreSQL 15 to 17, as the server compares them (lower
#: case, after quotes and Unicode escapes are resolved). Any other name is not read.
EXPLAIN_OPTIONS = names(
    """
    analyze analyse verbose costs settings buffers wal timing summary format generic_plan
    serialize memory
    """
)

#: Operator symbols of pg_catalog (PostgreSQL 15), plus => (named arguments, not an
#: operator) and the operators of the extensions whose functions are allowlisted
#: (pgvector, pg_trgm).
OPERATORS = names(
    """
    !! !~ !~* !~~ !~~* # ## #- #> #>> % & && &< &<| &> * *< *<= *<> *= *> *>= + - -> ->>
    -|- / < <-> << <<= <<| <= <> <@ <^ = > >= >> >>= >^ ? ?# ?& ?- ?-| ?| ?|| @ @-@ @>
    @? @@ @@@ ^ ^@ | |&> |/ |>> || ||/ ~ ~* ~<=~ ~<~ ~= ~>=~ ~>~ ~~ ~~* != =>
    <=> <#> <+> <~> <%> <% %> <<% %>> <<-> <->> <<<-> <->>>
    """
)

#: Type names of pg_catalog (base, range, multirange and pseudo types of PostgreSQL 15),
#: valid bare or "quoted"; and pgvector's, whose functions are allowlisted too.
CATALOG_TYPES = names(
    """
    aclitem any anyarray anycompatible anycompatiblearray anycompatiblemultirange
    anycompatiblenonarray anycompatiblerange anyelement anyenum anymultirange anynonarray
    anyrange bit bool box bpchar bytea char cid cidr circle cstring date datemultirange
    daterange event_trigger fdw_handler float4 float8 gtsvector index_am_handler inet int2
    int2vector int4 int4multirange int4range int8 int8multirange int8range internal
    interval json jsonb jsonpath language_handler line lseg macaddr macaddr8 money name
    numeric nummultirange numrange oid oidvector path pg_brin_bloom_summary
    pg_brin_minmax_multi_summary pg_ddl_command pg_dependencies pg_lsn pg_mcv_list
    pg_ndistinct pg_node_tree pg_snapshot point polygon record refcursor regclass
    regcollation regconfig regdictionary regnamespace regoper regoperator regproc
    regprocedure regrole regtype table_am_handler text tid time timestamp timestamptz
    timetz trigger tsm_handler tsmultirange tsquery tsrange tstzmultirange tstzrange
    tsvector txid_snapshot unknown uuid varbit varchar void xid xid8 xml
    vector halfvec sparsevec
    """
)

#: Type names the grammar itself maps to pg_catalog types: bare only ("integer" quoted is
#: a lookup of a type by that name, which may be the user's).
GRAMMAR_TYPES = names(
    """
    int integer smallint bigint real float double decimal dec boolean character nchar
    national
    """
)

#: The words of the built-in type names sqlglot reads as one token.
TYPE_WORDS = names(
    "DOUBLE PRECISION CHARACTER CHAR VARYING BIT NATIONAL TIMESTAMP TIME WITH WITHOUT ZONE"
)

#: Types whose name takes a second word: double precision, national character.
TYPE_SECOND_WORD = {"double": ("PRECISION",), "national": ("CHARACTER", "CHAR")}
