"""The chaos: a seeded schedule of kill -9 and one broker restart, run by a thread that also
revives what died by itself; and the checks that the chaos happened."""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.soak.drain import lags
from tests.soak.plan import SoakConfig
from tests.soak.stack import SoakStack, process_kind
from tests.soak.verify import Check

KINDS = ("worker", "warehouse", "readside", "detector")


@dataclass(frozen=True)
class Action:
    at_s: float
    kind: str  # kill | broker
    victim: str  # process name, or "kafka-1"
    down_s: float


def schedule(cfg: SoakConfig) -> list[Action]:
    """The seeded chaos schedule: ``kills`` kill -9 at stratified random times, one broker
    restart in the middle, every process kind hit (workers about half the time)."""
    rng = random.Random(cfg.seed)
    span = cfg.schedule_span_s()
    n = cfg.kills
    others = max(0, n - (n + 1) // 2)
    kinds = ["worker"] * (n - others) + [KINDS[1 + i % 3] for i in range(others)]
    rng.shuffle(kinds)
    actions = []
    for k, kind in enumerate(kinds):
        at = span * (k + rng.random()) / n
        victim = f"ledger-{rng.randint(1, cfg.workers)}" if kind == "worker" else kind
        actions.append(Action(round(at, 2), "kill", victim, round(rng.uniform(0.2, 3.0), 2)))
    if cfg.broker != "none":
        at = span * rng.uniform(0.3, 0.7)
        actions.append(Action(round(at, 2), "broker", "kafka-1", round(rng.uniform(1.0, 4.0), 2)))
    return sorted(actions, key=lambda a: a.at_s)


class Chaos(threading.Thread):
    """Runs the schedule, restarts what it killed, and revives what died by itself."""

    def __init__(self, stack: SoakStack, actions: list[Action], say: Callable[[str], None]) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack = stack
        self.actions = list(actions)
        self.say = say
        self.kills: list[dict[str, Any]] = []
        self.broker_restarts: list[dict[str, Any]] = []
        self.self_exits: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.schedule_done = threading.Event()
        self._halt = threading.Event()
        self._pending: dict[str, float] = {}  # name -> monotonic time to start it again
        self._names = list(stack.specs())
        self.t0 = time.monotonic()
        # Downstream consumers' lag every 10 s: who keeps up, who is the tail.
        self.lag_samples: list[dict[str, Any]] = []
        self._next_sample = self.t0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # surfaced in the verdict
            self.errors.append(traceback.format_exc())
            self.schedule_done.set()

    def _run(self) -> None:
        todo = list(self.actions)
        paused = 0.0  # the broker's restart does not count: the schedule resumes after it
        while not self._halt.is_set():
            now = time.monotonic()
            for name, when in list(self._pending.items()):
                if now >= when:
                    self.stack.start(name)
                    del self._pending[name]
            while todo and now - self.t0 - paused >= todo[0].at_s:
                a = todo.pop(0)
                if a.victim in self._pending:  # still down from the last kill: a bit later
                    todo.append(Action(a.at_s + 2.0, a.kind, a.victim, a.down_s))
                    todo.sort(key=lambda x: x.at_s)
                    continue
                paused += self._do(a)
                now = time.monotonic()
            if not todo and not self._pending:
                self.schedule_done.set()
            if self.stack.broker_up.is_set():
                self._revive(now)
                if now >= self._next_sample:
                    self._next_sample = now + 10.0
                    self.lag_samples.append({"at_s": round(now - self.t0, 1), **lags(self.stack)})
            self._halt.wait(0.2)

    def _do(self, a: Action) -> float:
        """Carry out one action; returns the seconds it paused the schedule."""
        elapsed = time.monotonic() - self.t0
        if a.kind == "broker":
            self.say(
                f"[chaos] {elapsed:6.1f}s {time.strftime('%H:%M:%S')} broker restart "
                f"({self.stack.cfg.broker})"
            )
            took = self.stack.restart_broker(self.stack.cfg.broker, a.down_s)
            self.broker_restarts.append(
                {
                    "at_s": round(elapsed, 1),
                    "mode": self.stack.cfg.broker,
                    "back_after_s": round(took, 1),
                }
            )
            self.say(f"[chaos] broker back after {took:.1f}s")
            return took
        hit = self.stack.kill(a.victim)
        self.kills.append(
            {
                "at_s": round(elapsed, 1),
                "clock": time.strftime("%H:%M:%S"),
                "process": a.victim,
                "kind": process_kind(a.victim),
                "was_alive": hit,
                "down_s": a.down_s,
            }
        )
        self.say(
            f"[chaos] {elapsed:6.1f}s {time.strftime('%H:%M:%S')} kill -9 {a.victim}"
            + ("" if hit else " (it was not running: restarting)")
        )
        self._pending[a.victim] = time.monotonic() + a.down_s
        return 0.0

    def _revive(self, now: float) -> None:
        for name in self._names:
            if name in self._pending or self.stack.alive(name):
                continue
            tail = self.stack.log_tail(name)
            self.self_exits.append(
                {"at_s": round(now - self.t0, 1), "process": name, "log_tail": tail}
            )
            self.say(f"[chaos] {name} exited by itself: {tail[-1] if tail else ''}")
            self._pending[name] = now + 1.0


def chaos_checks(cfg: SoakConfig, chaos: Chaos) -> list[Check]:
    by_kind = Counter(k["kind"] for k in chaos.kills)
    hit = Counter(k["kind"] for k in chaos.kills if k["was_alive"])
    enough = len(chaos.kills) >= min(cfg.kills, 20) and all(by_kind[k] for k in KINDS)
    checks = [
        Check(
            "chaos: kill -9 of every process kind",
            enough and not chaos.errors,
            f"{len(chaos.kills)} kills ({sum(hit.values())} of a live process): "
            + ", ".join(f"{k} {by_kind[k]}" for k in KINDS)
            + (
                f"; {len(chaos.self_exits)} exited by themselves (restarted)"
                if chaos.self_exits
                else ""
            ),
            {
                "kills": len(chaos.kills),
                "live": sum(hit.values()),
                **dict(by_kind),
                "self_exits": len(chaos.self_exits),
            },
            chaos.errors,
        )
    ]
    if cfg.broker != "none":
        checks.append(
            Check(
                "chaos: broker restarted",
                len(chaos.broker_restarts) == 1,
                ", ".join(
                    f"{b['mode']} at {b['at_s']}s, back after {b['back_after_s']}s"
                    for b in chaos.broker_restarts
                )
                or "no restart",
                {"restarts": len(chaos.broker_restarts)},
            )
        )
    return checks
