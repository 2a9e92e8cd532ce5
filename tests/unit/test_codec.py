"""The Avro single-object codec: wire format, errors, evolution, and the schemas' docs."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import schemas
from schemas._flat import make_decoder, make_encoder
from schemas.codec import HEADER_BYTES, MAGIC, Codec, _parse, fingerprint
from schemas.errors import DecodeError, EncodeError

SCHEMA_DIR = Path(schemas.__file__).parent
ALL_AVSC = sorted(SCHEMA_DIR.rglob("*.avsc"))
CURRENT = schemas.current_schemas()


def _has_non_flat_field(schema: dict[str, Any]) -> bool:
    """Arrays (Alert, PaymentAttempt) and booleans (payment events) go to fastavro."""
    text = json.dumps([f["type"] for f in schema["fields"]])
    return '"array"' in text or '"boolean"' in text


# Records the hand-written fast codec takes (flat ones); Alert has arrays and goes to fastavro.
FLAT = {name: s for name, s in CURRENT.items() if not _has_non_flat_field(s)}

EXPECTED_NAMES = {
    "paystream.commands": {
        "OpenAccount",
        "Deposit",
        "Withdraw",
        "Transfer",
        "BlockAccount",
        "UnblockAccount",
        "RelateAccounts",
        "UnrelateAccounts",
        # From the payments workers only (not in the JSON command format).
        "AuthorizePayin",
        "SettlePayin",
        "CancelPayin",
        "HoldPayout",
        "PostPayout",
        "VoidPayout",
    },
    "paystream.payments": {
        "RequestPayment",
        "PspResult",
        "PspRequest",
        "PspDeadLetter",
        "PspBreakerChanged",
        "PspStats",
    },
    "paystream.risk": {
        "RiskRequest",
        "RiskAccountFact",
        "RiskActivation",
        "RiskDecision",
        "RiskVersion",
        "RiskLabel",
    },
    "paystream.reviews": {"ReviewRequest", "ReviewEvent"},
    "paystream.events": {
        "LedgerPosting",
        "CommandOutcome",
        "TransferEvent",
        "AccountEvent",
        "Alert",
        "PaymentStatusChanged",
        "PaymentAttempt",
    },
    "paystream.saga": {"SagaStep"},
    "paystream.schedules": {
        "ScheduleCommand",
        "ScheduledPaymentSettled",
        "ScheduleState",
        "ScheduleChanged",
        "ScheduleOccurrence",
    },
    "paystream.users": {"UserRequest"},
    "paystream.ops": {"DeadLetter"},
}


@pytest.fixture
def codec() -> Codec:
    # A private instance: tests that register schemas must not touch the shared default.
    return Codec()


# -- helpers ---------------------------------------------------------------------------------


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO straight from the Avro specification, independent of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def _sample_value(schema_type: Any, field: str, variant: int) -> Any:
    if isinstance(schema_type, list):  # ["null", X]: alternate null and a value
        if variant % 2 == 0:
            return None
        return _sample_value(next(t for t in schema_type if t != "null"), field, variant)
    if isinstance(schema_type, dict):
        if schema_type["type"] == "record":  # a nested record (ScheduleState's)
            return _sample(schema_type, variant)
        if schema_type["type"] == "array":  # 0, 1 or 2 items
            return [
                _sample_value(schema_type["items"], field, variant + i) for i in range(variant % 3)
            ]
        if schema_type["type"] == "record":  # a nested record (PspRequest's history)
            return {
                f["name"]: _sample_value(f["type"], f["name"], variant)
                for f in schema_type["fields"]
            }
        return _sample_value(schema_type["type"], field, variant)
    if schema_type == "string":
        # Non-ASCII and JSON-ish characters: the body is length-prefixed UTF-8.
        return f'{field}-{variant}-é€😀"\\'
    if schema_type == "long":
        return [0, 1, -1, 2**63 - 1, -(2**63), 1_700_000_000_123_456][variant % 6]
    if schema_type == "bytes":
        return bytes(range(256))[variant:] + b"\x00"
    if schema_type == "boolean":
        return variant % 2 == 1
    raise AssertionError(f"no sample for {schema_type!r}")


def _sample(schema: dict[str, Any], variant: int = 1) -> dict[str, Any]:
    return {f["name"]: _sample_value(f["type"], f["name"], variant) for f in schema["fields"]}


def _deposit_with_channel() -> dict[str, Any]:
    """A *future* Deposit: one extra field with a default (a backward-compatible change)."""
    newer = copy.deepcopy(CURRENT["paystream.commands.Deposit"])
    newer["fields"].append(
        {"name": "channel", "type": "string", "default": "api", "doc": "Where it came from."}
    )
    return newer


def _block_account_without_reason() -> dict[str, Any]:
    """An *older* BlockAccount, before the optional reason existed."""
    older = copy.deepcopy(CURRENT["paystream.commands.BlockAccount"])
    older["fields"] = [f for f in older["fields"] if f["name"] != "reason"]
    return older


# -- the schema files ------------------------------------------------------------------------


def test_every_expected_schema_exists_in_its_namespace() -> None:
    found: dict[str, set[str]] = {}
    for full in CURRENT:
        namespace, _, name = full.rpartition(".")
        found.setdefault(namespace, set()).add(name)
    assert found == EXPECTED_NAMES


@pytest.mark.parametrize("path", ALL_AVSC, ids=lambda p: str(p.relative_to(SCHEMA_DIR)))
def test_every_record_and_field_has_a_doc(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    missing = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, list):
            for branch in node:
                walk(branch, where)
        elif isinstance(node, dict) and node.get("type") == "record":
            here = f"{where}{node['name']}"
            if not str(node.get("doc", "")).strip():
                missing.append(here)
            for field in node["fields"]:
                if not str(field.get("doc", "")).strip():
                    missing.append(f"{here}.{field['name']}")
                walk(field["type"], f"{here}.{field['name']}:")

    walk(schema, "")
    assert not missing, f"{path.name}: no doc on {missing}"


@pytest.mark.parametrize("path", ALL_AVSC, ids=lambda p: str(p.relative_to(SCHEMA_DIR)))
def test_file_names_match_schema_names(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    stem = path.name.split(".")[0]  # History files are <Name>.v<N>.avsc.
    assert schema["name"] == stem
    if path.parent.name == "history":
        assert path.name.split(".")[1].startswith("v")


@pytest.mark.parametrize("full", sorted(CURRENT))
def test_nullable_fields_default_to_null_and_timestamps_are_micros(full: str) -> None:
    for field in CURRENT[full]["fields"]:
        if isinstance(field["type"], list):
            assert field["type"][0] == "null" and "default" in field, field["name"]
            assert field["default"] is None, field["name"]
        if field["name"] == "ts":
            assert field["type"] == {"type": "long", "logicalType": "timestamp-micros"}


# -- wire format -----------------------------------------------------------------------------


def test_fingerprint_matches_the_avro_spec_vectors() -> None:
    # From the Avro specification's test data: CRC-64-AVRO("null") as a Java long.
    assert fingerprint("null") == (7195948357588979594).to_bytes(8, "little")  # type: ignore[arg-type]
    for schema in CURRENT.values():
        canonical = to_parsing_canonical_form(schema).encode()
        assert fingerprint(schema) == _crc64_avro(canonical).to_bytes(8, "little")


@pytest.mark.parametrize("full", sorted(CURRENT))
def test_header_is_magic_then_little_endian_fingerprint(codec: Codec, full: str) -> None:
    data = codec.encode(full, _sample(CURRENT[full]))
    assert data[:2] == b"\xc3\x01" == MAGIC
    assert data[2:HEADER_BYTES] == fingerprint(CURRENT[full])
    assert codec.fingerprint_of(full) == data[2:HEADER_BYTES]


@pytest.mark.parametrize("full", sorted(CURRENT))
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_round_trip_every_schema(codec: Codec, full: str, variant: int) -> None:
    record = _sample(CURRENT[full], variant)
    short = full.rsplit(".", 1)[1]
    data = codec.encode(full, record)
    assert codec.encode(short, record) == data  # short and full names are interchangeable
    assert codec.decode(data) == (short, record)


def test_timestamps_stay_integers(codec: Codec) -> None:
    record = _sample(CURRENT["paystream.ops.DeadLetter"])
    record["ts"] = schemas.now_micros()
    _, back = codec.decode(codec.encode("DeadLetter", record))
    assert type(back["ts"]) is int and back["ts"] == record["ts"]


def test_optional_fields_may_be_left_out(codec: Codec) -> None:
    data = codec.encode("BlockAccount", {"command_id": "c5", "account": "acct-2"})
    assert codec.decode(data) == (
        "BlockAccount",
        {"command_id": "c5", "account": "acct-2", "reason": None},
    )


def test_decode_accepts_bytearray_and_memoryview(codec: Codec) -> None:
    data = codec.encode("Deposit", {"command_id": "c", "account": "a", "amount": "1"})
    assert codec.decode(bytearray(data)) == codec.decode(memoryview(data)) == codec.decode(data)


def test_default_is_a_shared_instance() -> None:
    assert Codec.default() is Codec.default()
    assert isinstance(Codec.default(), Codec)


# -- encode errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "record", "code"),
    [
        ("NoSuchRecord", {}, "unknown_schema"),
        ("Deposit", {"command_id": "c", "account": "a"}, "invalid_record"),
        ("Deposit", {"command_id": "c", "account": "a", "amount": 100}, "invalid_record"),
        ("Deposit", {"command_id": "c", "account": "a", "amount": "1", "x": "y"}, "invalid_record"),
        ("Deposit", {"command_id": "c", "account": "a", "amount": None}, "invalid_record"),
        ("BlockAccount", {"command_id": "c", "account": "a", "reasn": "typo"}, "invalid_record"),
        ("Deposit", {"command_id": "\ud800", "account": "a", "amount": "1"}, "invalid_record"),
    ],
)
def test_encode_errors_have_codes(
    codec: Codec, name: str, record: dict[str, Any], code: str
) -> None:
    with pytest.raises(EncodeError) as info:
        codec.encode(name, record)
    assert info.value.code == code


# -- decode errors ---------------------------------------------------------------------------


def _deposit(codec: Codec) -> bytes:
    return codec.encode("Deposit", {"command_id": "c-1", "account": "acct-é", "amount": "1.00"})


@pytest.mark.parametrize(
    "data",
    [b"\x00\x01" + b"\x00" * 20, b'{"type":"deposit"}', b"\xc3\x00" + b"\x00" * 8, b"\x00"],
)
def test_bad_magic(codec: Codec, data: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.code == "bad_magic"


def test_unknown_fingerprint(codec: Codec) -> None:
    data = bytearray(_deposit(codec))
    data[2] ^= 0xFF
    with pytest.raises(DecodeError) as info:
        codec.decode(bytes(data))
    assert info.value.code == "unknown_schema"


def test_every_truncation_is_reported_as_truncated(codec: Codec) -> None:
    samples = [_deposit(codec)] + [
        codec.encode(full, _sample(CURRENT[full], variant))
        for full in CURRENT
        for variant in (0, 1, 3)
    ]
    for data in samples:
        for cut in range(len(data)):
            with pytest.raises(DecodeError) as info:
                codec.decode(data[:cut])
            assert info.value.code == "truncated", (cut, data[:cut])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\x06c-1\x02a\x04\xff\xfe", "invalid UTF-8"),
        (b"\x06c-1\x02a\x021\x00", "trailing bytes"),
    ],
)
def test_malformed_body(codec: Codec, body: bytes, why: str) -> None:
    data = _deposit(codec)[:HEADER_BYTES] + body
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.code == "malformed", why


def test_bad_union_branch_is_malformed(codec: Codec) -> None:
    good = codec.encode("BlockAccount", {"command_id": "c", "account": "a", "reason": None})
    assert good[-1] == 0  # union branch 0 (null) is the last byte
    with pytest.raises(DecodeError) as info:
        codec.decode(good[:-1] + b"\x08")  # branch 4 of a two-branch union
    assert info.value.code == "malformed"


# -- evolution -------------------------------------------------------------------------------


def test_newer_writer_with_defaulted_field_reads_as_current(codec: Codec) -> None:
    newer = _deposit_with_channel()
    future = Codec(current=[newer])
    data = future.encode(
        "Deposit", {"command_id": "c2", "account": "acct-1", "amount": "100.00", "channel": "web"}
    )
    # A consumer that has never seen the new writer cannot guess its layout...
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.code == "unknown_schema"
    # ...and once told about it, reads the record in its own (current) shape.
    assert codec.register(newer) == data[2:HEADER_BYTES]
    assert codec.decode(data) == (
        "Deposit",
        {"command_id": "c2", "account": "acct-1", "amount": "100.00"},
    )
    # Registration is idempotent and does not change what encode writes.
    codec.register(newer)
    assert codec.encode("Deposit", {"command_id": "c", "account": "a", "amount": "1"})[
        2:HEADER_BYTES
    ] == fingerprint(CURRENT["paystream.commands.Deposit"])


def test_current_writer_reads_with_an_older_reader(codec: Codec) -> None:
    older_codec = Codec(current=[_block_account_without_reason()])
    older_codec.register(CURRENT["paystream.commands.BlockAccount"])
    data = codec.encode(
        "BlockAccount", {"command_id": "c5", "account": "acct-2", "reason": "court order"}
    )
    assert older_codec.decode(data) == ("BlockAccount", {"command_id": "c5", "account": "acct-2"})


def test_older_writer_reads_with_the_current_reader(codec: Codec) -> None:
    older = _block_account_without_reason()
    data = Codec(current=[older]).encode("BlockAccount", {"command_id": "c5", "account": "acct-2"})
    codec.register(older)
    assert codec.decode(data) == (
        "BlockAccount",
        {"command_id": "c5", "account": "acct-2", "reason": None},  # filled from the default
    )


def test_history_schemas_are_registered_writers() -> None:
    # Every file in schemas/history must stay readable as the current schema of its name.
    codec = Codec()
    for schema in schemas.history_schemas():
        data = Codec(current=[schema]).encode(schema["name"], _sample(schema))
        name, _ = codec.decode(data)
        assert name == schema["name"]


def test_ambiguous_short_names_are_refused() -> None:
    a = {"type": "record", "name": "X", "namespace": "a", "doc": "d", "fields": []}
    b = {"type": "record", "name": "X", "namespace": "b", "doc": "d", "fields": []}
    with pytest.raises(ValueError, match="ambiguous"):
        Codec(current=[a, b])


# -- the hand-rolled fast path agrees with fastavro ------------------------------------------

LONGS = st.integers(-(2**63), 2**63 - 1)


def _value_strategy(schema_type: Any) -> st.SearchStrategy[Any]:
    if isinstance(schema_type, list):
        other = next(t for t in schema_type if t != "null")
        return st.none() | _value_strategy(other)
    if isinstance(schema_type, dict):
        return _value_strategy(schema_type["type"])
    return {
        "string": st.text(),
        "long": LONGS | st.integers(),  # out-of-range longs too
        "bytes": st.binary(),
    }[schema_type]


@st.composite
def _schema_and_record(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any]]:
    """A current schema and a record for it, sometimes slightly wrong."""
    schema = FLAT[draw(st.sampled_from(sorted(FLAT)))]
    record = {f["name"]: draw(_value_strategy(f["type"])) for f in schema["fields"]}
    defect = draw(st.integers(0, 9))
    name = draw(st.sampled_from([f["name"] for f in schema["fields"]]))
    if defect == 0:
        del record[name]  # fine when the field has a default
    elif defect == 1:
        record["extra"] = "x"
    elif defect == 2:
        record[name] = draw(st.integers() | st.text() | st.binary() | st.none() | st.floats())
    return schema, record


def _fastavro_encode(schema: dict[str, Any], record: dict[str, Any]) -> bytes | None:
    buf = io.BytesIO()
    try:
        schemaless_writer(buf, _parse(schema), record, strict_allow_default=True)
    except Exception:
        return None
    return buf.getvalue()


def _fastavro_decode(schema: dict[str, Any], body: bytes) -> dict[str, Any] | None:
    fo = io.BytesIO(body)
    try:
        record = schemaless_reader(fo, _parse(schema), None)
    except Exception:
        return None
    return record if fo.tell() == len(body) else None


@hypothesis_settings(max_examples=1000)
@given(_schema_and_record())
def test_fast_encoder_writes_what_fastavro_writes(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    schema, record = case
    encoder = make_encoder(schema)
    assert encoder is not None  # every paystream record is flat
    fast = encoder(record, b"")
    reference = _fastavro_encode(schema, record)
    if fast is not None:  # None hands the record to fastavro, which then decides
        assert fast == reference
    if reference is not None:
        decoder = make_decoder(schema)
        assert decoder is not None
        assert decoder(reference, 0) == _fastavro_decode(schema, reference)


@hypothesis_settings(max_examples=1000)
@given(st.sampled_from(sorted(FLAT)), st.binary(max_size=80))
def test_fast_decoder_never_disagrees_with_fastavro(full: str, body: bytes) -> None:
    decoder = make_decoder(FLAT[full])
    assert decoder is not None
    fast = decoder(body, 0)
    if fast is not None:
        assert fast == _fastavro_decode(FLAT[full], body)


def test_codec_errors_are_the_same_with_and_without_the_fast_path() -> None:
    # The fast path returns None on anything odd; fastavro then raises with its message.
    codec = Codec()
    with pytest.raises(EncodeError, match="must be string"):
        codec.encode("Deposit", {"command_id": 1, "account": "a", "amount": "1"})
    with pytest.raises(EncodeError, match="more fields"):
        codec.encode("Deposit", {"command_id": "c", "account": "a", "amount": "1", "b": "c"})


def test_varint_at_every_group_boundary_matches_fastavro() -> None:
    # The table-driven varint splits on 7- and 14-bit groups: check both sides of each.
    from schemas._flat import _varint

    for bits in range(65):
        for n in {(1 << bits) - 1, 1 << bits, (1 << bits) + 1}:
            if n >= 1 << 64:
                continue
            v = n >> 1 if n & 1 == 0 else -(n >> 1) - 1  # un-zig-zag
            buf = io.BytesIO()
            schemaless_writer(buf, {"type": "long"}, v)
            assert _varint(n) == buf.getvalue(), n
