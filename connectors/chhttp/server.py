"""ClickHouse's HTTP interface, served with aiohttp, in front of a :class:`ChdbExecutor`.

The part of the protocol clickhouse-connect and curl use: ``GET /ping``, and queries at ``/``
(GET: read-only; POST: the body is the query, or its data after ``?query=``), with settings,
``param_*`` query parameters, the database, formats, HTTP compression both ways, and errors
in ClickHouse's form (``X-ClickHouse-Exception-Code``, ``Code: N. DB::Exception: ...``).

The server runs its own event loop on a thread of the caller's process (the warehouse
process, whose main thread runs the sink); queries run on a pool of ``threads`` threads, one
chDB connection each (chDB releases the GIL while a query runs).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import parse_qsl

from aiohttp import web

from connectors.chhttp.encodings import (
    CODECS,
    MIN_COMPRESS_BYTES,
    TRUE,
    content_type,
    pick_encoding,
)
from connectors.chhttp.errors import (
    AUTHENTICATION_FAILED,
    BAD_ARGUMENTS,
    NOT_IMPLEMENTED,
    QUERY_IS_TOO_LARGE,
    READONLY,
    SYNTAX_ERROR,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    UNKNOWN_EXCEPTION,
    QueryError,
)
from connectors.chhttp.executor import ChdbExecutor, ExecResult
from connectors.chhttp.gate import check_read_only
from connectors.chhttp.policy import (
    analyst_settings,
    check_statement_settings,
    show_changeable_settings,
)
from connectors.errors import WarehouseError

log = logging.getLogger(__name__)

# URL parameters that belong to the HTTP layer or to clickhouse-connect, never to the engine
# (chDB rejects most of them as unknown settings). `readonly` is ours to set.
# fmt: off
TRANSPORT_PARAMS = frozenset({
    "query", "database", "default_format", "query_id", "session_id", "session_timeout",
    "session_check", "compress", "decompress", "buffer_size", "wait_end_of_query",
    "client_protocol_version", "user", "password", "quota_key", "role",
    "send_progress_in_http_headers", "http_headers_progress_interval_ms",
    "enable_http_compression", "http_zlib_compression_level",
    "http_native_compression_disable_checksumming_on_decompress",
    "cancel_http_readonly_queries_on_client_close", "add_http_cors_header",
    "http_response_buffer_size", "http_wait_end_of_query", "readonly", "stacktrace",
})
# fmt: on
SERVER_NAME = "paystream-chhttp"
_TEXT = "text/plain; charset=UTF-8"


@dataclass(frozen=True, slots=True)
class _Config:
    executor: ChdbExecutor
    readonly: bool
    max_body_bytes: int
    request_timeout: float
    keepalive_timeout: float
    query_timeout: float | None
    max_connections: int
    display_name: str
    # When set, every request must carry it (Basic auth, X-ClickHouse-Key or ?password=).
    password: str | None = None


class _Front:
    """The request handler: one per server, called on the server's event loop."""

    def __init__(self, cfg: _Config, threads: int) -> None:
        self.cfg = cfg
        # Connections and queries are bounded separately, so idle keep-alive clients cannot
        # starve queries; a query holds a pool thread (and a chDB connection) while it runs.
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="chhttp-query")
        self.query_slots = asyncio.Semaphore(threads)
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query_id = str(uuid.uuid4())
        started = time.monotonic()
        if self._too_many_connections():
            log.warning("refusing a request from %s: too many connections", request.remote)
            refused = QueryError(TOO_MANY_SIMULTANEOUS_QUERIES, "Too many simultaneous connections")
            return self._error(refused, query_id, close=True)
        post = request.method == "POST"
        try:
            path = request.path
            if path == "/ping" or (path in ("", "/") and not post and not request.query_string):
                return self._reply(200, b"Ok.\n", {"Content-Type": _TEXT}, close=_has_body(request))
            if not self._authenticated(request):
                log.warning("refusing a request from %s: wrong or missing password", request.remote)
                failed = QueryError(
                    AUTHENTICATION_FAILED, "Authentication failed: password is incorrect"
                )
                return self._error(failed, query_id, close=_has_body(request))
            if path not in ("", "/"):
                body = f"There is no handle {path}\n".encode()
                return self._reply(404, body, {"Content-Type": _TEXT}, close=_has_body(request))
            try:
                params = dict(
                    parse_qsl(request.query_string, keep_blank_values=True, max_num_fields=1000)
                )
            except ValueError as exc:
                raise QueryError(BAD_ARGUMENTS, f"Cannot parse the URL parameters: {exc}") from exc
            query_id = params.get("query_id") or query_id
            result = await self._query(request, params, post)
            log.debug(
                "query %s: %d bytes %s in %.1f ms",
                query_id,
                len(result.data),
                result.fmt,
                (time.monotonic() - started) * 1e3,
            )
            return self._result(request, result, params, query_id)
        except _Close as close:
            log.info("query %s failed: %s", query_id, close.error)
            return self._error(close.error, query_id, close=True)
        except QueryError as err:
            log.info("query %s failed: %s", query_id, err)
            return self._error(err, query_id)
        except (TimeoutError, ConnectionError) as exc:
            log.debug("connection dropped: %s", exc)
            raise  # aiohttp closes the connection
        except Exception as exc:
            log.exception("query %s: unexpected error", query_id)
            unexpected = QueryError(UNKNOWN_EXCEPTION, f"{type(exc).__name__}: {exc}")
            return self._error(unexpected, query_id)

    def _authenticated(self, request: web.Request) -> bool:
        expected = self.cfg.password
        if expected is None:
            return True
        given = request.headers.get("X-ClickHouse-Key") or request.query.get("password")
        auth = request.headers.get("Authorization", "")
        if given is None and auth.startswith("Basic "):
            try:
                given = base64.b64decode(auth[6:], validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        return given is not None and hmac.compare_digest(given.encode(), expected.encode())

    def _too_many_connections(self) -> bool:
        server = self.runner.server if self.runner is not None else None
        return server is not None and len(server.connections) > self.cfg.max_connections

    async def _query(self, request: web.Request, params: dict[str, str], post: bool) -> ExecResult:
        cfg = self.cfg
        for flag in ("compress", "decompress"):
            if params.get(flag, "0") in TRUE:
                raise QueryError(
                    NOT_IMPLEMENTED,
                    f"{flag}=1 (ClickHouse's native block compression) is not supported: "
                    "use HTTP compression (Accept-Encoding / Content-Encoding)",
                )
        if "multipart/form-data" in request.headers.get("Content-Type", ""):
            raise _Close(
                QueryError(NOT_IMPLEMENTED, "multipart requests (external data) are not supported")
            )
        body = await self._read_body(request) if post else b""
        query = params.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        if not sql.strip():
            raise QueryError(SYNTAX_ERROR, "Empty query")

        settings: dict[str, str] = {}
        query_params: dict[str, str] = {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[len("param_") :]] = value
            elif name not in TRANSPORT_PARAMS:
                settings[name] = value
        # ClickHouse runs GET requests read-only, and ?readonly=1 can only make it stricter.
        readonly = cfg.readonly or not post or params.get("readonly", "0") not in ("", "0")
        if readonly:
            # Latin-1 keeps every byte, so positions line up and the rewrite round-trips.
            text = sql.decode("latin-1")
            allowed, reason, code = check_read_only(text)
            if not allowed:
                if code == READONLY:
                    reason = f"Cannot execute query in readonly mode: {reason}"
                raise QueryError(code, reason)
            check_statement_settings(text)
            sql = show_changeable_settings(text).encode("latin-1")
            # The engine runs it with readonly = 1 too, applied last (policy.py).
            settings = analyst_settings(settings, cfg.query_timeout)
        elif cfg.query_timeout and "max_execution_time" not in settings:
            settings["max_execution_time"] = f"{cfg.query_timeout:g}"

        fmt = params.get("default_format") or request.headers.get("X-ClickHouse-Format") or None
        database = params.get("database") or request.headers.get("X-ClickHouse-Database") or None
        try:
            await asyncio.wait_for(self.query_slots.acquire(), cfg.request_timeout)
        except TimeoutError:
            raise QueryError(
                TOO_MANY_SIMULTANEOUS_QUERIES, "Too many simultaneous queries"
            ) from None
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.pool,
                lambda: cfg.executor.run(
                    sql, fmt, settings, database=database, params=query_params
                ),
            )
        finally:
            self.query_slots.release()

    async def _read_body(self, request: web.Request) -> bytes:
        """The body (chunked or not), decoded per Content-Encoding, at most max_body_bytes."""
        limit = self.cfg.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Close(_too_large(limit))
        body = bytearray()
        async with asyncio.timeout(self.cfg.request_timeout):
            while len(body) <= limit:
                chunk = await request.content.read(limit + 1 - len(body))
                if not chunk:
                    break
                body += chunk
        if len(body) > limit:
            raise _Close(_too_large(limit))
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            codec = CODECS.get(encoding)
            if codec is None:
                raise QueryError(NOT_IMPLEMENTED, f"Unsupported Content-Encoding {encoding!r}")
            try:
                decoded = codec[1](bytes(body), limit)
            except Exception as exc:
                raise QueryError(
                    BAD_ARGUMENTS, f"Cannot decode the {encoding} body: {exc}"
                ) from exc
            if len(decoded) > limit:
                raise _too_large(limit)
            return decoded
        return bytes(body)

    # -- responses --

    def _common_headers(self, query_id: str) -> dict[str, str]:
        return {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": self.cfg.display_name,
            "X-ClickHouse-Timezone": self.cfg.executor.timezone,
        }

    def _result(
        self, request: web.Request, result: ExecResult, params: dict[str, str], query_id: str
    ) -> web.Response:
        headers = self._common_headers(query_id)
        tz = params.get("session_timezone")
        if tz:
            headers["X-ClickHouse-Timezone"] = tz
        summary = {
            "read_rows": str(result.rows_read),
            "read_bytes": str(result.bytes_read),
            "written_rows": str(result.rows_written),
            "written_bytes": "0",
            "total_rows_to_read": str(result.rows_read),
            "result_rows": "0",
            "result_bytes": str(len(result.data)),
            "elapsed_ns": str(result.elapsed_ns),
        }
        headers["X-ClickHouse-Summary"] = json.dumps(summary, separators=(",", ":"))
        if result.has_output:
            headers["X-ClickHouse-Format"] = result.fmt
            headers["Content-Type"] = content_type(result.fmt)
        else:
            headers["Content-Type"] = _TEXT
        data = result.data
        # ClickHouse compresses on Accept-Encoding when enable_http_compression is on; chDB's
        # default is on, and clickhouse-connect then sends only the header.
        if (
            len(data) >= MIN_COMPRESS_BYTES
            and params.get("enable_http_compression", "1") in TRUE
            and (encoding := pick_encoding(request.headers.get("Accept-Encoding", "")))
        ):
            data = CODECS[encoding][0](data)
            headers["Content-Encoding"] = encoding
        return self._reply(200, data, headers)

    def _error(self, err: QueryError, query_id: str, close: bool = False) -> web.Response:
        headers = self._common_headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(err.code)
        headers["Content-Type"] = _TEXT
        body = (err.text(self.cfg.executor.version) + "\n").encode()
        return self._reply(err.http_status, body, headers, close=close)

    def _reply(
        self, status: int, body: bytes, headers: Mapping[str, str], close: bool = False
    ) -> web.Response:
        resp = web.Response(status=status, body=body, headers={**headers, "Server": SERVER_NAME})
        if close:
            resp.force_close()  # a body left unread, or a refused connection
        else:
            resp.headers["Keep-Alive"] = f"timeout={int(self.cfg.keepalive_timeout)}"
        return resp


class _Close(Exception):
    """Answer with ``error`` and close the connection (its request body was not read)."""

    def __init__(self, error: QueryError) -> None:
        super().__init__(str(error))
        self.error = error


def _too_large(limit: int) -> QueryError:
    return QueryError(QUERY_IS_TOO_LARGE, f"Request body exceeds the limit of {limit} bytes")


def _has_body(request: web.Request) -> bool:
    # Cheaper to close the connection than to read a body nobody wants.
    return bool(request.content_length) or "Transfer-Encoding" in request.headers


class Server:
    """A running HTTP front: ``.url``, ``.port``, ``.shutdown()``; also a context manager."""

    def __init__(
        self,
        front: _Front,
        loop: asyncio.AbstractEventLoop,
        thread: threading.Thread,
        host: str,
        port: int,
    ) -> None:
        self._front = front
        self._loop = loop
        self._thread = thread
        self.host = host
        self.port = port
        self.url = f"http://{host}:{port}"
        self.readonly = front.cfg.readonly

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, close idle connections, wait for running queries up to timeout."""
        if not self._thread.is_alive():
            return
        runner = self._front.runner
        if runner is not None:
            done = asyncio.run_coroutine_threadsafe(runner.cleanup(), self._loop)
            try:
                done.result(timeout + 1)
            except Exception:
                log.warning("ClickHouse HTTP front: unclean shutdown", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._front.pool.shutdown(wait=False, cancel_futures=True)
        log.info("ClickHouse HTTP front on %s stopped", self.url)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.shutdown()


def serve(
    executor: ChdbExecutor,
    host: str = "127.0.0.1",
    port: int = 8123,
    readonly: bool = True,
    max_body_bytes: int = 1_000_000,
    threads: int = 4,
    *,
    request_timeout: float = 30.0,
    keepalive_timeout: float = 10.0,
    query_timeout: float | None = 300.0,
    max_connections: int = 64,
    password: str | None = None,
) -> Server:
    """Serve ClickHouse's HTTP interface for executor on host:port (0 picks a free port).

    threads bounds concurrently running queries (give the executor at least as many
    connections); max_connections bounds open connections. request_timeout bounds reading a
    request body and waiting for a query slot, keepalive_timeout an idle kept-alive
    connection, query_timeout (ClickHouse's max_execution_time unless the client sets it) a
    query. With readonly=False, POST requests may write (GET stays read-only, as in ClickHouse).
    With a password, a request without it is refused (516 AUTHENTICATION_FAILED); /ping answers.
    """
    if threads < 1 or max_connections < 1 or max_body_bytes < 1:
        raise ValueError("threads, max_connections and max_body_bytes must be positive")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the ClickHouse HTTP front has no authentication; binding %s", host)
    cfg = _Config(
        executor=executor,
        readonly=readonly,
        max_body_bytes=max_body_bytes,
        request_timeout=request_timeout,
        keepalive_timeout=keepalive_timeout,
        query_timeout=query_timeout,
        max_connections=max_connections,
        display_name=socket.gethostname(),
        password=password,
    )
    loop = asyncio.new_event_loop()
    started: list[int] = []
    failed: list[BaseException] = []
    ready = threading.Event()
    front_box: list[_Front] = []

    async def start() -> None:
        front = _Front(cfg, threads)
        front_box.append(front)
        app = web.Application(client_max_size=max_body_bytes)
        app.router.add_get("/{tail:.*}", front.handle)  # and HEAD
        app.router.add_route("POST", "/{tail:.*}", front.handle)
        runner = web.AppRunner(
            app,
            access_log=None,
            shutdown_timeout=request_timeout,
            keepalive_timeout=keepalive_timeout,
            # Request bodies are decoded here, bounded by max_body_bytes (a zip bomb is not).
            auto_decompress=False,
        )
        await runner.setup()
        front.runner = runner
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        started.append(int(runner.addresses[0][1]))

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=run, name=f"chhttp-{port}", daemon=True)
    thread.start()
    ready.wait()
    if failed:
        thread.join(5)
        raise WarehouseError(f"cannot serve ClickHouse HTTP on {host}:{port}: {failed[0]}")
    server = Server(front_box[0], loop, thread, host, started[0])
    log.info(
        "ClickHouse HTTP front for %s on %s (%s)",
        executor.path,
        server.url,
        "read-only" if readonly else "read-write",
    )
    return server
