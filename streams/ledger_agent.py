"""The ledger's accounts as an agent of the exactly-once processor (``streams.processor``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from streams.agent import Out
from streams.ledger import decide, evolve_all
from streams.ledger import model as m
from streams.records import (
    decode_state,
    encode_state,
    records_of,
    to_command,
    to_saga_step,
    transfer_step,
)


class LedgerAgent:
    """Accounts (and user reservations) keyed by account, on commands and saga steps."""

    name = "ledger"
    input_topics: tuple[str, ...] = ("commands", "saga")
    step_topic = "saga"
    changelog_topic = "ledger_state"

    def decode(self, topic: str, schema: str, record: dict[str, Any], ts_us: int) -> m.Message:
        if topic == "saga":
            return to_saga_step(record)
        return to_command(schema, record, ts_us)

    def decode_step(self, record: dict[str, Any]) -> m.Message:
        return to_saga_step(record)

    def decide(self, state: m.State | None, message: m.Message) -> list[m.Event]:
        return decide(state, message)

    def evolve(self, state: m.State | None, events: list[m.Event]) -> m.State | None:
        return evolve_all(state, events)

    def direct_step(self, event: m.Event) -> m.Message | None:
        return transfer_step(event)

    def records(self, event: m.Event, direct: bool) -> Iterable[Out]:
        return records_of(event, not direct)

    def encode_state(self, state: m.State) -> bytes:
        return encode_state(state)

    def decode_state(self, data: bytes) -> m.State:
        return decode_state(data)
