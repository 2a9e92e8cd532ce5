"""An in-memory run of the pure core with sagas: the wire mapping without Kafka or Avro.

Saga steps go through ``streams.records`` exactly as in production (event -> record ->
step), only the queue between them is a Python list whose order a test may shuffle.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from schemas.catalogue import all_command_types
from streams.ledger import decide, evolve_all
from streams.ledger import model as m
from streams.ledger.model import COMMAND_MEMORY_MAX
from streams.records import decode_state, encode_state, to_command, to_records, to_saga_step

SCHEMA = {t: spec.schema for t, spec in all_command_types().items()}


def command(obj: dict[str, Any], ts: int = 0) -> m.Command:
    record = {k: v for k, v in obj.items() if k != "type"}
    for name in all_command_types()[obj["type"]].optional:
        record.setdefault(name, None)
    return to_command(SCHEMA[obj["type"]], record, ts)


@dataclass
class InMemoryLedger:
    memory_max: int = COMMAND_MEMORY_MAX
    states: dict[str, m.State] = field(default_factory=dict)
    inbox: list[m.SagaStep] = field(default_factory=list)
    postings: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    entry_ids: list[str] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)  # records to the payments topic
    records: list[Any] = field(default_factory=list)

    def submit(self, obj: dict[str, Any], ts: int = 0) -> None:
        self.handle(command(obj, ts))

    def handle(self, msg: m.Message) -> list[m.Event]:
        state = self.states.get(msg.key)
        events = decide(state, msg)
        new = evolve_all(state, events, self.memory_max)
        if new is not None:
            # Through the changelog encoding, as in production: it must round-trip.
            if decode_state(encode_state(new)) != new:
                raise AssertionError(f"state does not round-trip: {new}")
            self.states[msg.key] = new
        for e in events:
            if isinstance(e, m.Posted):
                self.entry_ids.append(e.entry_id)
                for leg in (e.debit, e.credit):
                    self.postings[leg.account] += leg.amount
            for out in to_records(e):
                self.records.append(out)
                if out.topic == "saga":
                    self.inbox.append(to_saga_step(out.record))
                elif out.topic == "outcomes":
                    self.outcomes.append(out.record)
                elif out.topic == "payments":
                    self.replies.append(out)
        return events

    def step(self, index: int = 0) -> None:
        self.handle(self.inbox.pop(index % len(self.inbox)))

    def drain(self, rng: random.Random | None = None) -> None:
        while self.inbox:
            self.step(rng.randrange(len(self.inbox)) if rng else 0)

    def account(self, name: str) -> m.AccountState:
        s = self.states[name]
        assert isinstance(s, m.AccountState)
        return s
