"""What the exactly-once processor needs to know about one kind of keyed agent.

An agent is a pure core (``decide(state, message) -> events``, ``evolve(state, events)``)
plus its wire mapping: how input records become domain messages and events become records.
The ledger's accounts (``streams.ledger_agent``) and the payments (``streams.payments_agent``)
are the two agents; ``streams.processor`` runs either, unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# Every ``ts`` is microseconds in an Avro long: a later log time could never be written out.
TS_MAX = (1 << 63) - 1


class BadInput(ValueError):
    """A decodable record that still cannot become a domain message (dead-lettered)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Out:
    """One record to produce: topic key (short name), Avro schema, partition key, value."""

    topic: str
    schema: str
    key: str
    record: dict[str, Any]


class Keyed(Protocol):
    @property
    def key(self) -> str: ...


class Agent(Protocol):
    """The processor's view of an agent. States and messages are the agent's own types."""

    # The consumer group is ``paystream-<name>``; local state lives in ``state/<name>-<i>``.
    name: str
    # Topic keys (``base.topics``) read by the processor, co-partitioned with the changelog.
    input_topics: tuple[str, ...]
    # Steps between agents of this kind: an input topic that the agent also writes to.
    step_topic: str
    changelog_topic: str

    def decode(self, topic: str, schema: str, record: dict[str, Any], ts_us: int) -> Keyed:
        """An input record as a domain message; raises BadInput (or ValueError, KeyError,
        TypeError) for one that cannot be used."""
        ...

    def decode_step(self, record: dict[str, Any]) -> Keyed:
        """A step record this agent wrote to ``step_topic``, in domain form."""
        ...

    def decide(self, state: Any, message: Any) -> list[Any]: ...

    def evolve(self, state: Any, events: list[Any]) -> Any: ...

    def direct_step(self, event: Any) -> Keyed | None:
        """The step an event asks for, in domain form, when the agent can hand it over without
        its record (the hot path); ``records(event, direct=True)`` then leaves it out."""
        ...

    def records(self, event: Any, direct: bool) -> Iterable[Out]: ...

    def encode_state(self, state: Any) -> bytes: ...

    def decode_state(self, data: bytes) -> Any: ...


class ContextAgent(Agent, Protocol):
    """An agent whose decisions also read one key of their partition: its context (the risk
    agent's rule set and model, activated by a record in that partition's input). The
    processor loads the context's state (this batch's, else the store's) and calls
    ``decide_in`` instead of ``decide``, so a decision sees exactly the activations that came
    before it in its partition's log, on every worker and every replay."""

    def context_key(self, partition: int, partitions: int) -> str:
        """The key, hashing to ``partition``, that holds the partition's context."""
        ...

    def decide_in(self, state: Any, message: Any, context: Any) -> list[Any]: ...
