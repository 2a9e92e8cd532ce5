"""The SQL side of the ClickHouse HTTP front: the read-only gate and statement preparation.

Pure functions, no chDB: the lexer must agree with ClickHouse's on where strings, quoted
identifiers, heredocs and comments end, or a literal could smuggle a second statement past it.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from connectors.chhttp import QueryError, classify, prepare, tokens

CONNECT_PROBES = [
    "SELECT version(), timezone()",
    "SELECT name, value, readonly FROM system.settings LIMIT 10000",
    "SELECT 1 AS check\n FORMAT Native",
    "SELECT * FROM ledger_entries LIMIT 0\n FORMAT JSON",
]

READS = [
    *CONNECT_PROBES,
    "select 1",
    "  \n-- leading comment\nSELECT 1",
    "/* block */ SELECT 1;",
    "SELECT 1;;",
    "WITH x AS (SELECT 1) SELECT * FROM x",
    "(SELECT 1) UNION ALL (SELECT 2)",
    "SHOW TABLES",
    "SHOW CREATE TABLE ledger_entries",
    "DESCRIBE TABLE ledger_entries",
    "DESC ledger_entries",
    "EXISTS TABLE ledger_entries",
    "EXPLAIN SELECT 1",
    "SELECT * FROM numbers(10)",
    "SELECT count() FROM system.tables",
    "SELECT 'DROP TABLE t; INSERT INTO t VALUES (1)'",
    "SELECT 'it''s; DROP TABLE t'",
    "SELECT 'a\\'; DROP TABLE t; --'",
    "SELECT 1 -- ; DROP TABLE t",
    "SELECT 1 # ; DROP TABLE t",
    "SELECT 1 // ; DROP TABLE t",
    "SELECT 1 /* ; DROP TABLE t */",
    "SELECT 1 /* nested /* ; DROP */ still comment ; */",
    "SELECT $$; DROP TABLE t$$",
    "SELECT $tag$ ' ; DROP $tag$",
    'SELECT "weird;name" FROM t',
    "SELECT `insert`, `file`, t.delete, delete.x FROM t",
    "SELECT file_id, url_path FROM t",
    "SELECT replace(s, 'a', 'b') FROM t",
    "SELECT * FROM t FORMAT JSONEachRow",
    "SELECT 1 SETTINGS max_threads = 1",
    "SELECT {x:UInt32} + 1",
]

REFUSED = [
    "INSERT INTO t VALUES (1)",
    "insert into t select 1",
    "CREATE TABLE x (a UInt8) ENGINE = Memory",
    "DROP TABLE t",
    "ALTER TABLE t DELETE WHERE 1",
    "SYSTEM FLUSH LOGS",
    "OPTIMIZE TABLE t FINAL",
    "TRUNCATE TABLE t",
    "RENAME TABLE t TO u",
    "KILL QUERY WHERE 1",
    "SET max_threads = 1",
    "USE system",
    "DELETE FROM t WHERE 1",
    "GRANT SELECT ON *.* TO u",
    "SELECT 1; DROP TABLE t",
    "SELECT 1;;SELECT 2",
    "SELECT 1 -- c\n; DROP TABLE t",
    "SELECT 'a\\\\'; DROP TABLE t; --'",
    "/* ; */ DROP TABLE t",
    "(INSERT INTO t VALUES (1))",
    "WITH 1 AS x INSERT INTO t VALUES (1)",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT file('/etc/passwd')",
    "SELECT * FROM `file`('/etc/passwd')",
    "SELECT * FROM FILE ('/etc/passwd')",
    "SELECT * FROM url('http://example.com', 'CSV')",
    "SELECT * FROM s3('http://example.com/b/k')",
    "SELECT * FROM hdfs('hdfs://x/y', 'CSV')",
    "SELECT * FROM remote('127.0.0.1', system.one)",
    "SELECT * FROM remoteSecure('127.0.0.1', system.one)",
    "SELECT * FROM mysql('h:3306', 'db', 't', 'u', 'p')",
    "SELECT * FROM postgresql('h:5432', 'db', 't', 'u', 'p')",
    "SELECT * FROM executable('x.sh', 'CSV', 'a UInt8')",
    "SELECT * FROM python(df)",
    "SELECT * FROM icebergS3('http://x')",
    "SELECT * FROM (SELECT * FROM url('http://x', 'CSV'))",
    "SELECT 1 INTO OUTFILE '/tmp/x'",
    "SELECT 'unterminated",
    "SELECT 1 /* unterminated",
    "SELECT /* /* */ ; DROP TABLE t; /* */",
    "",
    "   ",
    "-- only a comment",
    ";",
    "SELEC 1",
]


@pytest.mark.parametrize("sql", READS)
def test_reads_are_allowed(sql: str) -> None:
    allowed, reason = classify(sql)
    assert allowed, reason


@pytest.mark.parametrize("sql", REFUSED)
def test_everything_else_is_refused(sql: str) -> None:
    allowed, reason = classify(sql)
    assert not allowed
    assert reason


def test_lexer_tracks_strings_heredocs_and_depth() -> None:
    toks = list(tokens("SELECT f('a;b', $x$)$x$) -- c\n FROM `t``x`"))
    kinds = ["word", "word", "punct", "str", "punct", "str", "punct", "word", "qid"]
    assert [t.kind for t in toks] == kinds
    assert [t.depth for t in toks] == [0, 0, 0, 1, 1, 1, 0, 0, 0]
    assert toks[-1].text == "`t``x`"


# --- properties -------------------------------------------------------------------------------

# fmt: off
_SQL_PIECES = [
    "SELECT", "WITH", "INSERT", "DROP", "FROM", "file", "url", "(", ")", ";", "'", '"',
    "`", "\\", "--", "#", "# ", "/*", "*/", "//", "$", "$$", "$a$", "\n",
    " ", "x", "1", "FORMAT", "SETTINGS", "OUTFILE", ".", ",", "SHOW", "CREATE",
]
# fmt: on
SQLISH = st.lists(st.sampled_from(_SQL_PIECES), max_size=30).map("".join)


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


@given(st.one_of(st.text(), SQLISH))
def test_classify_never_raises(sql: str) -> None:
    allowed, reason = classify(sql)
    assert isinstance(allowed, bool)
    assert isinstance(reason, str)


@given(st.one_of(st.text(), SQLISH))
def test_a_second_statement_is_never_let_through(prefix: str) -> None:
    # Whatever the prefix opens (string, comment, heredoc), the suffix either stays inside an
    # unterminated literal (refused) or is a second statement (refused).
    assert not classify(prefix + "\n;\nDROP TABLE t").allowed


@given(st.one_of(st.text(), SQLISH))
def test_string_literals_cannot_escape(text: str) -> None:
    assert classify(f"SELECT {_quote(text)} AS s").allowed


@given(st.one_of(st.text(), SQLISH))
def test_comments_cannot_escape(text: str) -> None:
    line = text.replace("\n", " ")
    block = text.replace("*", "")
    assert classify(f"SELECT 1 -- {line}").allowed
    assert classify(f"SELECT 1 /* {block} */").allowed


@given(st.one_of(st.text(), SQLISH))
def test_quoted_identifiers_cannot_escape(text: str) -> None:
    ident = "`" + text.replace("\\", "\\\\").replace("`", "``") + "`"
    assert classify(f"SELECT {ident} FROM t").allowed


@given(
    st.one_of(st.text(), SQLISH, st.sampled_from(READS + REFUSED)),
    st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), st.text(max_size=8), max_size=3),
)
@example(";", {})
@example("INSERT INTO t VALUES (1);", {"a": "1"})
def test_prepare_raises_only_query_errors(sql: str, settings: dict[str, str]) -> None:
    try:
        prepared = prepare(sql, settings)
    except QueryError as err:
        assert err.code in (36, 48, 62)
    else:
        assert prepared.kind in ("output", "insert", "other")


# --- prepare: settings become SQL, the statement's own FORMAT is cut out ---------------------


def test_settings_are_appended_as_a_clause() -> None:
    p = prepare("SELECT 1;  -- done", {"max_threads": "2", "readonly": "2"})
    assert p.kind == "output"
    assert p.fmt is None
    assert p.sql == "SELECT 1\nSETTINGS max_threads = '2', readonly = '2'"


def test_trailing_format_is_cut_and_returned() -> None:
    p = prepare("SELECT format FROM t FORMAT JSONEachRow;", {"max_threads": "1"})
    assert p.fmt == "JSONEachRow"
    assert p.sql == "SELECT format FROM t \nSETTINGS max_threads = '1'"
    assert prepare("SELECT 1 AS format", {}).fmt is None
    assert prepare("SELECT * FROM format(CSV, 'a')", {}).fmt is None


def test_format_followed_by_settings_merges_the_lists() -> None:
    p = prepare("SELECT 1 FORMAT CSV SETTINGS max_threads = 1", {"readonly": "2"})
    assert p.fmt == "CSV"
    assert p.sql == "SELECT 1  SETTINGS max_threads = 1, readonly = '2'"


def test_insert_settings_go_before_the_data() -> None:
    p = prepare("INSERT INTO t (a, b) VALUES (1, 'x;y')", {"max_threads": "1"})
    assert p.kind == "insert"
    assert p.sql == "INSERT INTO t (a, b) SETTINGS max_threads = '1' VALUES (1, 'x;y')"
    p = prepare("INSERT INTO t SETTINGS a_b = 1 SELECT 1", {"max_threads": "1"})
    assert p.sql == "INSERT INTO t SETTINGS max_threads = '1', a_b = 1 SELECT 1"


def test_insert_data_after_format_is_never_lexed() -> None:
    binary = "\x00'\"`/*$$;DROP TABLE t"
    p = prepare("INSERT INTO t FORMAT Native\n" + binary, {"max_threads": "1"})
    assert p.sql == "INSERT INTO t SETTINGS max_threads = '1' FORMAT Native\n" + binary


def test_insert_values_then_a_second_statement_is_refused() -> None:
    # chDB would run both (measured), so the executor refuses it even in read-write mode.
    with pytest.raises(QueryError) as err:
        prepare("INSERT INTO t VALUES (1); DROP TABLE t", {})
    assert err.value.code == 62


@pytest.mark.parametrize("sql", ["SET max_threads = 1", "USE system", "  use `x`"])
def test_session_statements_are_refused(sql: str) -> None:
    with pytest.raises(QueryError) as err:
        prepare(sql, {})
    assert err.value.code == 48


def test_other_statements_get_settings_through_set() -> None:
    p = prepare("CREATE TABLE x (a UInt8) ENGINE = Memory;", {"max_threads": "1"})
    assert p.kind == "other"
    assert p.sql == "CREATE TABLE x (a UInt8) ENGINE = Memory"
    assert p.set_settings == (("max_threads", "1"),)


@pytest.mark.parametrize(
    "settings",
    [{"Max": "1"}, {"a-b": "1"}, {"x": "1'; DROP"}, {"x": "a;b"}, {"x": 'a"'}, {"x": "a\\"}],
)
def test_unsafe_settings_are_refused(settings: dict[str, str]) -> None:
    with pytest.raises(QueryError) as err:
        prepare("SELECT 1", settings)
    assert err.value.code == 36


# --- chDB's error text ------------------------------------------------------------------------


def test_nested_chdb_errors_are_parsed() -> None:
    err = QueryError.from_chdb(
        "Code: 115. DB::Exception: Code: 115. DB::Exception: Unknown setting 'x'. "
        "(UNKNOWN_SETTING) (version 26.9.2.1). (UNKNOWN_SETTING)"
    )
    assert (err.code, err.name, err.message) == (115, "UNKNOWN_SETTING", "Unknown setting 'x'")
    assert err.text("26.9.2.1") == (
        "Code: 115. DB::Exception: Unknown setting 'x'. (UNKNOWN_SETTING) (version 26.9.2.1)"
    )
    assert err.http_status == 404


def test_errors_without_a_code() -> None:
    err = QueryError.from_chdb(RuntimeError("something odd"))
    assert err.code == 1002
    assert "something odd" in err.message
    assert QueryError(62, "Syntax error").http_status == 400
    assert QueryError(164, "no").http_status == 500


# --- the analyst policy: readonly = 1 last, an allow-list of settings ----------------------------


def test_analyst_settings_put_readonly_last_and_refuse_the_rest() -> None:
    from connectors.chhttp.policy import analyst_settings

    got = analyst_settings({"max_threads": "1", "output_format_json_quote_decimals": "1"}, 300)
    assert list(got.items()) == [
        ("max_threads", "1"),
        ("output_format_json_quote_decimals", "1"),
        ("max_execution_time", "300"),
        ("readonly", "1"),
    ]
    assert analyst_settings({"max_execution_time": "5"}, 300)["max_execution_time"] == "5"
    for asked in ("0", "301", "x"):  # no limit, above the cap, nonsense: the cap
        assert analyst_settings({"max_execution_time": asked}, 300)["max_execution_time"] == "300"
    assert analyst_settings({}, None) == {"readonly": "1"}
    for name in ("readonly", "allow_ddl", "max_memory_usage", "allow_introspection_functions"):
        with pytest.raises(QueryError) as err:
            analyst_settings({name: "1"}, 300)
        assert err.value.code == 164 and f"'{name}'" in err.value.message


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 SETTINGS max_threads = 1",
        "SELECT 1 SETTINGS max_threads = 1, max_block_size = 100 FORMAT JSON",
        "SELECT 1 FORMAT JSON SETTINGS `max_threads` = 1",
        "SHOW SETTINGS LIKE 'max%'",
        "SELECT 'SETTINGS readonly = 0'",
        "SELECT t.settings FROM t",
    ],
)
def test_statement_settings_within_the_allow_list(sql: str) -> None:
    from connectors.chhttp.policy import check_statement_settings

    check_statement_settings(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT 1 SETTINGS max_threads = 1, allow_ddl = 1",
        "SELECT 1 SETTINGS max_threads = (1), readonly = 2",
        "SELECT * FROM (SELECT 1 SETTINGS readonly = 0)",
        "SELECT 1 SETTINGS max_threads = 1 UNION ALL SELECT 2 SETTINGS readonly = 0",
        'SELECT 1 SETTINGS "readonly" = 0',
    ],
)
def test_statement_settings_outside_the_allow_list_are_refused(sql: str) -> None:
    from connectors.chhttp.policy import check_statement_settings

    with pytest.raises(QueryError) as err:
        check_statement_settings(sql)
    assert err.value.code == 164


def test_system_settings_shows_the_changeable_ones() -> None:
    from connectors.chhttp.policy import show_changeable_settings

    probe = "SELECT name, value, readonly FROM system.settings LIMIT 10000"
    got = show_changeable_settings(probe)
    assert got.startswith("SELECT name, value, readonly FROM (SELECT * REPLACE (if(name IN (")
    assert "'max_threads'" in got and got.endswith(" FROM system.settings) LIMIT 10000")
    assert classify(got).allowed
    joined = show_changeable_settings("SELECT 1 FROM t JOIN `system`.`settings` AS s ON 1")
    assert "AS s ON 1" in joined and "REPLACE" in joined
    for unchanged in (
        "SELECT 'FROM system.settings'",
        "DESCRIBE TABLE system.settings",
        "SELECT * FROM system.settings_profiles",
        "SELECT * FROM my.system.settings",
    ):
        assert show_changeable_settings(unchanged) == unchanged


def test_the_request_settings_join_the_statement_own_clause() -> None:
    ours = {"max_execution_time": "300", "readonly": "1"}
    tail = "max_execution_time = '300', readonly = '1'"
    assert prepare("SELECT 1 SETTINGS max_threads = 1", ours).sql == (
        f"SELECT 1 SETTINGS max_threads = 1, {tail}"
    )
    assert prepare("SELECT 1 SETTINGS max_threads = -1, x = 'a' FORMAT CSV", ours).sql == (
        f"SELECT 1 SETTINGS max_threads = -1, x = 'a' , {tail}"
    )
    # Not the statement's last clause: a clause of its own (readonly still last in it).
    assert prepare("SELECT 1 SETTINGS max_threads = 1 UNION ALL SELECT 2", ours).sql.endswith(
        f"\nSETTINGS {tail}"
    )
