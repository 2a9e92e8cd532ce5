"""The JSON command format (a public contract) and the file handling of ``paystream send``."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from base.config import Limits, Settings
from producers.commands import (
    COMMAND_TYPES,
    ID_FIELDS,
    TEXT_FIELDS,
    Command,
    parse_command,
    parse_line,
    with_command_id,
)
from producers.errors import CODES, InvalidCommand
from producers.send import SendReport, send_file
from schemas.codec import Codec

LIMITS = Limits()

EXAMPLES = [
    '{"type":"open_account","command_id":"c1","account":"acct-1","user":"user-1","currency":"USD"}',
    '{"type":"deposit","command_id":"c2","account":"acct-1","amount":"100.00"}',
    '{"type":"withdraw","command_id":"c3","account":"acct-1","amount":"10.00"}',
    '{"type":"transfer","command_id":"c4","from":"acct-1","to":"acct-2","amount":"5.25"}',
    '{"type":"block_account","command_id":"c5","account":"acct-2","reason":"court order"}',
    '{"type":"unblock_account","command_id":"c6","account":"acct-2"}',
    '{"type":"relate_accounts","command_id":"c7","account":"acct-1","related":"acct-2","kind":"family"}',
    '{"type":"unrelate_accounts","command_id":"c8","account":"acct-1","related":"acct-2"}',
]
EXPECTED = [
    ("open_account", "OpenAccount", "acct-1"),
    ("deposit", "Deposit", "acct-1"),
    ("withdraw", "Withdraw", "acct-1"),
    ("transfer", "Transfer", "acct-1"),
    ("block_account", "BlockAccount", "acct-2"),
    ("unblock_account", "UnblockAccount", "acct-2"),
    ("relate_accounts", "RelateAccounts", "acct-1"),
    ("unrelate_accounts", "UnrelateAccounts", "acct-1"),
]


def _line(**fields: Any) -> str:
    return json.dumps(fields)


def _code(line: str | bytes, limits: Limits = LIMITS) -> str:
    with pytest.raises(InvalidCommand) as info:
        parse_line(line, limits)
    return info.value.code


# -- the contract ----------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "expected"), list(zip(EXAMPLES, EXPECTED, strict=True)))
def test_every_example_parses(line: str, expected: tuple[str, str, str]) -> None:
    cmd = parse_line(line)
    assert (cmd.type, cmd.schema, cmd.key) == expected
    obj = json.loads(line)
    assert cmd.command_id == obj["command_id"]
    for name, value in obj.items():
        if name != "type":
            assert cmd.record[name] == value
    assert json.loads(cmd.to_json()) == obj  # and back again
    assert parse_line(line.encode() + b"\r\n") == cmd  # bytes with a line terminator


def test_command_types_match_the_avro_schemas() -> None:
    codec = Codec.default()
    assert len(COMMAND_TYPES) == 8
    for ctype, spec in COMMAND_TYPES.items():
        schema = codec.schema(f"paystream.commands.{spec.schema}")
        names = [f["name"] for f in schema["fields"]]
        assert list(spec.fields) == names, ctype  # same fields, same order
        for field in schema["fields"]:
            optional = isinstance(field["type"], list)
            assert (field["name"] in spec.optional) == optional, (ctype, field["name"])
            assert optional or field["type"] == "string"
        assert spec.key_field in spec.required
        assert set(spec.fields) <= ID_FIELDS | TEXT_FIELDS | {"amount"}
    assert COMMAND_TYPES["transfer"].key_field == "from"
    assert {s.key_field for t, s in COMMAND_TYPES.items() if t != "transfer"} == {"account"}


@pytest.mark.parametrize("line", EXAMPLES)
def test_parsed_commands_encode_and_decode(line: str) -> None:
    cmd = parse_line(line)
    codec = Codec.default()
    assert codec.decode(codec.encode(cmd.schema, cmd.record)) == (cmd.schema, dict(cmd.record))


def test_optional_fields_absent_or_null_are_none() -> None:
    a = parse_line('{"type":"block_account","command_id":"c","account":"a"}')
    b = parse_line('{"type":"block_account","command_id":"c","account":"a","reason":null}')
    assert a.record == b.record == {"command_id": "c", "account": "a", "reason": None}
    assert a.to_json() == '{"type":"block_account","command_id":"c","account":"a"}'


@pytest.mark.parametrize("amount", ["0", "-5", "1.234", "abc", "", "1e3", " 7 ", "NaN"])
def test_amounts_are_not_judged_by_the_producer(amount: str) -> None:
    # Business rules are the ledger's: it answers with a rejected outcome, not us.
    cmd = parse_line(_line(type="deposit", command_id="c", account="a", amount=amount))
    assert cmd.record["amount"] == amount


def test_limits_are_inclusive() -> None:
    long_id = "x" * LIMITS.id_chars_max
    long_reason = "r" * LIMITS.reason_chars_max
    cmd = parse_line(
        _line(type="block_account", command_id=long_id, account="a", reason=long_reason)
    )
    assert cmd.command_id == long_id
    assert _code(_line(type="deposit", command_id=long_id + "x", account="a", amount="1")) == (
        "too_long"
    )
    assert _code(
        _line(type="block_account", command_id="c", account="a", reason=long_reason + "r")
    ) == ("too_long")
    # kind is free text too, so it gets the reason limit rather than the id limit.
    kind = "k" * LIMITS.reason_chars_max
    assert (
        parse_line(
            _line(type="relate_accounts", command_id="c", account="a", related="b", kind=kind)
        ).record["kind"]
        == kind
    )


def test_line_length_limit_counts_bytes() -> None:
    limits = Limits(command_bytes_max=80, reason_chars_max=1000)
    head = '{"type":"block_account","command_id":"c","account":"a","reason":"'
    fits = head + "x" * (80 - len(head) - 2) + '"}'
    assert len(fits.encode()) == 80
    assert parse_line(fits + "\n", limits).record["reason"]
    assert _code(fits.replace("x", "é", 1), limits) == "too_long"  # 81 bytes, 80 characters


@pytest.mark.parametrize("field", ["command_id", "account"])
@pytest.mark.parametrize("char", ["\x00", "\n", "\x1f", "\x7f", "\t"])
def test_control_characters_in_ids_are_refused(field: str, char: str) -> None:
    obj = {"type": "deposit", "command_id": "c", "account": "a", "amount": "1"}
    obj[field] = f"ab{char}cd"
    assert _code(json.dumps(obj)) == "bad_characters"


def test_control_characters_in_free_text_are_allowed() -> None:
    cmd = parse_line(_line(type="block_account", command_id="c", account="a", reason="a\nb\tc"))
    assert cmd.record["reason"] == "a\nb\tc"


def test_lone_surrogates_are_refused_everywhere() -> None:
    # JSON can smuggle them in with escapes, and UTF-8 (hence Avro) cannot carry them.
    assert _code('{"type":"block_account","command_id":"c","account":"a","reason":"\\ud800"}') == (
        "bad_characters"
    )
    assert _code('{"type":"deposit","command_id":"c","account":"a","amount":"\\udfff"}') == (
        "bad_characters"
    )


BAD_LINES = [
    ('{"type":"deposit",', "invalid_json"),
    ("", "invalid_json"),
    ("not json", "invalid_json"),
    (b'{"type":"deposit","command_id":"c","account":"\xff","amount":"1"}', "invalid_json"),
    ('{"type":"deposit","command_id":"c","account":"a","amount":"1","amount":"2"}', "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, "too_long"),
    ("[" * 50_000, "invalid_json"),
    ("1" * 5000, "invalid_json"),
    ('["deposit"]', "not_an_object"),
    ('"deposit"', "not_an_object"),
    ("null", "not_an_object"),
    ("42", "not_an_object"),
    ('{"type":"refund","command_id":"c"}', "unknown_type"),
    ('{"type":"Deposit","command_id":"c","account":"a","amount":"1"}', "unknown_type"),
    ('{"command_id":"c","account":"a","amount":"1"}', "missing_field"),
    ('{"type":"deposit","account":"a","amount":"1"}', "missing_field"),
    ('{"type":"transfer","command_id":"c","from":"a","amount":"1"}', "missing_field"),
    ('{"type":"deposit","command_id":"c","account":"a","amount":100.00}', "wrong_type"),
    ('{"type":"deposit","command_id":"c","account":"a","amount":100}', "wrong_type"),
    ('{"type":"deposit","command_id":7,"account":"a","amount":"1"}', "wrong_type"),
    ('{"type":"deposit","command_id":"c","account":null,"amount":"1"}', "wrong_type"),
    ('{"type":"deposit","command_id":"c","account":["a"],"amount":"1"}', "wrong_type"),
    ('{"type":"block_account","command_id":"c","account":"a","reason":false}', "wrong_type"),
    ('{"type":3,"command_id":"c"}', "wrong_type"),
    ('{"type":"deposit","command_id":"c","account":"a","amount":"1","memo":"x"}', "unknown_field"),
    ('{"type":"unblock_account","command_id":"c","account":"a","kind":"x"}', "unknown_field"),
    ('{"type":"deposit","command_id":"' + "c" * 129 + '","account":"a","amount":"1"}', "too_long"),
    ('{"type":"deposit","command_id":"c","account":"a","amount":"' + "9" * 129 + '"}', "too_long"),
    ("{" + " " * (64 * 1024) + "}", "too_long"),
    ('{"type":"deposit","command_id":"c\\u0000","account":"a","amount":"1"}', "bad_characters"),
    (
        '{"type":"transfer","command_id":"c","from":"a","to":"b\\u007f","amount":"1"}',
        "bad_characters",
    ),
]


@pytest.mark.parametrize(
    ("line", "code"), BAD_LINES, ids=[f"{c}-{i}" for i, (_, c) in enumerate(BAD_LINES)]
)
def test_bad_lines_give_stable_codes(line: str | bytes, code: str) -> None:
    assert _code(line) == code


def test_every_code_is_exercised() -> None:
    assert {code for _, code in BAD_LINES} == set(CODES)


def test_error_messages_do_not_echo_huge_values() -> None:
    with pytest.raises(InvalidCommand) as info:
        parse_line(_line(type="x" * 10_000, command_id="c"))
    assert len(info.value.message) < 400
    with pytest.raises(InvalidCommand) as info:
        parse_line(
            _line(type="deposit", command_id="c", account="a", amount="1", **{"k" * 9000: "v"})
        )
    assert info.value.code == "unknown_field" and len(info.value.message) < 200


def test_with_command_id_adds_a_uuid_only_when_missing() -> None:
    obj = {"type": "deposit", "account": "a", "amount": "1"}
    out = with_command_id(obj)
    assert "command_id" not in obj  # the input is not modified
    assert uuid.UUID(out["command_id"]).version == 4
    assert with_command_id(out) == out
    assert with_command_id(obj)["command_id"] != out["command_id"]


# -- properties ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = sorted({f for spec in COMMAND_TYPES.values() for f in spec.fields} | {"x"})


@st.composite
def near_commands(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed commands with the odd defect, so every check past the type runs."""
    ctype = draw(st.sampled_from([*COMMAND_TYPES, "nope"]))
    spec = COMMAND_TYPES.get(ctype, COMMAND_TYPES["deposit"])
    good = st.text(max_size=20)
    bad = st.none() | st.integers() | st.text(min_size=129, max_size=600) | st.text(max_size=140)
    obj: dict[str, Any] = {"type": ctype}
    for name in spec.fields:
        if draw(st.integers(0, 19)) > 0:  # leave a field out now and then
            obj[name] = draw(good if draw(st.integers(0, 9)) > 0 else bad)
    if draw(st.integers(0, 9)) == 0:
        obj[draw(st.sampled_from(FIELD_NAMES))] = draw(good)
    return obj


def _parse_or_refuse(obj: object) -> None:
    try:
        cmd = parse_command(obj)
    except InvalidCommand as exc:
        assert exc.code in CODES
        return
    # Whatever the producer accepts must be encodable: no surprise at send time.
    codec = Codec.default()
    assert codec.decode(codec.encode(cmd.schema, cmd.record)) == (cmd.schema, dict(cmd.record))
    assert parse_line(cmd.to_json()) == cmd


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(JSON_VALUES)
def test_arbitrary_json_values_only_raise_invalid_command(value: object) -> None:
    _parse_or_refuse(value)


@hypothesis_settings(max_examples=500)
@given(near_commands())
def test_near_commands_only_raise_invalid_command(obj: dict[str, Any]) -> None:
    _parse_or_refuse(obj)
    _line_or_refuse(json.dumps(obj))


def _line_or_refuse(line: str | bytes) -> None:
    try:
        cmd = parse_line(line)
    except InvalidCommand as exc:
        assert exc.code in CODES
        return
    assert isinstance(cmd, Command)


@hypothesis_settings(max_examples=300)
@given(st.text())
def test_arbitrary_text_only_raises_invalid_command(text: str) -> None:
    _line_or_refuse(text)


@hypothesis_settings(max_examples=300)
@given(st.binary())
def test_arbitrary_bytes_only_raise_invalid_command(data: bytes) -> None:
    _line_or_refuse(data)


@hypothesis_settings(max_examples=200)
@given(JSON_VALUES.map(lambda v: json.dumps(v, ensure_ascii=False)))
def test_arbitrary_json_text_only_raises_invalid_command(text: str) -> None:
    _line_or_refuse(text)


# -- send_file, without a broker -------------------------------------------------------------


class FakeProducer:
    """Records what send_file hands to the producer."""

    def __init__(self, fail_on_flush: int = 0) -> None:
        self.commands: list[Command] = []
        self.dead: list[tuple[str, str, str, bytes]] = []
        self.failed = 0
        self._fail_on_flush = fail_on_flush

    def send(self, cmd: Command) -> None:
        self.commands.append(cmd)

    def send_dead_letter(self, source: str, reason: str, code: str, payload: bytes) -> None:
        self.dead.append((source, reason, code, payload))

    def flush(self, timeout_s: float = 30.0) -> int:
        self.failed += self._fail_on_flush
        return 0

    def close(self, timeout_s: float = 30.0) -> int:
        return 0


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path, bootstrap="127.0.0.1:1", limits=Limits(command_bytes_max=256))


def _send(settings: Settings, path: str, producer: FakeProducer) -> tuple[SendReport, str]:
    err = io.StringIO()
    report = send_file(settings, path, progress=True, err=err, producer=producer)  # type: ignore[arg-type]
    return report, err.getvalue()


def test_send_file_reports_bad_lines_with_numbers(local_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "cmds.jsonl"
    huge = '{"type":"block_account","command_id":"c","account":"a","reason":"' + "z" * 10_000 + '"}'
    lines = [
        "\ufeff" + EXAMPLES[0],  # 1: a BOM before the first line is tolerated
        "",  # 2: blank lines are skipped
        '{"type":"deposit","account":"a","amount":"1"}',  # 3: no command_id in a file
        "   ",  # 4
        huge,  # 5: longer than command_bytes_max
        EXAMPLES[3],  # 6
        '{"type":"deposit","command_id":"c9","account":"a","amount":1}',  # 7
    ]
    path.write_bytes(("\r\n".join(lines)).encode())  # CRLF, no final newline
    fake = FakeProducer()
    report, err = _send(local_settings, str(path), fake)
    assert report == SendReport(sent=2, invalid=3, failed=0) and report.exit_code == 2
    assert [c.command_id for c in fake.commands] == ["c1", "c4"]
    assert err.splitlines() == [
        f"{path}:3: missing_field: deposit needs field 'command_id'",
        f"{path}:5: too_long: line has more than 256 bytes",
        f"{path}:7: wrong_type: 'amount' must be a JSON string, got number",
    ]
    assert [(d[0], d[2]) for d in fake.dead] == [
        (f"cli:{path}:3", "missing_field"),
        (f"cli:{path}:5", "too_long"),
        (f"cli:{path}:7", "wrong_type"),
    ]
    assert fake.dead[0][3] == lines[2].encode()
    assert fake.dead[1][3] == huge.encode()[:256]  # payload cut at command_bytes_max


def test_send_file_exit_codes(local_settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text("\n".join(EXAMPLES) + "\n")
    report, err = _send(local_settings, str(path), FakeProducer())
    assert (report.sent, report.invalid, report.exit_code, err) == (8, 0, 0, "")
    report, _ = _send(local_settings, str(path), FakeProducer(fail_on_flush=1))
    assert report.exit_code == 1  # a lost delivery beats invalid lines
    assert SendReport(sent=1, invalid=1, failed=1).exit_code == 1


def test_send_file_reads_text_stdin(
    local_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(EXAMPLES[1] + "\nnope\n"))
    fake = FakeProducer()
    report, err = _send(local_settings, "-", fake)
    assert (report.sent, report.invalid) == (1, 1)
    assert err.startswith("-:2: invalid_json: ")
    assert fake.dead[0][0] == "cli:-:2"
