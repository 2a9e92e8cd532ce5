"""ClickHouse's error codes, and the error every part of the front raises: ``QueryError``.

The codes and HTTP statuses are ClickHouse's, so clients (clickhouse-connect, curl) see the
errors a real server would give.
"""

from __future__ import annotations

import re

from connectors.errors import WarehouseError

BAD_ARGUMENTS = 36
NOT_IMPLEMENTED = 48
SYNTAX_ERROR = 62
UNKNOWN_FORMAT = 73
TIMEOUT_EXCEEDED = 159
READONLY = 164
TOO_MANY_SIMULTANEOUS_QUERIES = 202
QUERY_IS_TOO_LARGE = 229
AUTHENTICATION_FAILED = 516
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
    AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
    UNKNOWN_EXCEPTION: "UNKNOWN_EXCEPTION",
}

# ClickHouse's exceptionCodeToHTTPStatus; everything else is a 500.
# fmt: off
_HTTP_STATUS_OF_CODE: dict[int, int] = {
    **dict.fromkeys((36, 427, 6, 25, 26, 38, 41, 72, 441, 675, 676, 27, 376, 15, 44, 37, 123, 8,
                     167, 168, 223, 62, 117, 53, 321), 400),
    **dict.fromkeys((60, 46, 47, 50, 56, 81, 115, 152, 63, 73, 336, 78, 511), 404),
    497: 403, 192: 403, AUTHENTICATION_FAILED: 403, QUERY_IS_TOO_LARGE: 413, NOT_IMPLEMENTED: 501, 209: 503, 76: 503,
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
