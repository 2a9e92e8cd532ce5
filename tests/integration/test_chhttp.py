"""The ClickHouse HTTP front over a real chDB warehouse: clickhouse-connect and curl-like clients.

No Kafka. One chDB engine per process may be open at a time, so the whole module shares one
executor (closed at the end) and one read-only server.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError

from connectors.chhttp import (
    ANALYST_SETTINGS,
    ChdbExecutor,
    QueryError,
    Server,
    analyst_settings,
    serve,
)

pytestmark = pytest.mark.integration

TABLE = """
CREATE TABLE ledger_entries (
    entry_id UInt64,
    account LowCardinality(String),
    amount Decimal(38, 6),
    booked_at DateTime64(6, 'UTC'),
    memo Nullable(String),
    tags Array(String),
    version UInt64
) ENGINE = ReplacingMergeTree(version) ORDER BY entry_id
"""
ROWS = [
    (1, "acc-1", Decimal("12.345678"), "2024-01-02 03:04:05.123456", None, ["a", "b"]),
    (2, "acc-2", Decimal("-0.000001"), "2024-02-29 23:59:59.999999", "refund", []),
    (3, "acc-1", Decimal("99999999999999999999999999999999.999999"), "2024-03-01 00:00:00", "max", ["z"]),
]  # fmt: skip
STREAM_TABLE = (
    "CREATE TABLE stream_entries (n UInt64, amount Decimal(38, 6)) ENGINE = MergeTree ORDER BY n"
)
ERROR_BODY = re.compile(
    r"^Code: (\d+)\. DB::Exception: .+ \(([A-Z_]+)\) \(version [^)]+\)\n$", re.S
)


@pytest.fixture(scope="module")
def executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChdbExecutor]:
    path: Path = tmp_path_factory.mktemp("warehouse")
    with ChdbExecutor(str(path), pool_size=4) as ex:
        ex.execute(TABLE)
        ex.execute(STREAM_TABLE)
        # The sink's path: a clickhouse-connect client on the same engine, in-process.
        client = ex.client()
        try:
            client.insert(
                "ledger_entries",
                [
                    [
                        i,
                        acc,
                        amt,
                        dt.datetime.fromisoformat(ts).replace(tzinfo=dt.UTC),
                        memo,
                        tags,
                        1,
                    ]
                    for i, acc, amt, ts, memo, tags in ROWS
                ],
                column_names=[
                    "entry_id",
                    "account",
                    "amount",
                    "booked_at",
                    "memo",
                    "tags",
                    "version",
                ],
            )
        finally:
            client.close()
        yield ex


@pytest.fixture(scope="module")
def server(executor: ChdbExecutor) -> Iterator[Server]:
    with serve(executor, port=0, max_body_bytes=64_000) as srv:
        yield srv


def http(
    server: Server,
    query: str | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    path: str = "/",
    **params: str,
) -> tuple[int, dict[str, str], bytes]:
    """A curl-like request: GET unless there is a body."""
    if query is not None:
        params["query"] = query
    url = server.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


# --- clickhouse-connect -------------------------------------------------------------------------


def test_clickhouse_connect_reads_typed_values(server: Server) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    try:
        result = client.query("SELECT * EXCEPT version FROM ledger_entries FINAL ORDER BY entry_id")
        assert result.column_names == ("entry_id", "account", "amount", "booked_at", "memo", "tags")
        assert [r[2] for r in result.result_rows] == [r[2] for r in ROWS]
        assert [(r[0], r[1], r[4], r[5]) for r in result.result_rows] == [
            (i, acc, memo, tags) for i, acc, _, _, memo, tags in ROWS
        ]
        # Default tz_mode: naive UTC wall-clock values.
        assert result.result_rows[0][3] == dt.datetime(2024, 1, 2, 3, 4, 5, 123456)
        assert client.command("SELECT 1") == 1
        assert client.command("SELECT count() FROM ledger_entries") == 3
        assert client.server_version == client.command("SELECT version()")
    finally:
        client.close()

    aware = clickhouse_connect.get_client(host="127.0.0.1", port=server.port, tz_mode="aware")
    try:
        (booked,) = aware.query(
            "SELECT booked_at FROM ledger_entries WHERE entry_id = 2"
        ).result_rows[0]
        assert booked == dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC)
        assert booked.utcoffset() == dt.timedelta(0)
    finally:
        aware.close()


def test_clickhouse_connect_parameters_settings_and_big_results(server: Server) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    try:
        # Server-side binding ({name:Type} -> param_* URL parameters) and client-side binding.
        rows = client.query(
            "SELECT {n:UInt32} + 1, {s:String}", parameters={"n": 41, "s": "it's; DROP"}
        ).result_rows
        assert rows == [(42, "it's; DROP")]
        assert client.query("SELECT %(s)s", parameters={"s": "a'b"}).result_rows == [("a'b",)]
        assert client.command("SELECT getSetting('max_threads')", settings={"max_threads": 1}) == 1
        # Large enough to come back HTTP-compressed (the client asks by default).
        big = client.query("SELECT number, toString(number) FROM numbers(200000)")
        assert big.row_count == 200_000
        assert big.result_rows[-1] == (199_999, "199999")
        df = client.query_df("SELECT entry_id, amount FROM ledger_entries FINAL ORDER BY entry_id")
        assert list(df["entry_id"]) == [1, 2, 3]
    finally:
        client.close()


def test_writes_are_refused_with_readonly_code(server: Server) -> None:
    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    try:
        for sql in (
            "INSERT INTO ledger_entries (entry_id) VALUES (99)",
            "DROP TABLE ledger_entries",
            "ALTER TABLE ledger_entries DELETE WHERE 1",
            "SELECT * FROM file('/etc/passwd', 'LineAsString')",
            "SELECT 1; DROP TABLE ledger_entries",
        ):
            with pytest.raises(DatabaseError) as err:
                client.command(sql)
            expected = 62 if ";" in sql else 164
            assert err.value.code == expected, sql
            assert f"Code: {expected}. DB::Exception:" in str(err.value)
        with pytest.raises(DatabaseError) as err:
            client.insert("stream_entries", [[1, Decimal(1)]], column_names=["n", "amount"])
        assert err.value.code == 164
        assert client.command("SELECT count() FROM ledger_entries") == 3
    finally:
        client.close()

    status, headers, body = http(server, body=b"DROP TABLE ledger_entries")
    assert status == 500
    assert headers["X-ClickHouse-Exception-Code"] == "164"
    match = ERROR_BODY.match(body.decode())
    assert match is not None and match.groups() == ("164", "READONLY"), body
    assert b"Cannot execute query in readonly mode" in body


def test_syntax_errors_come_back_in_clickhouse_form(server: Server) -> None:
    status, headers, body = http(server, "SELECT 1 +")
    assert status == 400
    assert headers["X-ClickHouse-Exception-Code"] == "62"
    match = ERROR_BODY.match(body.decode())
    assert match is not None and match.groups() == ("62", "SYNTAX_ERROR"), body

    status, headers, body = http(server, "SELECT * FROM no_such_table")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")

    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    try:
        with pytest.raises(DatabaseError, match=r"Code: 62\. DB::Exception: Syntax error") as err:
            client.query("SELECT 1 +")
        assert err.value.code == 62
    finally:
        client.close()


# --- plain HTTP (what curl sends) --------------------------------------------------------------


def test_ping_and_root(server: Server) -> None:
    assert http(server, path="/ping")[::2] == (200, b"Ok.\n")
    assert http(server)[::2] == (200, b"Ok.\n")
    assert http(server, path="/nowhere")[0] == 404


def test_formats_over_plain_http(server: Server) -> None:
    sql = "SELECT entry_id, amount FROM ledger_entries FINAL WHERE entry_id <= 2 ORDER BY entry_id"

    status, headers, body = http(server, sql)  # TabSeparated by default, like ClickHouse
    assert status == 200
    assert headers["X-ClickHouse-Format"] == "TabSeparated"
    assert headers["Content-Type"].startswith("text/tab-separated-values")
    assert headers["X-ClickHouse-Timezone"] in ("UTC", "Etc/UTC")
    assert headers["X-ClickHouse-Query-Id"]
    assert headers["X-ClickHouse-Server-Display-Name"]
    assert json.loads(headers["X-ClickHouse-Summary"])["read_rows"]
    assert body == b"1\t12.345678\n2\t-0.000001\n"

    status, headers, body = http(server, sql + " FORMAT JSON")
    doc = json.loads(body, parse_float=Decimal)
    assert headers["X-ClickHouse-Format"] == "JSON"
    assert headers["Content-Type"].startswith("application/json")
    assert [m["type"] for m in doc["meta"]] == ["UInt64", "Decimal(38, 6)"]
    assert doc["data"] == [
        {"entry_id": 1, "amount": Decimal("12.345678")},
        {"entry_id": 2, "amount": Decimal("-0.000001")},
    ]

    _, headers, body = http(server, sql, default_format="JSONEachRow")
    assert headers["X-ClickHouse-Format"] == "JSONEachRow"
    assert body == b'{"entry_id":1,"amount":12.345678}\n{"entry_id":2,"amount":-0.000001}\n'

    _, headers, body = http(server, sql + " FORMAT CSVWithNames")
    assert headers["Content-Type"].startswith("text/csv")
    assert body == b'"entry_id","amount"\n1,12.345678\n2,-0.000001\n'

    # A trailing FORMAT wins over default_format; SETTINGS after it still work.
    _, headers, body = http(
        server, "SELECT 1 AS x FORMAT JSONCompact SETTINGS max_threads = 1", default_format="CSV"
    )
    assert headers["X-ClickHouse-Format"] == "JSONCompact"
    assert json.loads(body)["data"] == [[1]]


def test_post_body_database_settings_and_compression(server: Server) -> None:
    # ClickHouse joins ?query= and the POST body with a newline.
    status, _, body = http(
        server, "SELECT entry_id FROM ledger_entries FINAL", body=b"WHERE entry_id = 2"
    )
    assert (status, body) == (200, b"2\n")
    assert http(server, "SELECT currentDatabase()", database="system")[2] == b"system\n"
    assert http(server, "SELECT currentDatabase()")[2] == b"default\n"
    assert http(server, "SELECT getSetting('max_threads')", max_threads="1")[2] == b"1\n"
    assert http(server, "SELECT 1", max_threads="1'; DROP TABLE x")[0] == 400

    _, headers, body = http(
        server, "SELECT number FROM numbers(5000)", headers={"Accept-Encoding": "gzip"}
    )
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body).splitlines()[-1] == b"4999"

    status, headers, body = http(server, body=b"SELECT '" + b"x" * 70_000 + b"'")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (413, "229")


# --- concurrency ---------------------------------------------------------------------------------


def test_concurrent_http_reads_while_inserting_in_process(
    server: Server, executor: ChdbExecutor
) -> None:
    """Readers over HTTP always see whole inserts (count a multiple of the batch, sums agree)."""
    batch, batches, readers = 200, 30, 6
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[list[int]] = [[] for _ in range(readers)]

    def insert() -> None:
        try:
            for b in range(batches):
                executor.execute(
                    f"INSERT INTO stream_entries SELECT {b * batch} + number, 0.5 FROM numbers({batch})"
                )
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)
        finally:
            stop.set()

    def read(k: int) -> None:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
        try:
            while True:
                done = stop.is_set()
                n, total = client.query(
                    "SELECT count(), sum(amount) FROM stream_entries"
                ).result_rows[0]
                assert n % batch == 0, n
                assert total == Decimal(n) / 2, (n, total)
                seen[k].append(n)
                if done:
                    return
        except BaseException as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=read, args=(k,)) for k in range(readers)]
    threads.append(threading.Thread(target=insert))
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock: threads still running after 60 s"
    assert not errors, errors
    for counts in seen:
        assert counts == sorted(counts), "a reader saw the count go down"
        assert counts[-1] == batch * batches
    # The readers really ran while the inserts did.
    assert any(0 < n < batch * batches for counts in seen for n in counts)
    assert time.monotonic() - started < 60


# --- the executor in-process, and the read-write mode ----------------------------------------------


def test_executor_in_process(executor: ChdbExecutor) -> None:
    assert executor.execute("SELECT 1 AS x", "JSONEachRow") == b'{"x":1}\n'
    assert executor.execute("SELECT 1 AS x FORMAT CSV", "JSONEachRow") == b"1\n"
    assert (
        executor.execute("SELECT getSetting('max_threads')", settings={"max_threads": "1"})
        == b"1\n"
    )
    assert executor.execute("SELECT currentDatabase()", database="system") == b"system\n"
    assert executor.execute("SELECT {n:UInt8} * 2", params={"n": "21"}) == b"42\n"
    with pytest.raises(QueryError) as err:
        executor.execute("SELEC 1")
    assert err.value.code == 62 and err.value.name == "SYNTAX_ERROR"
    with pytest.raises(QueryError) as err:
        executor.execute("SELECT 1", database="no_such_db")
    assert err.value.code == 81


def test_read_write_mode(executor: ChdbExecutor) -> None:
    with serve(executor, port=0, readonly=False) as rw:
        client = clickhouse_connect.get_client(host="127.0.0.1", port=rw.port)
        try:
            client.command(
                "CREATE TABLE IF NOT EXISTS rw_t (a UInt32, b LowCardinality(String)) ENGINE = Memory"
            )
            # A binary (Native, compressed, chunked) insert through the HTTP body.
            client.insert("rw_t", [[1, "x"], [2, "y"]], column_names=["a", "b"])
            client.command("INSERT INTO rw_t VALUES (3, 'z')")
            assert client.query("SELECT a, b FROM rw_t ORDER BY a").result_rows == [
                (1, "x"),
                (2, "y"),
                (3, "z"),
            ]
            with pytest.raises(DatabaseError) as err:
                client.command("SET max_threads = 1")
            assert err.value.code == 48
        finally:
            client.close()
        # GET stays read-only, as in ClickHouse.
        status, headers, _ = http(rw, "DROP TABLE rw_t")
        assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164")
        assert http(rw, body=b"DROP TABLE rw_t")[0] == 200


def test_a_password_front_refuses_every_request_without_it(executor: ChdbExecutor) -> None:
    with serve(executor, port=0, readonly=False, password="s3cret") as rw:
        for headers, params in (
            ({}, {}),
            ({"X-ClickHouse-Key": "wrong"}, {}),
            ({"Authorization": "Basic " + base64.b64encode(b"default:wrong").decode()}, {}),
            ({"Authorization": "Basic %%%"}, {}),
            ({}, {"password": "wrong"}),
        ):
            status, answer, _ = http(rw, "SELECT 1", headers=headers, **params)
            assert (status, answer["X-ClickHouse-Exception-Code"]) == (403, "516"), headers
        assert http(rw, body=b"DROP TABLE IF EXISTS pw_t")[0] == 403  # a write, too
        assert http(rw, path="/ping")[0] == 200  # liveness needs no secret
        assert http(rw, "SELECT 1", headers={"X-ClickHouse-Key": "s3cret"})[2] == b"1\n"
        client = clickhouse_connect.get_client(host="127.0.0.1", port=rw.port, password="s3cret")
        try:
            assert client.command("SELECT 2") == 2  # Basic auth, as clickhouse-connect sends it
        finally:
            client.close()
        with pytest.raises(DatabaseError):
            clickhouse_connect.get_client(host="127.0.0.1", port=rw.port, password="nope")


# --- analysts run with readonly = 1, applied last -------------------------------------------------

PASSWD = "SELECT count() FROM file('/etc/passwd', 'LineAsString')"


def test_the_engine_path_refuses_files_and_the_network_without_the_gate(
    executor: ChdbExecutor,
) -> None:
    """Straight to the engine, as if the gate had been fooled: readonly = 1 stops it."""
    # What readonly = 2 (the old setting) let through: the engine reads the file.
    assert int(executor.execute(PASSWD, settings={"readonly": "2"})) > 0
    analyst = analyst_settings({}, 300.0)
    assert list(analyst)[-1] == "readonly" and analyst["readonly"] == "1"
    for sql in (
        PASSWD,
        "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
        "SELECT * FROM s3('http://127.0.0.1:1/bucket/k.csv', 'CSV', 'a String')",
        "SELECT * FROM (SELECT * FROM file('/etc/passwd', 'LineAsString'))",
        PASSWD + " SETTINGS readonly = 2",  # the statement's own setting comes first: refused
        PASSWD + " SETTINGS readonly = 0",
        "INSERT INTO stream_entries VALUES (1, 1)",
    ):
        with pytest.raises(QueryError) as err:
            executor.run(sql, settings=analyst)
        assert err.value.code == 164, (sql, err.value)
    # Reads, and the harmless table functions, still work; the client's settings apply.
    assert executor.execute("SELECT count() FROM numbers(10)", settings=analyst) == b"10\n"
    assert executor.execute("SELECT getSetting('readonly')", settings=analyst) == b"1\n"
    with_threads = analyst_settings({"max_threads": "1"}, 300.0)
    assert executor.execute("SELECT getSetting('max_threads')", settings=with_threads) == b"1\n"
    assert executor.execute("SELECT {n:UInt8}", settings=analyst, params={"n": "7"}) == b"7\n"


def test_client_settings_are_an_allow_list(server: Server) -> None:
    status, headers, body = http(server, "SELECT 1", allow_ddl="1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164"), body
    assert b"Cannot modify 'allow_ddl' setting in readonly mode" in body
    status, headers, body = http(server, "SELECT 1 SETTINGS allow_ddl = 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "164"), body
    # ?readonly=0 lifts nothing; the timeout is capped at the server's.
    assert http(server, "SELECT getSetting('readonly')", readonly="0")[2] == b"1\n"
    assert http(server, "SELECT getSetting('max_execution_time')", max_execution_time="0")[2] == (
        b"300\n"
    )
    assert http(server, "SELECT getSetting('max_execution_time')", max_execution_time="5")[2] == (
        b"5\n"
    )
    assert http(server, "SELECT 1 SETTINGS max_threads = 1")[2] == b"1\n"
    assert (
        http(server, "SELECT 1 SETTINGS max_threads = 1", default_format="JSONEachRow")[2]
        == b'{"1":1}\n'
    )


def test_clickhouse_connect_sees_which_settings_it_may_change(server: Server) -> None:
    from clickhouse_connect.driver.exceptions import ProgrammingError

    client = clickhouse_connect.get_client(host="127.0.0.1", port=server.port)
    try:
        changeable = {k for k, v in client.server_settings.items() if not v.readonly}
        assert set(ANALYST_SETTINGS) & set(client.server_settings) <= changeable
        assert {"max_threads", "date_time_input_format"} <= changeable
        assert not {"allow_ddl", "readonly", "max_memory_usage"} & changeable
        assert client.command("SELECT getSetting('readonly')") == 1
        # The client refuses a setting it may not change, before sending it.
        with pytest.raises(ProgrammingError, match="max_memory_usage is readonly"):
            client.command("SELECT 1", settings={"max_memory_usage": 1_000_000})
        assert client.query(
            "SELECT toDateTime('2024-01-02 03:04:05', 'UTC') AS t", settings={"max_threads": 1}
        ).result_rows == [(dt.datetime(2024, 1, 2, 3, 4, 5),)]
    finally:
        client.close()
