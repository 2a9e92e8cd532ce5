"""Waiting for the soak's stack: the ledger between phases, every consumer group at the end."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from tests.soak.stack import _QUIET, SoakStack, _consumer, _ends

log = logging.getLogger(__name__)


def caught_up(
    stack: SoakStack,
    group: str,
    topics: list[str],
    targets: dict[tuple[str, int], int] | None = None,
) -> bool:
    """``queries.caught_up`` with quiet clients: has ``group`` consumed every committed
    record of ``topics`` (below ``targets``)? A transaction marker is not a record."""
    from paystream import queries

    return queries.caught_up(stack.resolved, group, topics, targets, logger=_QUIET)


def _safe(fn: Callable[[], bool]) -> bool:
    try:
        return fn()
    except Exception as exc:  # the broker restarting, a coordinator moving: not yet
        log.debug("not caught up yet: %s", exc)
        return False


def wait_ledger(stack: SoakStack, deadline: float, phase: str = "drain") -> bool:
    """The write side's half of ``queries.wait``: every command so far and its sagas done
    (downstream consumers are left alone: the next phase needs only the ledger)."""
    from base.topics import TopicNames
    from streams.processor import LEDGER_GROUP

    s = stack.resolved
    names = TopicNames(s.topic_prefix)
    group = s.topic_prefix + LEDGER_GROUP
    targets: dict[tuple[str, int], int] | None = None
    while targets is None:
        stack.broker_up.wait()
        try:
            targets = _ends(stack, [names.commands])
        except Exception:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def ready(topics: list[str], t: dict[tuple[str, int], int] | None) -> bool:
        stack.broker_up.wait()
        return _safe(lambda: caught_up(stack, group, topics, t))

    next_look = time.monotonic() + 2.0
    stack._progress.clear()  # progress is watched within one wait, from its start
    while not ready([names.commands], targets):
        if time.monotonic() > deadline:
            return False
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + 2.0
            with contextlib.suppress(Exception):
                stack.watch_stalls(group, names.commands, phase)
        time.sleep(0.2)
    stable = 0  # sagas: caught up twice in a row means no step is still making another
    while stable < 2:
        if ready([names.saga], None):
            stable += 1
        else:
            stable = 0
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


def wait_group(stack: SoakStack, group: str, topics: list[str], deadline: float) -> bool:
    stable = 0
    while stable < 2:  # twice in a row: a consumer that rewound after a crash shows up here
        stack.broker_up.wait()
        if _safe(lambda: caught_up(stack, group, topics)):
            stable += 1
        else:
            stable = 0
            if time.monotonic() > deadline:
                return False
        time.sleep(0.5)
    return True


def lags(stack: SoakStack) -> dict[str, int | None]:
    """Offsets each downstream consumer group is behind (transaction markers included)."""
    from confluent_kafka import TopicPartition

    from base.topics import TopicNames
    from connectors.sink import SINK_GROUP
    from paystream import queries
    from streams.detector.app import DETECTOR_GROUP

    p = stack.settings.topic_prefix
    n = TopicNames(p)
    groups = {
        "detector": (p + DETECTOR_GROUP, [n.transfers, n.accounts]),
        "warehouse": (p + SINK_GROUP, [n.ledger, n.transfers, n.outcomes, n.accounts, n.alerts]),
        "readside": (p + "paystream-readside", [n.ledger, n.transfers, n.outcomes, n.accounts]),
    }
    out: dict[str, int | None] = {}
    for name, (group, topics) in groups.items():
        try:
            ends = _ends(stack, topics)
            c = _consumer(stack, **{"group.id": group})
            try:
                done = queries._committed(c, [TopicPartition(t, q) for (t, q) in ends])
            finally:
                c.close()
            out[name] = sum(end - max(done.get(k, 0), 0) for k, end in ends.items())
        except Exception:
            out[name] = None
    return out


def drain_all(stack: SoakStack, deadline: float, say: Callable[[str], None]) -> dict[str, Any]:
    from base.topics import TopicNames
    from connectors.sink import SINK_GROUP
    from streams.detector.app import DETECTOR_GROUP

    p = stack.settings.topic_prefix
    n = TopicNames(p)
    out: dict[str, Any] = {"ok": False, "lag_at_start": lags(stack)}
    say(f"[drain] records behind when the workload ended: {out['lag_at_start']}")
    t0 = time.monotonic()
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("ledger", lambda: wait_ledger(stack, deadline)),
        (
            "detector",
            lambda: wait_group(stack, p + DETECTOR_GROUP, [n.transfers, n.accounts], deadline),
        ),
        (
            "warehouse",
            lambda: wait_group(
                stack,
                p + SINK_GROUP,
                [n.ledger, n.transfers, n.outcomes, n.accounts, n.alerts],
                deadline,
            ),
        ),
        (
            "readside",
            lambda: wait_group(
                stack,
                p + "paystream-readside",
                [n.ledger, n.transfers, n.outcomes, n.accounts],
                deadline,
            ),
        ),
    ]
    for name, fn in steps:
        if not fn():
            out[name] = None
            say(f"[drain] {name} not caught up")
            return out
        out[name] = round(time.monotonic() - t0, 1)
        say(f"[drain] {name} caught up after {out[name]}s")
    out["ok"] = True
    return out
