"""Fuzzing the Avro single-object decoder: DecodeError with a code, or a record that fits.

Inputs: random bytes, random bodies behind a real header, every truncation and bit flip of
valid records of every schema, wrong fingerprints and absurd length prefixes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import HEADER_BYTES, MAGIC, Codec
from schemas.errors import BAD_MAGIC, MALFORMED, TRUNCATED, UNKNOWN_SCHEMA, DecodeError
from tests.fuzz.strategies import hostile_strings

CODEC = Codec.default()
CODES = {BAD_MAGIC, UNKNOWN_SCHEMA, TRUNCATED, MALFORMED}
NAMES = [n.rsplit(".", 1)[-1] for n in CODEC.names]


def check_decode(data: bytes) -> tuple[str, dict[str, Any]] | DecodeError:
    """decode's whole contract, for one input."""
    try:
        name, record = CODEC.decode(data)
    except DecodeError as exc:
        assert exc.code in CODES, exc.code
        assert exc.message
        return exc
    # Whatever decodes is a record of that schema: it encodes again, to the same record.
    again = CODEC.encode(name, record)
    assert CODEC.decode(again) == (name, record)
    return name, record


def _value(ftype: Any, draw: st.DrawFn) -> Any:
    if isinstance(ftype, list):
        branch = draw(st.sampled_from(ftype))
        return None if branch == "null" else _value(branch, draw)
    if isinstance(ftype, dict):
        if ftype["type"] == "record":  # nested (the schedules' definition, occurrences)
            return {f["name"]: _value(f["type"], draw) for f in ftype["fields"]}
        if ftype["type"] == "array":
            n = draw(st.integers(0, 3))
            return [_value(ftype["items"], draw) for _ in range(n)]
        return _value(ftype["type"], draw)
    return draw(_leaf(ftype))


def _leaf(ftype: Any) -> st.SearchStrategy[Any]:
    if isinstance(ftype, dict) and ftype["type"] == "record":  # PspRequest's history items
        return st.fixed_dictionaries({f["name"]: _leaf_of(f["type"]) for f in ftype["fields"]})
    if isinstance(ftype, dict):
        ftype = ftype["type"]
    if ftype == "boolean":
        return st.booleans()
    if ftype == "long":
        return st.integers(-(1 << 63), (1 << 63) - 1)
    if ftype == "int":
        return st.integers(-(1 << 31), (1 << 31) - 1)
    if ftype == "boolean":
        return st.booleans()
    if ftype == "bytes":
        return st.binary(max_size=40)
    # Avro strings are UTF-8: no lone surrogates.
    return hostile_strings().map(lambda s: s.encode("utf-8", "replace").decode())


def _leaf_of(ftype: Any) -> st.SearchStrategy[Any]:
    if isinstance(ftype, list):
        return st.one_of(*(st.none() if t == "null" else _leaf(t) for t in ftype))
    return _leaf(ftype)


@st.composite
def valid_messages(draw: st.DrawFn) -> bytes:
    """A valid single-object message of any schema, with hostile string contents."""
    name = draw(st.sampled_from(NAMES))
    schema = CODEC.schema(name)
    record = {f["name"]: _value(f["type"], draw) for f in schema["fields"]}
    return CODEC.encode(name, record)


@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check_decode(data)


@given(st.sampled_from(NAMES), st.binary(max_size=200))
def test_random_body_behind_a_real_header(name: str, body: bytes) -> None:
    check_decode(MAGIC + CODEC.fingerprint_of(name) + body)


@given(valid_messages())
def test_valid_messages_round_trip(data: bytes) -> None:
    assert not isinstance(check_decode(data), DecodeError)


@given(valid_messages())
def test_every_truncation_is_refused(data: bytes) -> None:
    # A record's binary encoding is prefix-free: no cut can be a whole record.
    for end in range(len(data)):
        result = check_decode(data[:end])
        assert isinstance(result, DecodeError)
        if end < HEADER_BYTES:
            assert result.code == TRUNCATED
        else:
            assert result.code in (TRUNCATED, MALFORMED), result


@given(valid_messages(), st.data())
def test_bit_flips(data: bytes, draw: st.DataObject) -> None:
    flips = draw.draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=3))
    bad = bytearray(data)
    for bit in flips:
        bad[bit // 8] ^= 1 << (bit % 8)
    result = check_decode(bytes(bad))
    if any(bit // 8 < len(MAGIC) for bit in flips) and bytes(bad[:2]) != MAGIC:
        assert isinstance(result, DecodeError) and result.code == BAD_MAGIC


@given(valid_messages(), st.binary(min_size=8, max_size=8))
def test_wrong_fingerprints(data: bytes, fingerprint: bytes) -> None:
    known = {CODEC.fingerprint_of(n) for n in NAMES}
    result = check_decode(MAGIC + fingerprint + data[HEADER_BYTES:])
    if fingerprint not in known:
        assert isinstance(result, DecodeError) and result.code == UNKNOWN_SCHEMA


@given(valid_messages(), st.sampled_from(NAMES))
def test_another_schemas_fingerprint(data: bytes, name: str) -> None:
    check_decode(MAGIC + CODEC.fingerprint_of(name) + data[HEADER_BYTES:])


def _varint(n: int) -> bytes:
    z = ((n << 1) ^ (n >> 63)) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


@pytest.mark.parametrize("name", ["Deposit", "DeadLetter", "SagaStep", "Alert"])
@pytest.mark.parametrize("length", [-1, -(1 << 63), 1 << 31, (1 << 62), (1 << 63) - 1, 10**6])
def test_absurd_length_prefixes(name: str, length: int) -> None:
    """A string, bytes or array length far beyond the message: an error, not a huge allocation."""
    result = check_decode(MAGIC + CODEC.fingerprint_of(name) + _varint(length) + b"abc")
    assert isinstance(result, DecodeError)


@pytest.mark.parametrize("name", ["Deposit", "LedgerPosting"])
def test_overlong_varints(name: str) -> None:
    # Eleven continuation bytes: longer than any 64-bit varint.
    result = check_decode(MAGIC + CODEC.fingerprint_of(name) + b"\xff" * 11 + b"\x01")
    assert isinstance(result, DecodeError)


def test_non_utf8_strings() -> None:
    body = _varint(2) + b"\xff\xfe" + _varint(1) + b"a" + _varint(1) + b"1"
    result = check_decode(MAGIC + CODEC.fingerprint_of("Deposit") + body)
    assert isinstance(result, DecodeError) and result.code == MALFORMED


def test_accepts_buffers_of_any_kind() -> None:
    data = CODEC.encode("Deposit", {"command_id": "c", "account": "a", "amount": "1"})
    assert check_decode(bytearray(data)) == check_decode(memoryview(data)) == check_decode(data)
