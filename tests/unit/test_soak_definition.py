"""The soak's indexed reading of the detector's definition is the brute-force oracle's, exactly."""

from __future__ import annotations

import random

import pytest

from streams.detector import bruteforce
from streams.detector.bruteforce import Event, Relate, Unrelate
from streams.detector.graph import TransferEdge
from tests.soak.chaos import schedule
from tests.soak.definition import definition_alerts
from tests.soak.plan import SoakConfig, build_plan, model

S = 1_000_000


def _history(rng: random.Random, n: int, accounts: int, window_s: int) -> list[Event]:
    names = [f"a{i:02d}" for i in range(accounts)]
    events: list[Event] = []
    span = 4 * window_s * S
    for i in range(n):
        a, b = rng.sample(names, 2)
        ts = rng.randrange(span) // S * S  # whole seconds: ties are common
        events.append(TransferEdge(f"t{i:04d}", f"c{i:04d}", a, b, "1.00", "USD", ts))
        if rng.random() < 0.05:
            events.append(events[-1])  # a replayed record
    for _ in range(n // 8):
        a, b = rng.sample(names, 2)
        ts = rng.randrange(span) + 1
        events.append(
            Unrelate(a, b, ts) if rng.random() < 0.3 else Relate(a, b, rng.choice("xyz"), ts)
        )
    return sorted(events, key=lambda e: (e.ts, 1 if isinstance(e, TransferEdge) else 0))


@pytest.mark.parametrize("seed", range(12))
def test_indexed_definition_equals_bruteforce(seed: int) -> None:
    rng = random.Random(seed)
    window_s = rng.choice([30, 300, 10_000])
    hops = rng.choice([2, 3, 4])
    events = _history(rng, 250, rng.choice([6, 12, 25]), window_s)
    want = [a.to_record() for a in bruteforce.detect(events, hops, window_s * S)]
    got = [a.to_record() for a in definition_alerts(events, hops, window_s * S)]
    assert got == want
    assert len(want) > 0


def test_plan_is_seeded_and_covers_every_command_type() -> None:
    cfg = SoakConfig(transfers=2000, accounts=200, seed=3)
    a, b = build_plan(cfg), build_plan(cfg)
    assert list(a.commands()) == list(b.commands())
    exp = model(a)
    assert set(exp.by_type) == {
        "open_account", "deposit", "withdraw", "transfer", "block_account", "unblock_account",
        "relate_accounts", "unrelate_accounts",
    }  # fmt: skip
    assert exp.by_type["transfer"] >= 2000
    assert exp.duplicates > 0 and exp.reuses and exp.raw_lines > 0
    outcomes = set(exp.oracle.outcomes.values())
    assert {
        "accepted",
        "insufficient_funds",
        "credit_account_blocked",
        "amount_malformed",
    } <= outcomes
    assert schedule(cfg) == schedule(cfg)
    kinds = {a.victim.split("-")[0] for a in schedule(cfg) if a.kind == "kill"}
    assert kinds == {"ledger", "warehouse", "readside", "detector"}
