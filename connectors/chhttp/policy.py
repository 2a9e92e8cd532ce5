"""What an analyst query runs with: ``readonly = 1``, applied last, and the settings a client
may pass.

Under ``readonly = 2`` the engine itself lets a read reach files and the network (measured
through chDB: ``SELECT count() FROM file('/etc/passwd', 'LineAsString') SETTINGS
readonly = 2`` counts the lines); under ``readonly = 1`` it refuses every table function but
the harmless ones (``numbers``...) with code 164, and refuses to change any setting. So the
engine is a second wall behind the gate, not just against writes.

The client's settings (URL parameters, or a statement's own ``SETTINGS`` clause) are applied
first and must be in :data:`ANALYST_SETTINGS`; ``readonly = 1`` comes last in the clause, so
nothing after it can lift it (ClickHouse refuses a later change of ``readonly`` with code 164).
``system.settings`` shows ``readonly = 0`` for the allowed settings, as ClickHouse does for a
read-only profile's ``changeable_in_readonly`` settings: clients (clickhouse-connect) look
there before sending a setting.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.chhttp.errors import READONLY, QueryError
from connectors.chhttp.lexer import Token, is_word, tokens

# Settings an analyst may set: limits that only make a query smaller or slower, and output
# formats. Documented in docs/warehouse.md; keep the two in step.
# fmt: off
ANALYST_SETTINGS: frozenset[str] = frozenset({
    # limits
    "max_threads", "max_block_size", "max_execution_time", "timeout_overflow_mode",
    "max_result_rows", "max_result_bytes", "result_overflow_mode", "max_rows_to_read",
    "max_bytes_to_read", "read_overflow_mode",
    # results and their format
    "extremes", "join_use_nulls", "session_timezone", "date_time_output_format",
    "date_time_input_format", "cast_string_to_dynamic_use_inference",
    "output_format_json_quote_64bit_integers", "output_format_json_quote_decimals",
    "output_format_json_quote_denormals", "output_format_json_named_tuples_as_objects",
    "output_format_decimal_trailing_zeros", "output_format_pretty_max_rows",
    "output_format_csv_crlf_end_of_line", "format_csv_delimiter",
    "output_format_arrow_string_as_string", "output_format_arrow_low_cardinality_as_dictionary",
})
# fmt: on


def analyst_settings(client: Mapping[str, str], query_timeout_s: float | None) -> dict[str, str]:
    """The settings an analyst query runs with, in the order they are applied.

    Raises QueryError 164 for a setting outside :data:`ANALYST_SETTINGS`, as ClickHouse does
    for a read-only user. ``max_execution_time`` is at most ``query_timeout_s``.
    """
    refused = sorted(name for name in client if name not in ANALYST_SETTINGS)
    if refused:
        raise QueryError(READONLY, f"Cannot modify '{refused[0]}' setting in readonly mode")
    out = dict(client)
    if query_timeout_s:
        asked = _seconds(out.get("max_execution_time"))
        if asked is None or asked <= 0 or asked > query_timeout_s:  # 0 is "no limit"
            out["max_execution_time"] = f"{query_timeout_s:g}"
    out["readonly"] = "1"  # last: what the client set comes before it and cannot undo it
    return out


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def check_statement_settings(sql: str) -> None:
    """Every setting a statement's own ``SETTINGS`` clauses name must be allowed.

    Raises QueryError 164 otherwise. ``SHOW SETTINGS LIKE ...`` names none.
    """
    toks = [t for t in tokens(sql) if t.kind != "error"]
    for i, t in enumerate(toks):
        if not is_word(t, "SETTINGS") or (i and toks[i - 1].text == "."):
            continue
        for name in _clause_names(toks, i + 1):
            if name not in ANALYST_SETTINGS:
                raise QueryError(READONLY, f"Cannot modify '{name}' setting in readonly mode")


def _clause_names(toks: list[Token], start: int) -> list[str]:
    """The setting names of ``name = value [, name = value ...]`` starting at ``start``."""
    names: list[str] = []
    i = start
    while i + 1 < len(toks) and toks[i].kind in ("word", "qid") and toks[i + 1].text == "=":
        names.append(toks[i].text.strip('`"').lower())
        i += 2
        depth = toks[i].depth if i < len(toks) else 0
        # The value: up to the next "," at the clause's depth (a value may be "-1" or a call).
        while i < len(toks) and not (toks[i].text == "," and toks[i].depth == depth):
            if toks[i].depth < depth:
                return names
            i += 1
        i += 1  # past the ","
    return names


_SETTINGS_VIEW = (
    "(SELECT * REPLACE (if(name IN ({names}), toUInt8(0), readonly) AS readonly)"
    " FROM system.settings)"
)


def show_changeable_settings(sql: str) -> str:
    """``FROM system.settings`` as the analyst sees it: ``readonly = 0`` for the allowed ones.

    Only a table reference right after FROM or JOIN is rewritten; the rest is left as it is.
    """
    toks = list(tokens(sql))
    out: list[str] = []
    pos = 0
    for i in range(1, len(toks) - 2):
        sys_, dot, table = toks[i], toks[i + 1], toks[i + 2]
        if not (
            is_word(toks[i - 1], "FROM", "JOIN")
            and sys_.kind in ("word", "qid")
            and sys_.text.strip('`"').lower() == "system"
            and dot.text == "."
            and table.kind in ("word", "qid")
            and table.text.strip('`"').lower() == "settings"
            and not (i + 3 < len(toks) and toks[i + 3].text in ("(", "."))
        ):
            continue
        names = ", ".join(f"'{n}'" for n in sorted(ANALYST_SETTINGS))
        out.append(sql[pos : sys_.start])
        out.append(_SETTINGS_VIEW.format(names=names))
        pos = table.end
    out.append(sql[pos:])
    return "".join(out)
