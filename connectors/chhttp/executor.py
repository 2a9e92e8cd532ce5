"""The in-process chDB engine of one warehouse path, run from any number of threads."""

from __future__ import annotations

import logging
import os
import queue
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from connectors.chhttp.errors import TOO_MANY_SIMULTANEOUS_QUERIES, UNKNOWN_FORMAT, QueryError
from connectors.chhttp.statements import prepare, settings_sql
from connectors.errors import WarehouseError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

# chDB's Python wrapper turns these "formats" into Python objects rather than bytes.
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})


@dataclass(frozen=True, slots=True)
class ExecResult:
    data: bytes
    fmt: str  # format of data
    has_output: bool  # a result set (SELECT-like) rather than a command's empty answer
    rows_read: int = 0
    bytes_read: int = 0
    rows_written: int = 0
    elapsed_ns: int = 0


class _Handle:
    __slots__ = ("conn", "database")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.database = "default"


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


class ChdbExecutor:
    """Owns the in-process chDB engine for one path and runs statements on it.

    Holds `pool_size` chDB connections to the one engine: a connection runs one query at a time
    (measured: two threads on one connection serialize, on two connections they run in
    parallel; chDB releases the GIL while a query runs). Each call borrows one connection, so
    calls from any number of threads are safe. USE and SET state is per connection, which is
    why the database is re-selected per call and SET is refused.
    """

    def __init__(self, path: str, pool_size: int = 4, acquire_timeout: float = 60.0) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        # chDB makes a relative path absolute without normalising it and refuses a second,
        # differently spelled path in the same process: normalise once here.
        self.path = os.path.abspath(path)
        if "?" in self.path:
            raise ValueError(f"chDB reads '?' in a path as connection options: {self.path}")
        self._acquire_timeout = acquire_timeout
        self._pool: queue.LifoQueue[_Handle] = queue.LifoQueue()
        self._handles: list[_Handle] = []
        self._closed = False
        os.makedirs(self.path, exist_ok=True)
        try:
            import chdb

            for _ in range(pool_size):
                handle = _Handle(chdb.connect(self.path))  # type: ignore[no-untyped-call,unused-ignore]
                self._handles.append(handle)
                self._pool.put(handle)
        except Exception as exc:
            self.close()
            raise WarehouseError(f"cannot open chDB at {self.path}: {exc}") from exc
        version, _, tz = (
            self.execute("SELECT version(), timezone()").decode().strip().partition("\t")
        )
        self.version: str = version
        self.timezone: str = tz or "UTC"
        log.debug("chDB %s at %s, %d connections", self.version, self.path, pool_size)

    def execute(
        self,
        sql: str | bytes,
        fmt: str | None = None,
        settings: Mapping[str, str] | None = None,
        *,
        database: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> bytes:
        """Run one statement; its output in ClickHouse format fmt (TabSeparated by default).

        A FORMAT clause in sql wins over fmt, as in ClickHouse. settings apply to this statement
        only; params fill ``{name:Type}`` placeholders. Raises QueryError.
        """
        return self.run(sql, fmt, settings, database=database, params=params).data

    def run(
        self,
        sql: str | bytes,
        fmt: str | None = None,
        settings: Mapping[str, str] | None = None,
        *,
        database: str | None = None,
        params: Mapping[str, str] | None = None,
    ) -> ExecResult:
        """`execute`, with the effective format and the engine's statistics."""
        # Bytes (an HTTP body, maybe with binary INSERT data) are rewritten as latin-1 so that
        # every byte survives and keyword positions still line up.
        text = sql if isinstance(sql, str) else sql.decode("latin-1")
        prepared = prepare(text, settings or {})
        payload: str | bytes = (
            prepared.sql if isinstance(sql, str) else prepared.sql.encode("latin-1")
        )
        out_fmt = prepared.fmt or fmt or "TabSeparated"
        if out_fmt.lower() in _PYTHON_FORMATS:
            raise QueryError(
                UNKNOWN_FORMAT, f"Format {out_fmt} is not available over this interface"
            )
        handle = self._acquire()
        try:
            self._use(handle, database or "default")
            applied = self._apply(handle, prepared.set_settings)
            try:
                result = handle.conn.query(payload, out_fmt, params=dict(params or {}))
            finally:
                self._restore(handle, applied)
            data = result.bytes() or b""
            return ExecResult(
                data=data,
                fmt=out_fmt,
                has_output=prepared.kind == "output" or (prepared.kind == "other" and bool(data)),
                rows_read=_stat(result, "rows_read"),
                bytes_read=_stat(result, "bytes_read"),
                rows_written=_stat(result, "rows_written"),
                elapsed_ns=int(_stat(result, "elapsed", 0.0) * 1e9),
            )
        except QueryError:
            raise
        except Exception as exc:
            raise QueryError.from_chdb(exc) from exc
        finally:
            self._pool.put(handle)

    def _acquire(self) -> _Handle:
        if self._closed:
            raise WarehouseError("the chDB executor is closed")
        try:
            return self._pool.get(timeout=self._acquire_timeout)
        except queue.Empty:
            raise QueryError(
                TOO_MANY_SIMULTANEOUS_QUERIES,
                f"Too many simultaneous queries: no chDB connection free in {self._acquire_timeout:g}s",
            ) from None

    @staticmethod
    def _use(handle: _Handle, database: str) -> None:
        if handle.database != database:
            try:
                handle.conn.query(f"USE {_quote_identifier(database)}", "TabSeparated")
            except Exception as exc:
                raise QueryError.from_chdb(exc) from exc
            handle.database = database

    @staticmethod
    def _apply(handle: _Handle, settings: tuple[tuple[str, str], ...]) -> list[str]:
        applied: list[str] = []
        try:
            for name, value in settings:
                handle.conn.query(f"SET {settings_sql({name: value})}", "TabSeparated")
                applied.append(name)
        except Exception:
            ChdbExecutor._restore(handle, applied)
            raise
        return applied

    @staticmethod
    def _restore(handle: _Handle, names: list[str]) -> None:
        # Pooled connections never carry session settings otherwise, so DEFAULT is exact.
        for name in names:
            try:
                handle.conn.query(f"SET {name} = DEFAULT", "TabSeparated")
            except Exception:
                log.warning("could not reset setting %s on a chDB connection", name, exc_info=True)

    def client(self, **kwargs: Any) -> Client:
        """A clickhouse-connect client on the same engine, for in-process use (inserts)."""
        import clickhouse_connect

        return clickhouse_connect.get_client(dsn=f"chdb://{self.path}", **kwargs)

    def close(self) -> None:
        """Close the connections (waits for running statements to give theirs back)."""
        if self._closed:
            return
        self._closed = True
        for _ in range(len(self._handles)):
            try:
                handle = self._pool.get(timeout=self._acquire_timeout)
            except queue.Empty:
                log.warning("closing the chDB executor with statements still running")
                break
            try:
                handle.conn.close()
            except Exception:
                log.debug("error closing a chDB connection", exc_info=True)

    def __enter__(self) -> ChdbExecutor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _stat(result: Any, name: str, default: Any = 0) -> Any:
    try:
        return getattr(result, name)()
    except Exception:
        return default
