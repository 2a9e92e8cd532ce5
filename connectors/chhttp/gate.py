"""The read-only gate: is a statement one read that touches only the warehouse's own tables?

The engine refuses writes on its own too (analyst queries run with ``readonly = 1``, see
``policy``); the gate answers first, with a clear reason, and refuses what the engine would
let a read do (table functions that reach files, processes or the network).
"""

from __future__ import annotations

from typing import NamedTuple

from connectors.chhttp.errors import READONLY, SYNTAX_ERROR
from connectors.chhttp.lexer import Token, is_word, second_statement, tokens, unquote

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


def check_read_only(sql: str) -> tuple[bool, str, int]:
    """(allowed, reason, ClickHouse code for a refusal: 62 malformed, 164 not read-only)."""
    toks: list[Token] = []
    for t in tokens(sql):
        if t.kind == "error":
            return False, f"Syntax error: {t.text}", SYNTAX_ERROR
        toks.append(t)
    if not toks:
        return False, "Empty query", SYNTAX_ERROR
    if second_statement(toks):
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
            if word in _WRITE_WORDS and not qualified and not is_word(prev, "SHOW"):
                return False, f"{word} is not allowed in a read-only statement", READONLY
            if word == "OUTFILE":
                return False, "INTO OUTFILE writes files", READONLY
        if t.kind in ("word", "qid") and nxt is not None and nxt.text == "(":
            name = unquote(t)
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
        allowed, reason, _ = check_read_only(sql)
    except Exception as exc:  # pragma: no cover - the lexer has no failure mode left
        return Classification(False, f"unclassifiable: {exc}")
    return Classification(allowed, reason)
