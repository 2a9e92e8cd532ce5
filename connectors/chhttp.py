"""ClickHouse's HTTP interface in front of the embedded chDB warehouse.

Only one process may open a chDB path, so the warehouse process owns it (`ChdbExecutor`) and
serves the part of ClickHouse's HTTP protocol that clickhouse-connect and curl use (`serve`),
so analysts and the CLI query with standard clients while the sink writes in-process.

The front is read-only by default. `classify` is the gate: a small lexer that mirrors
ClickHouse's (strings, quoted identifiers, heredocs, nested comments) so that literals and
comments cannot smuggle a statement past it. Read-only requests also run with the engine's own
``readonly=2``, which blocks writes a second time should the gate ever be fooled.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import json
import logging
import os
import queue
import re
import socket
import socketserver
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import parse_qsl, urlsplit

from connectors.errors import WarehouseError

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

__all__ = [
    "ChdbExecutor",
    "Classification",
    "ExecResult",
    "QueryError",
    "Server",
    "classify",
    "prepare",
    "serve",
    "tokens",
]

# --- ClickHouse error codes this module produces or maps to HTTP statuses ---------------------

BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_FORMAT = 73
TIMEOUT_EXCEEDED = 159
READONLY = 164
TOO_MANY_SIMULTANEOUS_QUERIES = 202
QUERY_IS_TOO_LARGE = 229
UNKNOWN_EXCEPTION = 1002

_ERROR_NAMES = {
    BAD_ARGUMENTS: "BAD_ARGUMENTS",
    NOT_IMPLEMENTED: "NOT_IMPLEMENTED",
    SYNTAX_ERROR: "SYNTAX_ERROR",
    UNKNOWN_FORMAT: "UNKNOWN_FORMAT",
    TIMEOUT_EXCEEDED: "TIMEOUT_EXCEEDED",
    READONLY: "READONLY",
    TOO_MANY_SIMULTANEOUS_QUERIES: "TOO_MANY_SIMULTANEOUS_QUERIES",
    QUERY_IS_TOO_LARGE: "QUERY_IS_TOO_LARGE",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# ClickHouse's exceptionCodeToHTTPStatus; everything else is a 500.
# fmt: off
_HTTP_STATUS_OF_CODE: dict[int, int] = {
    **dict.fromkeys((36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8,
                     167, 168, 223, 62, 117, 53, 321), 400),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    497: 403, 192: 403, QUERY_IS_TOO_LARGE: 413, NOT_IMPLEMENTED: 501, 209: 503, 76: 503,
    439: 503, TIMEOUT_EXCEEDED: 408,
    # Not ClickHouse's mapping (it has none): 503 makes clickhouse-connect retry a read.
    TOO_MANY_SIMULTANEOUS_QUERIES: 503,
}
# fmt: on


class QueryError(WarehouseError):
    """A statement failed, with ClickHouse's error code (62 syntax, 164 readonly, ...)."""

    def __init__(self, code: int, message: str, name: str | None = None) -> None:
        self.code = code
        self.message = message
        self.name = name or _ERROR_NAMES.get(code)
        super().__init__(self.text())

    def text(self, version: str | None = None) -> str:
        """The error as ClickHouse prints it: ``Code: N. DB::Exception: msg. (NAME) (version V)``."""
        out = f"Code: {self.code}. DB::Exception: {self.message.rstrip().rstrip('.')}."
        if self.name:
            out += f" ({self.name})"
        if version:
            out += f" (version {version})"
        return out

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS_OF_CODE.get(self.code, 500)

    @classmethod
    def from_chdb(cls, exc: BaseException | str) -> QueryError:
        """Parse chDB's exception text; it nests ("Code: 115. DB::Exception: Code: 115. ...")."""
        text = str(exc).strip()
        code_match = _CODE_RE.search(text)
        code = int(code_match.group(1)) if code_match else UNKNOWN_EXCEPTION
        names = _NAME_RE.findall(text)
        message = text
        while (m := _PREFIX_RE.match(message)) is not None:
            message = message[m.end() :]
        while True:
            stripped = _TRAILER_RE.sub("", message)
            if stripped == message:
                break
            message = stripped
        if code_match is None:
            message = (
                f"{type(exc).__name__}: {message}" if isinstance(exc, BaseException) else message
            )
        return cls(code, message or text, names[-1] if names else None)


_CODE_RE = re.compile(r"\bCode: (\d+)\.")
_NAME_RE = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")
_PREFIX_RE = re.compile(r"\s*Code: \d+\.\s*(?:DB::Exception:\s*)?")
# One trailing " (NAME)" or " (version X (build))" with the dot before it.
_TRAILER_RE = re.compile(r"\.?\s*\((?:[A-Z][A-Z0-9_]+|version (?:[^()]|\([^()]*\))*)\)\s*\.?\s*$")


# --- lexer ------------------------------------------------------------------------------------


class Token(NamedTuple):
    kind: str  # "word" | "qid" (quoted identifier) | "str" | "punct" | "error"
    text: str
    start: int
    end: int
    depth: int  # round-bracket nesting of the token; a ")" has the depth of its "("


# Mirrors ClickHouse's Lexer: a backslash escapes anything and a doubled quote is a quote inside
# strings and quoted identifiers; `#` starts a comment only before a space or "!". Possessive
# quantifiers keep unterminated literals linear. Whitespace is folded into the next match to halve
# the Python-level iterations; "/", "$" and unterminated quotes are handled by hand.
_LEX_RE = re.compile(
    r"""
    [ \t\n\r\f\v]*+
    (?:
      (?P<skip>(?:--|//|\#[ !])[^\n]*+)
    | (?P<str>'(?:[^'\\]|\\.|'')*+')
    | (?P<qid>"(?:[^"\\]|\\.|"")*+"|`(?:[^`\\]|\\.|``)*+`)
    | (?P<word>[0-9A-Za-z_\x80-\U0010ffff][0-9A-Za-z_$\x80-\U0010ffff]*+)
    | (?P<punct>[^$/'"`])
    )
    """,
    re.VERBOSE | re.DOTALL,
)
_WHITESPACE_RE = re.compile(r"[ \t\n\r\f\v]*+")
_DOLLAR_WORD_RE = re.compile(r"\$[0-9A-Za-z_$]*+")
_BLOCK_RE = re.compile(r"/\*|\*/")


def _block_comment_end(sql: str, start: int) -> int:
    """End of the (nested, like ClickHouse's) block comment opening at start; -1 if unclosed."""
    level = 1
    for m in _BLOCK_RE.finditer(sql, start + 2):
        level += 1 if m.group() == "/*" else -1
        if level == 0:
            return m.end()
    return -1


class _Heredocs:
    """Finds where a heredoc ``$tag$...$tag$`` ends, as ClickHouse does, in O(log n).

    ClickHouse searches the rest of the query for the tag, which is quadratic in the number of
    unmatched tags. Any occurrence of a tag ``$x$`` (x without "$") spans two consecutive
    dollars, so indexing the text between consecutive dollars answers the same question.
    """

    def __init__(self, sql: str) -> None:
        self.dollars = [i for i, ch in enumerate(sql) if ch == "$"]
        self.at: dict[str, list[int]] = {}
        for a, b in itertools.pairwise(self.dollars):
            self.at.setdefault(sql[a : b + 1], []).append(a)

    def end(self, sql: str, start: int) -> int:
        """End of the heredoc opening at start (a "$"), or -1."""
        i = bisect.bisect_right(self.dollars, start)
        if i == len(self.dollars):
            return -1
        close = self.dollars[i]
        tag = sql[start : close + 1]
        places = self.at.get(tag, [])
        j = bisect.bisect_left(places, close + 1)
        return places[j] + len(tag) if j < len(places) else -1


def tokens(sql: str) -> Iterator[Token]:
    """Significant tokens of sql, lazily (so INSERT data after FORMAT is never scanned).

    Whitespace and comments are skipped. An unterminated literal or comment yields one
    "error" token and ends the stream.
    """
    pos, n, depth = 0, len(sql), 0
    heredocs: _Heredocs | None = None
    match = _LEX_RE.match
    while pos < n:
        m = match(sql, pos)
        if m is not None:
            kind = m.lastgroup or "punct"
            if kind == "skip":
                pos = m.end()
                continue
            start, pos = m.start(kind), m.end()
            text = m.group(kind)
            if text == ")":
                depth = max(0, depth - 1)
            yield Token(kind, text, start, pos, depth)
            if text == "(":
                depth += 1
            continue
        pos = _WHITESPACE_RE.match(sql, pos).end()  # type: ignore[union-attr]
        if pos >= n:
            return
        ch = sql[pos]
        if ch == "/":
            if sql.startswith("/*", pos):
                end = _block_comment_end(sql, pos)
                if end < 0:
                    yield Token("error", "multiline comment is not closed", pos, n, depth)
                    return
            else:
                end = pos + 1
                yield Token("punct", "/", pos, end, depth)
            pos = end
        elif ch == "$":
            heredocs = heredocs or _Heredocs(sql)
            end = heredocs.end(sql, pos)
            if end >= 0:
                yield Token("str", sql[pos:end], pos, end, depth)
            else:
                end = _DOLLAR_WORD_RE.match(sql, pos).end()  # type: ignore[union-attr]
                yield Token("word" if end - pos > 1 else "punct", sql[pos:end], pos, end, depth)
            pos = end
        else:  # an opening quote that never closes
            yield Token("error", f"quote {ch} is not closed", pos, n, depth)
            return


def _unquote(tok: Token) -> str:
    return tok.text[1:-1] if tok.kind == "qid" else tok.text


def _is_word(tok: Token | None, *words: str) -> bool:
    return tok is not None and tok.kind == "word" and tok.text.upper() in words


def _significant_after_semicolon(toks: list[Token]) -> bool:
    """True when a ";" is followed by anything but more ";": a second statement."""
    seen = False
    for t in toks:
        if t.kind == "punct" and t.text == ";":
            seen = True
        elif seen:
            return True
    return False


# --- read-only classification -----------------------------------------------------------------

READ_STATEMENTS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"})
# fmt: off
_OTHER_STATEMENTS = frozenset({
    "INSERT", "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "OPTIMIZE", "SYSTEM", "KILL",
    "SET", "USE", "ATTACH", "DETACH", "GRANT", "REVOKE", "DELETE", "UPDATE", "UNDROP", "BACKUP",
    "RESTORE", "EXCHANGE", "CHECK", "WATCH", "BEGIN", "COMMIT", "ROLLBACK", "REPLACE", "MOVE",
    "FROM", "VALUES", "UPSERT",
})
# fmt: on
# Statement keywords that may follow a WITH clause (ClickHouse accepts WITH ... INSERT); refused
# anywhere unless qualified ("t.delete") or quoted. SHOW CREATE is the one legitimate read.
# fmt: off
_WRITE_WORDS = frozenset({
    "INSERT", "CREATE", "ALTER", "DROP", "TRUNCATE", "RENAME", "OPTIMIZE", "ATTACH", "DETACH",
    "GRANT", "REVOKE", "UNDROP", "BACKUP", "RESTORE", "EXCHANGE", "KILL", "DELETE", "UPDATE",
})
# fmt: on
# Table (and scalar) functions that touch files, processes, Python objects or the network.
# fmt: off
_IO_FUNCTIONS = frozenset({
    "file", "filecluster", "filesystem", "url", "urlcluster", "s3", "s3cluster", "gcs", "oss",
    "cosn", "remote", "remotesecure", "cluster", "clusterallreplicas", "mysql", "postgresql",
    "sqlite", "mongodb", "redis", "odbc", "jdbc", "executable", "executablepool", "input",
    "python", "arrowstream", "eval", "bigquery", "ytsaurus", "hive", "arrowflight",
    "prometheusquery", "prometheusqueryrange",
})
# fmt: on
_IO_FUNCTION_PREFIXES = ("azureblobstorage", "deltalake", "iceberg", "hudi", "paimon", "hdfs")


class Classification(NamedTuple):
    allowed: bool
    reason: str


def _is_io_function(name: str) -> bool:
    low = name.lower()
    return low in _IO_FUNCTIONS or low.startswith(_IO_FUNCTION_PREFIXES)


def _classify(sql: str) -> tuple[bool, str, int]:
    """(allowed, reason, ClickHouse code for a refusal: 62 malformed, 164 not read-only)."""
    toks: list[Token] = []
    for t in tokens(sql):
        if t.kind == "error":
            return False, f"Syntax error: {t.text}", SYNTAX_ERROR
        toks.append(t)
    if not toks:
        return False, "Empty query", SYNTAX_ERROR
    if _significant_after_semicolon(toks):
        return False, "Multi-statements are not allowed", SYNTAX_ERROR
    first = next((t for t in toks if t.text != "("), None)
    if first is None or first.kind != "word":
        return False, "Syntax error: expected a statement", SYNTAX_ERROR
    keyword = first.text.upper()
    if keyword not in READ_STATEMENTS:
        if keyword in _OTHER_STATEMENTS:
            return False, f"{keyword} is not a read-only statement", READONLY
        return False, f"Syntax error: unknown statement {first.text!r}", SYNTAX_ERROR
    for i, t in enumerate(toks):
        prev = toks[i - 1] if i else None
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if t.kind == "word":
            word = t.text.upper()
            qualified = (prev is not None and prev.text == ".") or (
                nxt is not None and nxt.text == "."
            )
            if word in _WRITE_WORDS and not qualified and not _is_word(prev, "SHOW"):
                return False, f"{word} is not allowed in a read-only statement", READONLY
            if word == "OUTFILE":
                return False, "INTO OUTFILE writes files", READONLY
        if t.kind in ("word", "qid") and nxt is not None and nxt.text == "(":
            name = _unquote(t)
            if _is_io_function(name):
                return False, f"{name}() reads files, processes or the network", READONLY
    return True, f"{keyword} is read-only", 0


def classify(sql: str) -> Classification:
    """Whether sql is one read-only statement that touches only the warehouse's own tables.

    Allowed: a single SELECT, WITH, SHOW, DESCRIBE/DESC, EXISTS or EXPLAIN statement (optionally
    parenthesised, optionally ending in ";") that calls no table function reading files, processes
    or the network, has no INTO OUTFILE, and has no write keyword outside a quoted identifier.
    Never raises.
    """
    try:
        allowed, reason, _ = _classify(sql)
    except Exception as exc:  # pragma: no cover - the lexer has no failure mode left
        return Classification(False, f"unclassifiable: {exc}")
    return Classification(allowed, reason)


# --- statement preparation: settings as SQL, the statement's own FORMAT -------------------------

OUTPUT_STATEMENTS = READ_STATEMENTS
# chDB's Python wrapper turns these "formats" into Python objects rather than bytes.
_PYTHON_FORMATS = frozenset({"dataframe", "arrowtable", "datastore", "debug"})
_SETTING_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_SETTING_VALUE_BAD = re.compile(r"['\"`;\\\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class Prepared:
    """A statement ready for chDB.

    kind is "output" (SELECT-like: settings ride as a trailing SETTINGS clause), "insert"
    (settings spliced before VALUES/FORMAT/SELECT) or "other" (DDL and the rest, which take no
    SETTINGS clause: `set_settings` are applied with SET around it on a private connection).
    """

    sql: str
    fmt: str | None
    kind: str
    set_settings: tuple[tuple[str, str], ...] = ()


def _settings_sql(settings: Mapping[str, str]) -> str:
    parts = []
    for name, value in settings.items():
        if not _SETTING_NAME_RE.match(name):
            raise QueryError(BAD_ARGUMENTS, f"Invalid setting name {name!r}")
        value = str(value)
        if _SETTING_VALUE_BAD.search(value):
            raise QueryError(
                BAD_ARGUMENTS, f"Invalid value for setting {name}: quotes, ';' are not allowed"
            )
        # A quoted literal is coerced to the setting's type; a bare word would not parse.
        parts.append(f"{name} = '{value}'")
    return ", ".join(parts)


def _syntax_error(tok: Token) -> QueryError:
    return QueryError(SYNTAX_ERROR, f"Syntax error: {tok.text} at position {tok.start}")


def _strip_trailing_semicolons(toks: list[Token]) -> list[Token]:
    end = len(toks)
    while end and toks[end - 1].kind == "punct" and toks[end - 1].text == ";":
        end -= 1
    return toks[:end]


def _trailing_format(toks: list[Token]) -> tuple[Token, Token, bool] | None:
    """The statement's own ``FORMAT name [SETTINGS ...]`` tail: (FORMAT, name, settings follow)."""
    top = [t for t in toks if t.depth == 0]
    for i in range(len(top) - 2, -1, -1):
        if _is_word(top[i], "FORMAT") and top[i + 1].kind in ("word", "qid"):
            after = top[i + 2] if i + 2 < len(top) else None
            if after is None or _is_word(after, "SETTINGS"):
                return top[i], top[i + 1], after is not None
    return None


def prepare(sql: str, settings: Mapping[str, str]) -> Prepared:
    """Turn sql plus per-request settings into what chDB runs; raises QueryError.

    chDB has no per-call settings, so settings become SQL. A trailing FORMAT clause is cut out
    and returned as fmt (chDB takes the format as an argument), so the SETTINGS clause can be
    appended. Multi-statements are refused (chDB would run every one of them); SET and USE are
    refused because they would stick to a pooled connection.
    """
    clause = _settings_sql(settings)
    it = tokens(sql)
    toks: list[Token] = []
    kind: str | None = None
    for t in it:
        if t.kind == "error":
            raise _syntax_error(t)
        toks.append(t)
        if kind is None and t.text != "(":
            keyword = t.text.upper() if t.kind == "word" else ""
            if keyword in ("SET", "USE"):
                raise QueryError(
                    NOT_IMPLEMENTED,
                    f"{keyword} needs a session, which this interface does not keep: pass "
                    "settings as URL parameters and the database as ?database=",
                )
            kind = (
                "output"
                if keyword in OUTPUT_STATEMENTS
                else "insert"
                if keyword == "INSERT"
                else "other"
            )
            if kind == "insert":
                break
        elif kind == "output" and t.depth == 0 and _is_word(t, "INSERT"):
            kind = "insert"  # WITH ... INSERT
            break
    if kind is None:
        raise QueryError(SYNTAX_ERROR, "Empty query")
    if kind == "insert":
        return _prepare_insert(sql, it, clause)
    if _significant_after_semicolon(toks):
        raise QueryError(SYNTAX_ERROR, "Multi-statements are not allowed")
    toks = _strip_trailing_semicolons(toks)
    if not toks:
        raise QueryError(SYNTAX_ERROR, "Empty query")
    text = sql[: toks[-1].end]
    if kind == "other":
        return Prepared(text, None, kind, tuple(settings.items()))
    fmt = None
    settings_follow = False
    tail = _trailing_format(toks)
    if tail is not None:
        fmt_tok, name_tok, settings_follow = tail
        fmt = _unquote(name_tok)
        text = text[: fmt_tok.start] + text[name_tok.end :]
    if clause:
        text += f", {clause}" if settings_follow else f"\nSETTINGS {clause}"
    return Prepared(text, fmt, kind)


def _prepare_insert(sql: str, it: Iterator[Token], clause: str) -> Prepared:
    for t in it:
        if t.kind == "error":
            raise _syntax_error(t)
        if t.depth or not _is_word(t, "FORMAT", "VALUES", "SELECT", "WITH", "SETTINGS"):
            continue
        text = sql
        if t.text.upper() != "FORMAT":
            # VALUES data and INSERT ... SELECT are SQL: a ";" then more would be a 2nd statement.
            rest = [t]
            for r in it:
                if r.kind == "error":
                    raise _syntax_error(r)
                rest.append(r)
            if _significant_after_semicolon(rest):
                raise QueryError(SYNTAX_ERROR, "Multi-statements are not allowed")
            text = sql[: _strip_trailing_semicolons(rest)[-1].end]
        # else: the data follows FORMAT, possibly binary; it is never lexed.
        if clause:
            if _is_word(t, "SETTINGS"):
                text = f"{text[: t.end]} {clause},{text[t.end :]}"
            else:
                text = f"{text[: t.start]}SETTINGS {clause} {text[t.start :]}"
        return Prepared(text, None, "insert")
    return Prepared(sql, None, "insert")  # no data clause: let the engine say what is wrong


# --- the executor -------------------------------------------------------------------------------


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
                handle.conn.query(f"SET {_settings_sql({name: value})}", "TabSeparated")
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


# --- HTTP ---------------------------------------------------------------------------------------

# URL parameters that belong to the HTTP layer or to clickhouse-connect, never to the engine
# (chDB rejects most of them as unknown settings). `readonly` is ours to set.
# fmt: off
_TRANSPORT_PARAMS = frozenset({
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
_TRUE = frozenset({"1", "true", "True", "TRUE"})
_MIN_COMPRESS_BYTES = 1024


def _content_type(fmt: str) -> str:
    f = fmt.lower()
    if f.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if f.startswith("csv"):
        header = "present" if "withnames" in f else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if "eachrow" in f or f in ("jsonlines", "ndjson"):
        return "application/x-ndjson; charset=UTF-8"
    if f.startswith("json"):
        return "application/json; charset=UTF-8"
    if f == "xml":
        return "application/xml; charset=UTF-8"
    if f.startswith(("pretty", "vertical", "markdown", "values", "template", "raw", "linea")):
        return "text/plain; charset=UTF-8"
    if f.startswith(
        ("native", "rowbinary", "parquet", "arrow", "orc", "avro", "protobuf")
    ) or f in (
        "msgpack",
        "capnproto",
        "npy",
        "bsoneachrow",
    ):
        return "application/octet-stream"
    return "text/plain; charset=UTF-8"


def _codecs() -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]]:
    """Content-Encodings we can produce and read: name -> (compress, bounded decompress)."""

    def zlib_codec(wbits: int) -> tuple[Callable[[bytes], bytes], Callable[[bytes, int], bytes]]:
        def compress(data: bytes) -> bytes:
            c = zlib.compressobj(3, zlib.DEFLATED, wbits)  # ClickHouse's default level is 3
            return c.compress(data) + c.flush()

        def decompress(data: bytes, limit: int) -> bytes:
            return zlib.decompressobj(wbits).decompress(data, limit + 1)

        return compress, decompress

    out = {"gzip": zlib_codec(31), "deflate": zlib_codec(15)}
    try:
        import lz4.frame as lz4f  # type: ignore[import-untyped,unused-ignore]

        out["lz4"] = (
            lz4f.compress,
            lambda data, limit: lz4f.LZ4FrameDecompressor().decompress(data, max_length=limit + 1),
        )
    except ImportError:
        pass
    try:
        from backports import zstd  # type: ignore[import-not-found,unused-ignore]

        out["zstd"] = (
            zstd.compress,
            lambda data, limit: zstd.ZstdDecompressor().decompress(data, max_length=limit + 1),
        )
    except ImportError:
        pass
    return out


_CODECS = _codecs()
# Cheapest first: the front is on loopback, where CPU costs more than bytes.
_ENCODING_PREFERENCE = [e for e in ("lz4", "zstd", "gzip", "deflate") if e in _CODECS]


def _pick_encoding(accept: str) -> str | None:
    offered = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    return next((e for e in _ENCODING_PREFERENCE if e in offered), None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        *,
        executor: ChdbExecutor,
        readonly: bool,
        max_body_bytes: int,
        threads: int,
        request_timeout: float,
        keepalive_timeout: float,
        query_timeout: float | None,
        max_connections: int,
    ) -> None:
        self.executor = executor
        self.readonly = readonly
        self.max_body_bytes = max_body_bytes
        self.request_timeout = request_timeout
        self.keepalive_timeout = keepalive_timeout
        self.query_timeout = query_timeout
        self.display_name = socket.gethostname()
        # Connections each hold a thread (keep-alive), queries each hold a chDB connection:
        # both are bounded, separately, so idle keep-alive clients cannot starve queries.
        self.query_slots = threading.BoundedSemaphore(threads)
        self._connection_slots = threading.BoundedSemaphore(max_connections)
        self._live: set[socket.socket] = set()
        self._live_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can hang without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._connection_slots.acquire(blocking=False):
            log.warning("refusing a connection from %s: too many connections", client_address)
            err = QueryError(TOO_MANY_SIMULTANEOUS_QUERIES, "Too many simultaneous connections")
            body = (err.text(self.executor.version) + "\n").encode()
            head = (
                f"HTTP/1.1 503 Service Unavailable\r\nX-ClickHouse-Exception-Code: {err.code}\r\n"
                f"Content-Type: text/plain; charset=UTF-8\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n"
            )
            with contextlib.suppress(OSError):
                request.sendall(head.encode() + body)
            self.shutdown_request(request)
            return
        with self._live_lock:
            self._live.add(request)
        try:
            super().process_request(request, client_address)
        except Exception:
            self._forget(request)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._forget(request)

    def _forget(self, request: socket.socket) -> None:
        with self._live_lock:
            if request in self._live:
                self._live.discard(request)
                self._connection_slots.release()

    def close_connections(self, timeout: float) -> None:
        """Wake every connection thread (idle keep-alive reads fail) and wait for them."""
        with self._live_lock:
            live = list(self._live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._live_lock:
                if not self._live:
                    return
            time.sleep(0.01)
        log.warning("ClickHouse HTTP front: %d connections still busy at shutdown", len(self._live))


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"
    server_version = "paystream-chhttp"
    # Headers and body go out in separate writes: with Nagle on, the client's delayed ACK
    # adds ~40 ms to every response (measured).
    disable_nagle_algorithm = True

    def handle_one_request(self) -> None:
        # Waiting for the next request on a kept-alive connection has its own, shorter timeout.
        try:
            self.connection.settimeout(self.server.keepalive_timeout)
        except OSError:
            self.close_connection = True
            return
        super().handle_one_request()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._serve(post=False)

    def do_POST(self) -> None:
        self._serve(post=True)

    # -- one request --

    def _serve(self, post: bool) -> None:
        self.connection.settimeout(self.server.request_timeout)
        query_id = str(uuid.uuid4())
        started = time.monotonic()
        try:
            url = urlsplit(self.path)
            if url.path == "/ping" or (url.path in ("", "/") and not post and not url.query):
                self._discard_body()
                self._reply(200, b"Ok.\n", {"Content-Type": "text/plain; charset=UTF-8"})
                return
            if url.path not in ("", "/"):
                self._discard_body()
                self._reply(
                    404,
                    f"There is no handle {url.path}\n".encode(),
                    {"Content-Type": "text/plain; charset=UTF-8"},
                )
                return
            try:
                params = dict(parse_qsl(url.query, keep_blank_values=True, max_num_fields=1000))
            except ValueError as exc:
                raise QueryError(BAD_ARGUMENTS, f"Cannot parse the URL parameters: {exc}") from exc
            query_id = params.get("query_id") or query_id
            result = self._query(params, post)
            self._reply_result(result, params, query_id)
            log.debug(
                "query %s: %d bytes %s in %.1f ms",
                query_id,
                len(result.data),
                result.fmt,
                (time.monotonic() - started) * 1e3,
            )
        except QueryError as err:
            log.info("query %s failed: %s", query_id, err)
            self._reply_error(err, query_id)
        except (TimeoutError, ConnectionError) as exc:
            log.debug("connection dropped: %s", exc)
            self.close_connection = True
        except Exception as exc:
            log.exception("query %s: unexpected error", query_id)
            self._reply_error(
                QueryError(UNKNOWN_EXCEPTION, f"{type(exc).__name__}: {exc}"), query_id
            )

    def _query(self, params: dict[str, str], post: bool) -> ExecResult:
        srv = self.server
        for flag in ("compress", "decompress"):
            if params.get(flag, "0") in _TRUE:
                raise QueryError(
                    NOT_IMPLEMENTED,
                    f"{flag}=1 (ClickHouse's native block compression) is not supported: "
                    "use HTTP compression (Accept-Encoding / Content-Encoding)",
                )
        if "multipart/form-data" in self.headers.get("Content-Type", ""):
            self.close_connection = True  # body left unread
            raise QueryError(
                NOT_IMPLEMENTED, "multipart requests (external data) are not supported"
            )
        body = self._read_body() if post else b""
        query = params.get("query", "").encode()
        sql = query + b"\n" + body if query and body else query or body
        if not sql.strip():
            raise QueryError(SYNTAX_ERROR, "Empty query")

        settings: dict[str, str] = {}
        query_params: dict[str, str] = {}
        for name, value in params.items():
            if name.startswith("param_"):
                query_params[name[len("param_") :]] = value
            elif name not in _TRANSPORT_PARAMS:
                settings[name] = value
        # ClickHouse runs GET requests read-only, and ?readonly=1 can only make it stricter.
        readonly = srv.readonly or not post or params.get("readonly", "0") not in ("", "0")
        if readonly:
            allowed, reason, code = _classify(sql.decode("latin-1"))
            if not allowed:
                if code == READONLY:
                    reason = f"Cannot execute query in readonly mode: {reason}"
                raise QueryError(code, reason)
            settings["readonly"] = "2"  # the engine refuses writes too (2 keeps settings usable)
        if srv.query_timeout and "max_execution_time" not in settings:
            settings["max_execution_time"] = f"{srv.query_timeout:g}"

        fmt = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or None
        database = params.get("database") or self.headers.get("X-ClickHouse-Database") or None
        if not srv.query_slots.acquire(timeout=srv.request_timeout):
            raise QueryError(TOO_MANY_SIMULTANEOUS_QUERIES, "Too many simultaneous queries")
        try:
            return srv.executor.run(sql, fmt, settings, database=database, params=query_params)
        finally:
            srv.query_slots.release()

    def _read_body(self) -> bytes:
        limit = self.server.max_body_bytes
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked(limit)
        else:
            raw_length = self.headers.get("Content-Length")
            if raw_length is None:
                return b""
            try:
                length = int(raw_length)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                raise QueryError(BAD_ARGUMENTS, f"Bad Content-Length {raw_length!r}")
            if length > limit:
                self.close_connection = True
                raise self._too_large(limit)
            body = self.rfile.read(length)
            if len(body) < length:
                raise ConnectionError("request body cut short")
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        if encoding and encoding != "identity":
            codec = _CODECS.get(encoding)
            if codec is None:
                raise QueryError(NOT_IMPLEMENTED, f"Unsupported Content-Encoding {encoding!r}")
            try:
                body = codec[1](body, limit)
            except Exception as exc:
                raise QueryError(
                    BAD_ARGUMENTS, f"Cannot decode the {encoding} body: {exc}"
                ) from exc
            if len(body) > limit:
                raise self._too_large(limit)
        return body

    def _read_chunked(self, limit: int) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                raise QueryError(BAD_ARGUMENTS, "Bad chunked request body") from None
            if size == 0:
                while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            if len(body) + size > limit:
                self.close_connection = True
                raise self._too_large(limit)
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                raise ConnectionError("request body cut short")
            body += chunk
            self.rfile.readline(1024)  # the chunk's CRLF

    def _discard_body(self) -> None:
        if self.headers.get("Content-Length", "0") != "0" or "Transfer-Encoding" in self.headers:
            self.close_connection = True  # cheaper than reading a body nobody wants

    @staticmethod
    def _too_large(limit: int) -> QueryError:
        return QueryError(QUERY_IS_TOO_LARGE, f"Request body exceeds the limit of {limit} bytes")

    # -- responses --

    def _common_headers(self, query_id: str) -> dict[str, str]:
        headers = {
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": self.server.display_name,
            "X-ClickHouse-Timezone": self.server.executor.timezone,
        }
        if not self.close_connection:
            headers["Keep-Alive"] = f"timeout={int(self.server.keepalive_timeout)}"
        return headers

    def _reply_result(self, result: ExecResult, params: dict[str, str], query_id: str) -> None:
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
            headers["Content-Type"] = _content_type(result.fmt)
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        data = result.data
        # ClickHouse compresses on Accept-Encoding when enable_http_compression is on; chDB's
        # default is on, and clickhouse-connect then sends only the header.
        if (
            len(data) >= _MIN_COMPRESS_BYTES
            and params.get("enable_http_compression", "1") in _TRUE
            and (encoding := _pick_encoding(self.headers.get("Accept-Encoding", "")))
        ):
            data = _CODECS[encoding][0](data)
            headers["Content-Encoding"] = encoding
        self._reply(200, data, headers)

    def _reply_error(self, err: QueryError, query_id: str) -> None:
        headers = self._common_headers(query_id)
        headers["X-ClickHouse-Exception-Code"] = str(err.code)
        headers["Content-Type"] = "text/plain; charset=UTF-8"
        body = (err.text(self.server.executor.version) + "\n").encode()
        try:
            self._reply(err.http_status, body, headers)
        except OSError:
            self.close_connection = True

    def _reply(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        self.send_response(status, HTTPStatus(status).phrase)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class Server:
    """A running HTTP front: `.url`, `.port`, `.shutdown()`; also a context manager."""

    def __init__(self, httpd: _HTTPServer, thread: threading.Thread) -> None:
        self._httpd = httpd
        self._thread = thread
        host, port = httpd.server_address[:2]
        self.host: str = str(host)
        self.port: int = int(port)
        self.url = f"http://{self.host}:{self.port}"
        self.readonly = httpd.readonly

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop accepting, drop idle connections, wait for running queries up to timeout."""
        if not self._thread.is_alive():
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections(timeout)
        self._thread.join(timeout)
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
) -> Server:
    """Serve ClickHouse's HTTP interface for executor on host:port (0 picks a free port).

    threads bounds concurrently running queries (give the executor at least as many
    connections); max_connections bounds open connections, each of which holds a thread.
    request_timeout bounds reading a request, keepalive_timeout an idle kept-alive connection,
    query_timeout (ClickHouse's max_execution_time unless the client sets it) a query.
    With readonly=False, POST requests may write (GET stays read-only, as in ClickHouse).
    """
    if threads < 1 or max_connections < 1 or max_body_bytes < 1:
        raise ValueError("threads, max_connections and max_body_bytes must be positive")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("the ClickHouse HTTP front has no authentication; binding %s", host)
    try:
        httpd = _HTTPServer(
            (host, port),
            executor=executor,
            readonly=readonly,
            max_body_bytes=max_body_bytes,
            threads=threads,
            request_timeout=request_timeout,
            keepalive_timeout=keepalive_timeout,
            query_timeout=query_timeout,
            max_connections=max_connections,
        )
    except OSError as exc:
        raise WarehouseError(f"cannot serve ClickHouse HTTP on {host}:{port}: {exc}") from exc
    thread = threading.Thread(
        target=httpd.serve_forever,
        kwargs={"poll_interval": 0.2},
        name=f"chhttp-{httpd.server_address[1]}",
        daemon=True,
    )
    thread.start()
    server = Server(httpd, thread)
    log.info(
        "ClickHouse HTTP front for %s on %s (%s)",
        executor.path,
        server.url,
        "read-only" if readonly else "read-write",
    )
    return server
