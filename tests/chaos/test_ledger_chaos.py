"""kill -9 ledger workers at random, many times, during a 50k-transfer run (`make chaos`)."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter

import pytest

from paystream import queries
from paystream.oracle import Oracle
from paystream.workload import Workload
from tests.stack import LedgerStack

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1800)]

TRANSFERS = int(os.environ.get("PAYSTREAM_CHAOS_TRANSFERS", "50000"))
SEED = int(os.environ.get("PAYSTREAM_CHAOS_SEED", "20261122"))


@pytest.fixture
def stack(settings):  # type: ignore[no-untyped-def]
    s = LedgerStack(settings, workers=3)
    s.start()
    yield s
    s.stop()


def test_random_kill_9_of_workers_loses_and_duplicates_nothing(stack: LedgerStack) -> None:
    rng = random.Random(SEED)
    work = Workload(accounts=2000, transfers=TRANSFERS, seed=SEED, prefix="chaos")
    oracle = Oracle()
    kills = 0
    for name, commands in work.phases:
        for c in commands:
            oracle.apply(c)
        stop = threading.Event()

        def chaos(stop: threading.Event = stop) -> None:
            nonlocal kills
            while not stop.is_set():
                time.sleep(rng.uniform(1.0, 4.0))
                if stop.is_set():
                    return
                victim = rng.randint(1, stack.workers)
                stack.kill(victim)
                kills += 1
                time.sleep(rng.uniform(0.0, 1.0))
                stack.start(victim)

        killer = threading.Thread(target=chaos) if "transfers" in name else None
        if killer:
            killer.start()
        assert stack.send(commands) == 0
        if killer:
            # Keep killing while the phase is processed; the survivors take over meanwhile.
            stack.wait(timeout_s=600)
            stop.set()
            killer.join()
        stack.start()  # whoever is dead comes back
        stack.wait(timeout_s=600)
    assert kills >= 5
    assert stack.balances() == oracle.balances()
    per_command = Counter(
        o["command_id"] for o in stack.outcomes() if o["reason"] != "exists_with_different_payload"
    )
    assert set(per_command) == set(oracle.outcomes)
    assert max(per_command.values()) == 1, "a command has two outcomes"
    r = queries.replay(stack.settings)
    assert r.duplicates == 0
    assert r.problems == []
    assert queries.verify(stack.settings, r) == []
