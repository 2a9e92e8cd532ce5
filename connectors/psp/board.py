"""The executor's circuit breakers and call statistics, one of each per PSP. No Kafka here:
transitions go to ``publish`` (the executor writes them to ``paystream.psp-breakers.v1``),
published ones come in through ``adopt`` (the executor reads that topic), and ``stats``
builds the ``PspStats`` records it publishes every second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from connectors.psp.breaker import (
    Breaker,
    BreakerConfig,
    BreakerState,
    Permit,
    Transition,
)
from connectors.psp.limits import ExecutorLimits
from connectors.psp.stats import CallStats
from schemas import now_micros

log = logging.getLogger(__name__)

Publish = Callable[[Transition], None]


def breaker_config(limits: ExecutorLimits) -> BreakerConfig:
    return BreakerConfig(
        window_s=limits.breaker_window_s,
        window_calls_min=limits.breaker_window_calls_min,
        failure_rate_max=limits.breaker_failure_rate_max,
        consecutive_failures_max=limits.breaker_consecutive_failures_max,
        cool_down_s=limits.breaker_cool_down_s,
        trial_calls=limits.breaker_trial_calls,
        trial_successes=limits.breaker_trial_successes,
    )


class BreakerBoard:
    def __init__(
        self,
        psps: Iterable[str],
        limits: ExecutorLimits,
        executor: str,
        publish: Publish,
        clock: Callable[[], int] = now_micros,
    ) -> None:
        self.limits = limits
        self.executor = executor
        self.publish = publish
        self.clock = clock
        config = breaker_config(limits)
        now = clock()
        self.breakers = {p: Breaker(p, config, now) for p in psps}
        self.stats = {p: CallStats(limits.breaker_window_s) for p in self.breakers}
        self._last_probe_us: dict[str, int] = {}

    # --- calls ---------------------------------------------------------------------------------

    def allow(self, psp: str) -> Permit | None:
        """May a token request go to ``psp`` now? None while its breaker is open (counted)."""
        now = self.clock()
        permit, moved = self.breakers[psp].allow(now)
        self._moved(moved)
        if permit is None:
            self.stats[psp].reject(now)
        return permit

    def started(self, psp: str) -> None:
        self.stats[psp].in_flight += 1

    def ended(self, psp: str, ok: bool, latency_us: int, trial: bool = False) -> None:
        """A call ended: ``ok`` when the PSP answered (a decline or a refusal included)."""
        now = self.clock()
        stats = self.stats[psp]
        stats.in_flight = max(0, stats.in_flight - 1)
        stats.record(now, ok, latency_us)
        self._moved(self.breakers[psp].record(now, ok, trial))

    # --- time and probes -----------------------------------------------------------------------

    def tick(self) -> list[str]:
        """Cool-downs that ended turn half-open; the PSPs to probe now (half-open with no trial
        running: a payment may not come soon, and recovery must not wait for one)."""
        now = self.clock()
        probe = []
        interval_us = int(self.limits.breaker_probe_interval_s * 1_000_000)
        for psp, b in self.breakers.items():
            self._moved(b.tick(now))
            idle = b.state is BreakerState.half_open and b.trials_in_flight == 0
            due = now - self._last_probe_us.get(psp, 0) >= interval_us
            if idle and due and b.begin_trial():
                self._last_probe_us[psp] = now
                probe.append(psp)
        return probe

    # --- the shared log ------------------------------------------------------------------------

    def adopt(self, record: dict[str, Any]) -> None:
        """A ``PspBreakerChanged`` read from the topic (ours or another executor's)."""
        b = self.breakers.get(record["psp"])
        if b is None:
            return  # a PSP this executor is not configured with
        try:
            state = BreakerState(record["state"])
        except ValueError:
            log.warning("breaker record with unknown state ignored: %s", record)
            return
        before = b.state
        if b.adopt(record["seq"], state, record["since"]) and record["executor"] != self.executor:
            log.info(
                "breaker %s: %s -> %s (seq %d, from %s: %s)",
                b.psp,
                before.value,
                state.value,
                record["seq"],
                record["executor"],
                record["reason"],
            )

    def state(self, psp: str) -> tuple[BreakerState, int]:
        b = self.breakers[psp]
        return b.state, b.since_us

    def stats_records(self) -> list[dict[str, Any]]:
        now = self.clock()
        out = []
        for psp, stats in self.stats.items():
            snap = stats.snapshot(now)
            out.append(
                {
                    "psp": psp,
                    "executor": self.executor,
                    "window_s": self.limits.breaker_window_s,
                    "successes": snap.successes,
                    "failures": snap.failures,
                    "rejected": snap.rejected,
                    "latency_buckets": list(snap.buckets),
                    "in_flight": stats.in_flight,
                    "ts": now,
                }
            )
        return out

    def _moved(self, t: Transition | None) -> None:
        if t is None:
            return
        log.warning(
            "breaker %s: %s -> %s (seq %d): %s",
            t.psp,
            t.previous.value,
            t.state.value,
            t.seq,
            t.reason,
        )
        self.publish(t)


def transition_record(t: Transition, executor: str) -> dict[str, Any]:
    """A ``PspBreakerChanged`` record."""
    return {
        "psp": t.psp,
        "state": t.state.value,
        "previous": t.previous.value,
        "seq": t.seq,
        "since": t.since_us,
        "reason": t.reason,
        "executor": executor,
        "ts": now_micros(),
    }
