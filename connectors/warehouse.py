"""The audit warehouse: one clickhouse-connect client, embedded chDB or a real ClickHouse.

``PAYSTREAM_CLICKHOUSE_DSN=http://user:pass@host:8123/db`` points everything at a real
ClickHouse; otherwise the warehouse process opens chDB at ``var/warehouse`` and serves the
ClickHouse HTTP interface on 127.0.0.1:8123 for everyone else (only one process may open a
chDB path). The CLI talks HTTP to whichever of the two is configured: the same code path.
"""

from __future__ import annotations

import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from base.config import DEFAULT_WAREHOUSE_PORT, Settings

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = DEFAULT_WAREHOUSE_PORT


def chdb_path(settings: Settings) -> Path:
    return settings.home / "warehouse"


def http_port(settings: Settings) -> int:
    """The embedded warehouse's ClickHouse HTTP port (``PAYSTREAM_WAREHOUSE_PORT``)."""
    return settings.warehouse_port


def embedded(settings: Settings) -> bool:
    return not settings.clickhouse_dsn


def owner_client(settings: Settings) -> Client:
    """The client of the process that owns the warehouse (the sink): chDB in-process, or DSN."""
    if settings.clickhouse_dsn:
        return clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    path = chdb_path(settings)
    path.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=f"chdb://{path}")


def query_client(settings: Settings) -> Client:
    """A client for everyone else: the real ClickHouse, or the embedded one over HTTP."""
    if settings.clickhouse_dsn:
        return clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    return clickhouse_connect.get_client(host="127.0.0.1", port=http_port(settings))


def describe(settings: Settings) -> str:
    if settings.clickhouse_dsn:
        u = urlparse(settings.clickhouse_dsn)
        return f"ClickHouse at {u.hostname}:{u.port or DEFAULT_HTTP_PORT}"
    return f"chDB at {chdb_path(settings)}, served on http://127.0.0.1:{http_port(settings)}"


# --- migrations: versioned SQL files under ops/sql, each applied once, in order ---

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS paystream_migrations
(version UInt32, name String, applied_at DateTime64(6, 'UTC') DEFAULT now64(6))
ENGINE = ReplacingMergeTree ORDER BY version
"""


def migration_files() -> list[tuple[int, str, str]]:
    files = []
    for f in resources.files("ops").joinpath("sql").iterdir():
        m = re.match(r"(\d+)_(.+)\.sql$", f.name)
        if m:
            files.append((int(m.group(1)), f.name, f.read_text()))
    return sorted(files)


def statements(sql: str) -> list[str]:
    """Split a migration into statements at ';' outside quotes, dropping -- comment lines."""
    text = "\n".join(ln for ln in sql.splitlines() if not ln.strip().startswith("--"))
    out: list[str] = []
    buf: list[str] = []
    quote = ""
    for ch in text:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'`\"":
            quote = ch
        elif ch == ";":
            out.append("".join(buf).strip())
            buf = []
            continue
        buf.append(ch)
    out.append("".join(buf).strip())
    return [s for s in out if s]


def migrate(client: Client) -> list[str]:
    """Apply every migration not applied yet (idempotent). Returns the names applied."""
    client.command(_MIGRATIONS_TABLE)
    done = {
        r[0] for r in client.query("SELECT version FROM paystream_migrations FINAL").result_rows
    }
    applied = []
    for version, name, sql in migration_files():
        if version in done:
            continue
        for stmt in statements(sql):
            client.command(stmt)
        client.insert("paystream_migrations", [[version, name]], column_names=["version", "name"])
        applied.append(name)
        log.info("warehouse migration %s applied", name)
    return applied


def rows_as_dicts(result: Any) -> list[dict[str, Any]]:
    names = result.column_names
    return [dict(zip(names, row, strict=True)) for row in result.result_rows]


# --- the writer front: where the warehouse's own writers (reconciliation) insert ---

WRITER_BODY_BYTES_MAX = 64 * 1024 * 1024


def writer_port_file(settings: Settings) -> Path:
    return settings.home / "warehouse-writer.port"


def writer_key_file(settings: Settings) -> Path:
    """The writer front's password (0600, new at each start of the warehouse process)."""
    return settings.home / "warehouse-writer.key"


def writer_client(settings: Settings) -> Client:
    """A client that may write: the real ClickHouse, or the embedded warehouse's writer front
    (its port in $PAYSTREAM_HOME/warehouse-writer.port, written by the warehouse process)."""
    if settings.clickhouse_dsn:
        return clickhouse_connect.get_client(dsn=settings.clickhouse_dsn)
    path = writer_port_file(settings)
    try:
        port = int(path.read_text().strip())
        password = writer_key_file(settings).read_text().strip()
    except (OSError, ValueError) as exc:
        raise OSError(f"no warehouse writer front ({path}): is the warehouse up?") from exc
    return clickhouse_connect.get_client(
        host="127.0.0.1",
        port=port,
        password=password,
        send_receive_timeout=600,
        compress=False,
    )
