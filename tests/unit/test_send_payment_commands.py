"""The ledger's payment commands come only from the payments workers (Avro): the JSON command
format, hence ``paystream send`` and ``POST /commands``, does not know them."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

import producers.send
from paystream import cli
from producers.commands import COMMAND_TYPES, parse_line
from producers.errors import UNKNOWN_TYPE, InvalidCommand

PAYMENT_TYPES = (
    "authorize_payin",
    "settle_payin",
    "cancel_payin",
    "hold_payout",
    "post_payout",
    "void_payout",
)
SETTLE = {
    "type": "settle_payin",
    "command_id": "pay-1/1/settle",
    "account": "acct-1",
    "payment_order_id": "pay-1/1",
    "psp": "cardco",
}


class RecordingProducer:
    """Stands in for the Kafka producer: remembers what would have been sent."""

    instances: list[RecordingProducer] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[Any] = []
        self.dead: list[tuple[str, str, str, bytes]] = []
        self.failed = 0
        RecordingProducer.instances.append(self)

    def send(self, cmd: Any, on_delivery: Any = None) -> None:
        self.sent.append(cmd)

    def send_dead_letter(self, source: str, reason: str, code: str, payload: bytes) -> None:
        self.dead.append((source, reason, code, payload))

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def close(self, timeout_s: float = 30.0) -> int:
        return 0


@pytest.fixture(autouse=True)
def no_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    RecordingProducer.instances.clear()
    monkeypatch.setattr(producers.send, "CommandProducer", RecordingProducer)
    monkeypatch.setenv("PAYSTREAM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PAYSTREAM_BOOTSTRAP", "127.0.0.1:1")  # never contacted


def test_paystream_send_refuses_a_settle_payin_line(tmp_path: Path) -> None:
    path = tmp_path / "cmds.jsonl"
    path.write_text(json.dumps(SETTLE) + "\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["send", "--file", str(path), "--no-progress"])
    assert code == 2
    lines = err.getvalue().splitlines()
    assert lines[0].startswith(f"{path}:1: unknown_type: unknown command type 'settle_payin'")
    assert lines[-1] == "sent 0, invalid 1, failed 0"
    (producer,) = RecordingProducer.instances
    assert producer.sent == []
    assert [(d[0], d[2]) for d in producer.dead] == [(f"cli:{path}:1", UNKNOWN_TYPE)]


def test_paystream_send_refuses_a_single_settle_payin() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["send", "settle_payin", "--account", "acct-1"])
    assert code == 2
    assert err.getvalue().startswith("paystream send: unknown_type: ")
    assert all(p.sent == [] for p in RecordingProducer.instances)


@pytest.mark.parametrize("type_", PAYMENT_TYPES)
def test_no_payment_command_is_in_the_json_format(type_: str) -> None:
    assert type_ not in COMMAND_TYPES
    with pytest.raises(InvalidCommand) as info:
        parse_line(json.dumps({**SETTLE, "type": type_}))
    assert info.value.code == UNKNOWN_TYPE
