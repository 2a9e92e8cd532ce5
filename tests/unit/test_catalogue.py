"""The command catalogue read from the Avro schemas agrees with the README's JSON format."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from paystream.cli import build_parser
from schemas import catalogue
from schemas.catalogue import _command_type, command_types, json_type

README = Path(__file__).resolve().parents[2] / "README.md"


def _readme_examples() -> list[dict[str, str]]:
    text = README.read_text()
    block = text.split("### The JSON command format", 1)[1].split("```json", 1)[1]
    return [json.loads(line) for line in block.split("```", 1)[0].strip().splitlines()]


def test_every_documented_command_type_with_its_fields() -> None:
    examples = _readme_examples()
    assert [e["type"] for e in examples] == list(command_types())
    for e in examples:
        t = command_types()[e["type"]]
        assert set(e) - {"type"} <= set(t.fields)
        assert set(t.required) <= set(e)  # every required field is in the example
        assert json_type(t.schema) == t.type


def test_kafka_keys_and_field_kinds() -> None:
    # README: "Producers must key commands by account (`from` for transfers)".
    keys = {t: c.key_field for t, c in command_types().items()}
    assert keys.pop("transfer") == "from" and set(keys.values()) == {"account"}
    assert catalogue.fields_of_kind(catalogue.AMOUNT) == {"amount"}
    assert catalogue.fields_of_kind(catalogue.TEXT) == {"reason", "kind"}
    assert {f for t in command_types().values() for f in t.optional} == {"reason"}


def test_the_send_flags_are_the_catalogue_fields() -> None:
    parser = build_parser()
    send = next(
        a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith("send")
    )
    flags = {a.dest: a.option_strings for a in send._actions if a.option_strings}
    for name in catalogue.all_fields():
        assert flags[name] == ["--" + name.replace("_", "-")]
    assert re.search(r"open_account,\s+deposit,.*unrelate_accounts", send.format_help(), re.S)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([{"name": "a", "type": "string"}], "paystream.kind"),
        ([{"name": "a", "type": "int", "paystream.kind": "id"}], "string or null"),
        ([{"name": "a", "type": "string", "paystream.kind": "id"}], "key"),
        (
            [
                {"name": "a", "type": ["null", "string"], "paystream.kind": "id"},
                {"name": "b", "type": "string", "paystream.kind": "id", "paystream.key": True},
            ],
            "after an optional",
        ),
    ],
)
def test_a_malformed_command_schema_is_refused(
    fields: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _command_type({"name": "Bad", "fields": fields})
