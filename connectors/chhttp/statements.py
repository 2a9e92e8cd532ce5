"""Statement rewriting for chDB: per-request settings become SQL, a trailing FORMAT is cut out.

chDB has no per-call settings and takes the output format as an argument, so a statement and
its request's settings are turned into one statement chDB runs as ClickHouse would have.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from connectors.chhttp.errors import BAD_ARGUMENTS, NOT_IMPLEMENTED, SYNTAX_ERROR, QueryError
from connectors.chhttp.gate import READ_STATEMENTS
from connectors.chhttp.lexer import Token, is_word, second_statement, tokens, unquote

OUTPUT_STATEMENTS = READ_STATEMENTS
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


def settings_sql(settings: Mapping[str, str]) -> str:
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
        if is_word(top[i], "FORMAT") and top[i + 1].kind in ("word", "qid"):
            after = top[i + 2] if i + 2 < len(top) else None
            if after is None or is_word(after, "SETTINGS"):
                return top[i], top[i + 1], after is not None
    return None


def prepare(sql: str, settings: Mapping[str, str]) -> Prepared:
    """Turn sql plus per-request settings into what chDB runs; raises QueryError.

    chDB has no per-call settings, so settings become SQL. A trailing FORMAT clause is cut out
    and returned as fmt (chDB takes the format as an argument), so the SETTINGS clause can be
    appended. Multi-statements are refused (chDB would run every one of them); SET and USE are
    refused because they would stick to a pooled connection.
    """
    clause = settings_sql(settings)
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
        elif kind == "output" and t.depth == 0 and is_word(t, "INSERT"):
            kind = "insert"  # WITH ... INSERT
            break
    if kind is None:
        raise QueryError(SYNTAX_ERROR, "Empty query")
    if kind == "insert":
        return _prepare_insert(sql, it, clause)
    if second_statement(toks):
        raise QueryError(SYNTAX_ERROR, "Multi-statements are not allowed")
    toks = _strip_trailing_semicolons(toks)
    if not toks:
        raise QueryError(SYNTAX_ERROR, "Empty query")
    text = sql[: toks[-1].end]
    if kind == "other":
        return Prepared(text, None, kind, tuple(settings.items()))
    fmt = None
    settings_follow = False
    top = [t for t in toks if t.depth == 0]
    tail = _trailing_format(toks)
    if tail is not None:
        fmt_tok, name_tok, settings_follow = tail
        fmt = unquote(name_tok)
        text = text[: fmt_tok.start] + text[name_tok.end :]
        top = [t for t in top if t is not fmt_tok and t is not name_tok]
    if clause:
        # One clause: the statement's own settings first, then the request's. (A second
        # SETTINGS clause would apply before the first, and readonly must come last.)
        merge = settings_follow or _ends_with_settings(top)
        text += f", {clause}" if merge else f"\nSETTINGS {clause}"
    return Prepared(text, fmt, kind)


def _ends_with_settings(top: list[Token]) -> bool:
    """Does the statement end with its own ``SETTINGS name = value [, ...]`` clause?"""
    for i in range(len(top) - 1, -1, -1):
        if is_word(top[i], "SETTINGS") and not (i and top[i - 1].text == "."):
            return _is_settings_list(top[i + 1 :])
    return False


def _is_settings_list(toks: list[Token]) -> bool:
    """``name = value [, name = value ...]`` and nothing else; a value is one literal or word,
    maybe signed."""
    i, n = 0, len(toks)
    while True:
        if not (i + 2 < n and toks[i].kind in ("word", "qid") and toks[i + 1].text == "="):
            return False
        i += 2
        if toks[i].text in ("-", "+"):
            i += 1
        if i >= n or toks[i].kind not in ("word", "str"):
            return False
        i += 1
        if i == n:
            return True
        if toks[i].text != ",":
            return False
        i += 1


def _prepare_insert(sql: str, it: Iterator[Token], clause: str) -> Prepared:
    for t in it:
        if t.kind == "error":
            raise _syntax_error(t)
        if t.depth or not is_word(t, "FORMAT", "VALUES", "SELECT", "WITH", "SETTINGS"):
            continue
        text = sql
        if t.text.upper() != "FORMAT":
            # VALUES data and INSERT ... SELECT are SQL: a ";" then more would be a 2nd statement.
            rest = [t]
            for r in it:
                if r.kind == "error":
                    raise _syntax_error(r)
                rest.append(r)
            if second_statement(rest):
                raise QueryError(SYNTAX_ERROR, "Multi-statements are not allowed")
            text = sql[: _strip_trailing_semicolons(rest)[-1].end]
        # else: the data follows FORMAT, possibly binary; it is never lexed.
        if clause:
            if is_word(t, "SETTINGS"):
                text = f"{text[: t.end]} {clause},{text[t.end :]}"
            else:
                text = f"{text[: t.start]}SETTINGS {clause} {text[t.start :]}"
        return Prepared(text, None, "insert")
    return Prepared(sql, None, "insert")  # no data clause: let the engine say what is wrong
