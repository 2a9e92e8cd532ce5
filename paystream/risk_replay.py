"""Risk decisions replayed from the log alone (``paystream risk replay [--verify]``).

Each partition of ``paystream.risk-requests.v1`` is read from its start, in order, into a
fresh risk agent: the requests, the outcomes, the account facts and the activations are all
there, so the same decisions come out. ``--verify`` compares them, field by field, with the
live decisions on ``paystream.risk-decisions.v1``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from base.config import Settings
from base.kafka import scan
from base.topics import TopicNames
from schemas.codec import Codec
from streams.agent import BadInput
from streams.risk import model as rm
from streams.risk_agent import RiskAgent, decision_record
from streams.risk_library import KafkaLibrary

COMPARED = (
    "action", "score", "escalated", "rules_version", "rules_sha256", "matched", "features",
    "model_version", "model_score", "contributions", "ts",
)  # fmt: skip


@dataclass
class Replayed:
    records: int = 0
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # decision id -> record
    mismatches: list[str] = field(default_factory=list)


def replay(settings: Settings) -> Replayed:
    names = TopicNames(settings.topic_prefix)
    codec = Codec.default()
    library = KafkaLibrary(settings, settings.limits.risk_library_wait_s)
    agent = RiskAgent(library)
    states: dict[str, rm.KeyState | None] = {}
    out = Replayed()
    from base.kafka import partition_count, reader
    from streams.risk_agent import context_key

    probe = reader(settings)
    try:
        n = partition_count(probe, names.risk_requests)
    finally:
        probe.close()
    try:
        for p in range(n):
            ck = context_key(p, n)
            for msg in scan(settings, names.risk_requests, partitions=[p], timeout_s=600):
                out.records += 1
                ts = max(msg.timestamp()[1], 0) * 1000
                try:
                    schema, record = codec.decode(msg.value() or b"")
                    m = agent.decode("risk_requests", schema, record, ts)
                except (BadInput, ValueError, KeyError, TypeError):
                    continue  # dead-lettered live too
                state = states.get(m.key)
                context = state if m.key == ck else states.get(ck)
                events = agent.decide_in(state, m, context)
                states[m.key] = agent.evolve(state, events)
                for e in events:
                    if isinstance(e, rm.Decided):
                        out.decisions[e.decision.decision_id] = decision_record(e.decision)
    finally:
        library.close()
    return out


def verify(settings: Settings, got: Replayed) -> list[str]:
    """Every live decision on the decisions topic, compared with the replay's."""
    codec = Codec.default()
    topic = TopicNames(settings.topic_prefix).risk_decisions
    live: dict[str, dict[str, Any]] = {}
    for msg in scan(settings, topic, timeout_s=600):
        _, r = codec.decode(msg.value() or b"")
        live[r["decision_id"]] = r
    problems = []
    for did, r in sorted(live.items()):
        mine = got.decisions.get(did)
        if mine is None:
            problems.append(f"{did}: decided live, not in the replay")
            continue
        for name in COMPARED:
            if mine[name] != r[name]:
                problems.append(f"{did}: {name} live {r[name]!r}, replay {mine[name]!r}")
    for did in sorted(set(got.decisions) - set(live)):
        problems.append(f"{did}: in the replay, never decided live")
    got.mismatches = problems
    return problems
