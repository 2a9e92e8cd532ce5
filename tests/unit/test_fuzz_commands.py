"""Fuzzing the JSON command parser: every line is a Command or an InvalidCommand with a code.

Whatever is accepted must also survive the rest of the way: Avro encoding, decoding, and
the conversion to a domain command (tests/unit/test_fuzz_records.py takes it into the ledger).
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from base.config import Limits
from producers.commands import COMMAND_TYPES, ID_FIELDS, Command, parse_command, parse_line
from producers.errors import CODES, INVALID_JSON, TOO_LONG, WRONG_TYPE, InvalidCommand
from schemas.codec import Codec
from streams.records import BadRecord, to_command
from tests.fuzz.strategies import any_char, command_objects, json_lines, json_values

LIMITS = Limits()
CODEC = Codec.default()
_CONTROL = re.compile("[\x00-\x1f\x7f\ud800-\udfff]")


def check_line(line: str | bytes) -> Command | InvalidCommand:
    """parse_line's whole contract, for one input."""
    try:
        cmd = parse_line(line, LIMITS)
    except InvalidCommand as exc:
        assert exc.code in CODES, exc.code
        assert exc.message
        assert str(exc).startswith(exc.code + ": ")
        assert len(exc.message) < 1000, "errors must not echo the whole input"
        return exc
    check_accepted(cmd)
    return cmd


def check_accepted(cmd: Command) -> None:
    spec = COMMAND_TYPES[cmd.type]
    assert cmd.schema == spec.schema
    assert list(cmd.record) == list(spec.fields)
    for name, value in cmd.record.items():
        if value is None:
            assert name in spec.optional
            continue
        assert isinstance(value, str)
        most = LIMITS.id_chars_max if name in ID_FIELDS else LIMITS.reason_chars_max
        assert len(value) <= most
        if name in ID_FIELDS:
            assert not _CONTROL.search(value), (name, value)
    assert cmd.key == cmd.record[spec.key_field]
    # It goes on the wire and comes back unchanged...
    data = CODEC.encode(cmd.schema, cmd.record)
    assert CODEC.decode(data) == (cmd.schema, dict(cmd.record))
    # ...and becomes a domain command, or a dead letter with a reason (reserved keys).
    try:
        to_command(cmd.schema, dict(cmd.record), 0)
    except BadRecord as exc:
        assert exc.code == "reserved_key", exc
    # The contract line is itself accepted, as the same command.
    assert parse_line(cmd.to_json(), LIMITS) == cmd


@given(command_objects(), st.booleans(), st.booleans())
def test_command_objects(obj: dict[str, object], ascii_only: bool, as_bytes: bool) -> None:
    text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True)
    line: str | bytes = text.encode("utf-8", "surrogatepass") if as_bytes else text
    result = check_line(line)
    # The object route (paystream send TYPE --flags) agrees with the line route.
    try:
        direct: Command | InvalidCommand = parse_command(obj, LIMITS)
    except InvalidCommand as exc:
        direct = exc
    if isinstance(result, Command):
        assert direct == result
    elif isinstance(direct, InvalidCommand) and result.code not in (
        INVALID_JSON,  # lone surrogates are not UTF-8
        TOO_LONG,  # the whole line is measured first
    ):
        assert direct.code == result.code


@given(json_lines())
def test_any_line(line: bytes) -> None:
    check_line(line)
    if not line.startswith(b"\xef\xbb\xbf"):
        check_line(line.decode("utf-8", "surrogateescape"))


@given(st.text(any_char, max_size=200))
def test_any_text(text: str) -> None:
    check_line(text)


@given(st.binary(max_size=200))
def test_any_bytes(data: bytes) -> None:
    check_line(data)


@given(json_values)
def test_any_json_value(value: object) -> None:
    check_line(json.dumps(value, allow_nan=True))


@pytest.mark.parametrize(
    "amount",
    ["1e309", "1E3", "NaN", "Infinity", "-Infinity", "-1", "1" * 5000, "-0", "1e-400", "0.1e1"],
)
def test_numeric_amounts_are_wrong_types(amount: str) -> None:
    """Amounts as JSON numbers (NaN and Infinity included) never reach the ledger."""
    line = '{"type":"deposit","command_id":"c","account":"a","amount":' + amount + "}"
    result = check_line(line)
    assert isinstance(result, InvalidCommand)
    # 5000 digits is more than Python's int() takes: a JSON error, not a number.
    assert result.code == (INVALID_JSON if len(amount) > 4300 else WRONG_TYPE)


@pytest.mark.parametrize("amount", ["1e309", "1E3", "NaN", "Infinity", "-5", "0x10", "1,00"])
def test_odd_amount_strings_are_sent_for_the_ledger_to_reject(amount: str) -> None:
    """The producer does not judge amounts (the ledger does, with a reason)."""
    cmd = check_line(
        json.dumps({"type": "deposit", "command_id": "c", "account": "a", "amount": amount})
    )
    assert isinstance(cmd, Command) and cmd.record["amount"] == amount


@pytest.mark.parametrize("field", ["command_id", "account"])
@pytest.mark.parametrize("size", [LIMITS.id_chars_max + 1, 60_000, 1 << 20])
def test_huge_ids(field: str, size: int) -> None:
    obj = {"type": "deposit", "command_id": "c", "account": "a", "amount": "1"}
    obj[field] = "x" * size
    result = check_line(json.dumps(obj))
    assert isinstance(result, InvalidCommand) and result.code == TOO_LONG
    if size < LIMITS.command_bytes_max:
        assert result.field == field


@example(depth=100_000)
@given(st.integers(1, 5000))
def test_deep_nesting(depth: int) -> None:
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        check_line(opener * depth + closer * depth)
        check_line(opener * depth)  # unterminated


def test_duplicate_keys_are_refused() -> None:
    line = '{"type":"deposit","command_id":"c","account":"a","amount":"1","amount":"1000"}'
    result = check_line(line)
    assert isinstance(result, InvalidCommand) and result.code == INVALID_JSON
