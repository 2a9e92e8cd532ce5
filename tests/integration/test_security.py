"""Secure defaults, checked on a running stack: loopback only, a token for writes, read-only SQL.

The stack is the one ``paystream up`` starts (``paystream.stack``: a ledger worker, the
warehouse with its ClickHouse HTTP front, the faust read side, the detector) against the test
broker, run as children of the test so nothing outlives it.
"""

from __future__ import annotations

import ipaddress
import json
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from base.config import API_TOKEN_FILE, Settings, api_token
from ops.kafka import KafkaCluster
from ops.procs import Supervisor
from paystream import queries
from paystream.stack import Layout
from schemas.codec import Codec
from streams.readside.app import bearer_token_ok
from tests.stack import stack_for

pytestmark = pytest.mark.integration


def loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped  # the JVM listens on ::ffff:127.0.0.1
    return addr.is_loopback


# --- the token, without a stack ---------------------------------------------------------------


def test_the_token_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home", bootstrap=None)
    token = api_token(s)
    path = s.home / API_TOKEN_FILE
    assert len(token) >= 40 and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api_token(s) == token  # kept, not regenerated
    assert [p.name for p in s.home.iterdir()] == [API_TOKEN_FILE]  # no temporary left over
    assert api_token(s.with_(api_token="from-the-environment")) == "from-the-environment"


def test_bearer_token_check() -> None:
    token = "s3cret-token"
    assert bearer_token_ok("Bearer s3cret-token", token)
    assert bearer_token_ok("bearer s3cret-token ", token)
    for header in (None, "", "Bearer", "Bearer ", "Basic s3cret-token", "s3cret-token",
                   "Bearer s3cret-tokem", "Bearer s3cret-token2", "Bearer \udcff"):  # fmt: skip
        assert not bearer_token_ok(header, token), header
    assert not bearer_token_ok("Bearer ", "")  # no token configured: nobody gets in


# --- a running stack ----------------------------------------------------------------------------


@dataclass
class Stack:
    settings: Settings
    sup: Supervisor
    readside_port: int
    warehouse_port: int
    token: str

    def request(
        self,
        port: int,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        method: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def post_command(
        self, body: bytes, token: str | None = None, scheme: str = "Bearer"
    ) -> tuple[int, dict[str, str], Any]:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"{scheme} {token}"
        status, h, raw = self.request(self.readside_port, "/commands", body, headers, "POST")
        return status, h, json.loads(raw) if raw[:1] in (b"{", b"[") else raw

    def sql(self, query: str, post: bool = False, **params: str) -> tuple[int, dict[str, str]]:
        if post:
            qs = urllib.parse.urlencode(params)
            status, h, _ = self.request(self.warehouse_port, f"/?{qs}", query.encode())
        else:
            qs = urllib.parse.urlencode({"query": query, **params})
            status, h, _ = self.request(self.warehouse_port, f"/?{qs}")
        return status, h


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    kafka_cluster: KafkaCluster,
    free_port_base: Callable[[int], int],
) -> Iterator[Stack]:
    from uuid import uuid4

    base = free_port_base(2)
    settings = Settings(
        home=tmp_path_factory.mktemp("secure-stack"),
        bootstrap=kafka_cluster.bootstrap,
        topic_prefix=f"t{uuid4().hex[:10]}.",
        partitions=4,
        readside_port=base,
        warehouse_port=base + 1,
    )
    stack = stack_for(settings, Layout(workers=1))
    try:
        stack.up(timeout_s=180)  # the topics, the token (what `paystream up` does), the processes
        yield Stack(settings, stack.sup, base, base + 1, api_token(settings))
    finally:
        stack.sup.stop_all()


def _tail(sup: Supervisor, name: str) -> str:
    path = sup.log_path(name)
    return "\n".join(path.read_text().splitlines()[-40:]) if path.exists() else "(no log)"


def _listening(pid: int) -> list[tuple[str, int]]:
    proc = psutil.Process(pid)
    out = []
    for p in [proc, *proc.children(recursive=True)]:
        for c in p.net_connections(kind="inet"):
            if c.status == psutil.CONN_LISTEN:
                ip = ipaddress.ip_address(c.laddr.ip)
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                out.append((str(ip), c.laddr.port))
    return out


def test_every_server_listens_on_loopback_only(stack: Stack, kafka_cluster: KafkaCluster) -> None:
    listening: dict[str, list[tuple[str, int]]] = {}
    for p in stack.sup.list():
        assert p["alive"], f"{p['name']} died:\n{_tail(stack.sup, p['name'])}"
        listening[p["name"]] = _listening(p["pid"])
    for i in kafka_cluster.node_ids:
        pid = kafka_cluster.supervisor.pid(kafka_cluster.node_name(i))
        assert pid is not None
        listening[kafka_cluster.node_name(i)] = _listening(pid)
    exposed = {n: [a for a in addrs if not loopback(a[0])] for n, addrs in listening.items()}
    assert not any(exposed.values()), exposed
    # The check is not vacuous: every server is found listening where expected.
    assert ("127.0.0.1", stack.readside_port) in listening["readside"]
    assert ("127.0.0.1", stack.warehouse_port) in listening["warehouse"]
    assert ("127.0.0.1", kafka_cluster.broker_port(1)) in listening["kafka-1"]
    assert ("127.0.0.1", kafka_cluster.controller_port(1)) in listening["kafka-1"]
    assert listening["ledger-1"] == [] and listening["detector"] == []
    # And the broker's configuration says so.
    props = (kafka_cluster.node_dir(1) / "server.properties").read_text()
    listeners = next(ln for ln in props.splitlines() if ln.startswith("listeners="))
    assert all("//127.0.0.1:" in part for part in listeners.split("=", 1)[1].split(","))


# --- POST /commands ------------------------------------------------------------------------------


def test_post_commands_needs_the_token(stack: Stack) -> None:
    body = b'{"type":"deposit","command_id":"nope","account":"acct-1","amount":"1.00"}'
    for token, scheme in (
        (None, "Bearer"),
        ("", "Bearer"),
        ("wrong", "Bearer"),
        (stack.token + "x", "Bearer"),
        (stack.token[:-1], "Bearer"),
        (stack.token, "Basic"),
        (stack.token, "Token"),
    ):
        status, headers, answer = stack.post_command(body, token, scheme)
        assert status == 401, (token, scheme, answer)
        assert answer["error"] == "unauthorized"
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert headers["Content-Type"].startswith("application/json")
    # A token in the query string is not a token.
    status, _, _ = stack.request(
        stack.readside_port, f"/commands?token={stack.token}", body, method="POST"
    )
    assert status == 401
    # Reads stay open; the write endpoint takes nothing but POST.
    assert stack.request(stack.readside_port, "/health")[0] == 200
    assert stack.request(stack.readside_port, "/commands")[0] == 405


def test_post_commands_refuses_bad_commands(stack: Stack) -> None:
    limit = stack.settings.limits.http_body_bytes_max
    cases = [
        (b"not json", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"[1,2]", 400, "not_an_object"),
        (b'{"type":"deposit","account":"a","amount":"1"}', 400, "missing_field"),
        (b'{"type":"deposit","command_id":"c","account":"a","amount":1e309}', 400, "wrong_type"),
        (b'{"type":"deposit","command_id":"c","account":"a\\u0000","amount":"1"}', 400,
         "bad_characters"),
        (b'{"type":"drop","command_id":"c"}', 400, "unknown_type"),
        (b'{"type":"deposit","command_id":"c","account":"a","amount":"1","x":"$(id)"}', 400,
         "unknown_field"),
        (b"\xff\xfe", 400, "invalid_json"),
        (b'{"type":"deposit","command_id":"' + b"x" * limit + b'"}', 413, "too_large"),
    ]  # fmt: skip
    for body, status, code in cases:
        got, _, answer = stack.post_command(body, stack.token)
        assert (got, answer["error"]) == (status, code), (body[:80], answer)
        assert answer.get("message")


def test_post_commands_sends_to_the_ledger(stack: Stack) -> None:
    sent = []
    for line in (
        {"type": "open_account", "command_id": "h1", "account": "web-1", "user": "web-user",
         "currency": "USD"},
        {"type": "deposit", "command_id": "h2", "account": "web-1", "amount": "12.50"},
        {"type": "deposit", "command_id": "h3", "account": "web-1", "amount": "1e309"},
    ):  # fmt: skip
        status, _, answer = stack.post_command(json.dumps(line).encode(), stack.token)
        assert status == 202, answer
        assert answer["command_id"] == line["command_id"] and answer["offset"] >= 0
        sent.append(answer)
    # A retry with the same command_id is accepted by the API and takes effect once.
    status, _, _ = stack.post_command(
        b'{"type":"deposit","command_id":"h2","account":"web-1","amount":"12.50"}', stack.token
    )
    assert status == 202
    assert queries.wait(stack.settings, 120)
    deadline = time.monotonic() + 90
    while True:
        outcomes = {}
        for cid in ("h1", "h2", "h3"):
            status, _, raw = stack.request(stack.readside_port, f"/commands/{cid}")
            if status == 200:
                outcomes[cid] = json.loads(raw)
        if len(outcomes) == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [outcomes[c]["status"] for c in ("h1", "h2", "h3")] == [
        "accepted",
        "accepted",
        "rejected",
    ], outcomes
    assert outcomes["h3"]["reason"] == "amount_malformed"
    status, _, raw = stack.request(stack.readside_port, "/accounts/web-1")
    assert status == 200 and json.loads(raw)["balance"] == "12.50"
    # On the commands topic, Avro-encoded like every other producer's commands.
    codec = Codec.default()
    from base.topics import TopicNames

    commands = [
        codec.decode(m.value())
        for m in queries.scan(stack.settings, TopicNames(stack.settings.topic_prefix).commands)
    ]
    assert [r["command_id"] for _, r in commands] == ["h1", "h2", "h3", "h2"]


def test_the_openapi_document_describes_the_token(stack: Stack) -> None:
    status, _, raw = stack.request(stack.readside_port, "/openapi.json")
    assert status == 200
    doc = json.loads(raw)
    op = doc["paths"]["/commands"]["post"]
    assert op["security"] == [{"bearerAuth": []}]
    assert set(op["responses"]) == {"202", "400", "401", "413", "503"}
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


# --- the analyst SQL endpoint ---------------------------------------------------------------------

# Beyond tests/integration/test_chhttp.py (INSERT, DROP, ALTER, file() through
# clickhouse-connect against an in-process server): the warehouse process itself, over plain
# HTTP, GET and POST, with ClickHouse settings in the URL that try to lift the restriction.
WRITES = [
    "INSERT INTO ledger_entries (event_id) VALUES ('x')",
    "INSERT INTO FUNCTION file('/tmp/paystream-pwned.csv', 'CSV') SELECT 1",
    "ALTER TABLE ledger_entries DELETE WHERE 1",
    "ALTER TABLE ledger_entries ADD COLUMN pwned UInt8",
    "DROP TABLE ledger_entries",
    "DROP DATABASE default",
    "TRUNCATE TABLE ledger_entries",
    "RENAME TABLE ledger_entries TO gone",
    "CREATE TABLE pwned (a UInt8) ENGINE = Memory",
    "CREATE DATABASE pwned",
    "CREATE USER pwned IDENTIFIED BY 'x'",
    "CREATE FUNCTION pwned AS (x) -> x",
    "SYSTEM SHUTDOWN",
    "SYSTEM DROP MARK CACHE",
    "SYSTEM FLUSH LOGS",
    "KILL QUERY WHERE 1",
    "OPTIMIZE TABLE ledger_entries FINAL",
    "GRANT ALL ON *.* TO default",
    "SET readonly = 0",
    "DETACH TABLE ledger_entries",
    "SELECT * FROM file('/etc/passwd', 'LineAsString')",
    "SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
    "SELECT * FROM urlCluster('default', 'http://127.0.0.1:1/', 'CSV', 'a String')",
    "SELECT * FROM remote('127.0.0.1:9000', system.one)",
    "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV', 'a String')",
    "SELECT * FROM executable('id', 'TSV', 'a String')",
    "SELECT * FROM mysql('127.0.0.1:3306', 'db', 't', 'u', 'p')",
    "SELECT 1 INTO OUTFILE '/tmp/paystream-pwned.txt'",
    "WITH 1 AS x INSERT INTO ledger_entries SELECT * FROM ledger_entries",
    "SELECT 1; DROP TABLE ledger_entries",
    "/* comment */ DrOp TaBlE ledger_entries",
]


@pytest.mark.parametrize("sql", WRITES)
def test_the_warehouse_refuses_writes_and_io_functions(stack: Stack, sql: str) -> None:
    for post in (False, True):
        for params in ({}, {"readonly": "0"}, {"allow_ddl": "1"}):
            status, headers = stack.sql(sql, post=post, **params)
            assert status != 200, (sql, post, params)
            assert headers.get("X-ClickHouse-Exception-Code") in ("62", "164", "115"), (
                sql,
                headers,
            )


def test_the_warehouse_is_unchanged(stack: Stack) -> None:
    q = "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name FORMAT JSON"
    status, _, raw = stack.request(
        stack.warehouse_port, "/?" + urllib.parse.urlencode({"query": q})
    )
    assert status == 200
    names = [r["name"] for r in json.loads(raw)["data"]]
    assert "ledger_entries" in names and "pwned" not in names and "gone" not in names
    assert not Path("/tmp/paystream-pwned.csv").exists()
    assert not Path("/tmp/paystream-pwned.txt").exists()
    # Reads still work.
    assert stack.sql("SELECT count() FROM ledger_entries")[0] == 200
