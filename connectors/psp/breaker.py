"""One PSP's circuit breaker: an explicit state machine, pure (no clock of its own, no I/O).

``closed`` → ``open`` when, over the sliding window, the failure rate reaches
``failure_rate_max`` with at least ``window_calls_min`` calls, or ``consecutive_failures_max``
calls failed in a row. ``open`` → ``half_open`` once ``cool_down_s`` has passed. In
``half_open`` at most ``trial_calls`` calls are let through at once (trials);
``trial_successes`` successes close it, any failure opens it again (a new cool-down).

A failure is a call that ended without an answer the PSP meant (the connector's retryable
errors: transport failures, 5xx, 429, 503); any answer, a decline or a refusal included,
is a success: the PSP is up. Token requests refused while open are not calls.

Every transition is a ``Transition`` the caller publishes (``paystream.psp-breakers.v1``);
``adopt`` takes one published by another executor (or by this one, read back), so every
executor follows the log: the latest record whose ``seq`` is at least ours wins, which is
also what the compacted topic keeps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

US_PER_S: Final = 1_000_000


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


S = BreakerState

TRANSITIONS: Final[dict[BreakerState, frozenset[BreakerState]]] = {
    S.closed: frozenset({S.open}),
    S.open: frozenset({S.half_open}),
    S.half_open: frozenset({S.closed, S.open}),
}


class BreakerError(RuntimeError):
    """A transition outside the table: a bug, never a state to limp on with."""


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    window_s: int = 10
    window_calls_min: int = 10
    failure_rate_max: float = 0.5
    consecutive_failures_max: int = 5
    cool_down_s: float = 5.0
    trial_calls: int = 3
    trial_successes: int = 2

    def __post_init__(self) -> None:
        if self.window_s < 1 or self.window_calls_min < 1 or self.consecutive_failures_max < 1:
            raise ValueError("breaker window, calls and consecutive failures must be >= 1")
        if not 0 < self.failure_rate_max <= 1:
            raise ValueError("failure_rate_max must be in (0, 1]")
        if self.trial_calls < 1 or not self.trial_successes >= 1:
            raise ValueError("trial_calls and trial_successes must be >= 1")


@dataclass(frozen=True, slots=True)
class Transition:
    psp: str
    previous: BreakerState
    state: BreakerState
    seq: int
    since_us: int
    reason: str


@dataclass(frozen=True, slots=True)
class Permit:
    """A call may go ahead; ``trial`` when it is one of half-open's trial calls."""

    trial: bool


class Breaker:
    def __init__(self, psp: str, config: BreakerConfig, now_us: int = 0) -> None:
        self.psp = psp
        self.config = config
        self.state = S.closed
        self.since_us = now_us
        self.seq = 0
        # Calls in the window: (end time, ok), oldest first.
        self._calls: deque[tuple[int, bool]] = deque()
        self._failures_in_window = 0
        self.consecutive_failures = 0
        self.trials_in_flight = 0
        self.trial_successes = 0

    # --- questions ---------------------------------------------------------------------------

    def window(self, now_us: int) -> tuple[int, int]:
        """(successes, failures) over the window ending now."""
        self._expire(now_us)
        failures = self._failures_in_window
        return len(self._calls) - failures, failures

    # --- inputs ------------------------------------------------------------------------------

    def allow(self, now_us: int) -> tuple[Permit | None, Transition | None]:
        """May a token request go to the PSP now? Open past its cool-down turns half-open
        (the transition is returned to be published)."""
        moved = self.tick(now_us)
        if self.state is S.closed:
            return Permit(trial=False), moved
        if self.state is S.half_open and self.trials_in_flight < self.config.trial_calls:
            self.trials_in_flight += 1
            return Permit(trial=True), moved
        return None, moved

    def begin_trial(self) -> bool:
        """A probe (not a payment's call) as a trial, if half-open has room for one."""
        if self.state is S.half_open and self.trials_in_flight < self.config.trial_calls:
            self.trials_in_flight += 1
            return True
        return False

    def record(self, now_us: int, ok: bool, trial: bool = False) -> Transition | None:
        """A call ended (``ok``: the PSP answered). The transition it causes, if any."""
        if trial:
            self.trials_in_flight = max(0, self.trials_in_flight - 1)
        self._expire(now_us)
        self._calls.append((now_us, ok))
        if not ok:
            self._failures_in_window += 1
        self.consecutive_failures = 0 if ok else self.consecutive_failures + 1
        if self.state is S.half_open:
            if not trial:
                return None  # a call let through before the state changed: not a trial
            if not ok:
                return self._move(S.open, now_us, "a trial call failed")
            self.trial_successes += 1
            if self.trial_successes >= self.config.trial_successes:
                return self._move(S.closed, now_us, f"{self.trial_successes} trial calls succeeded")
            return None
        if self.state is S.closed and not ok:
            return self._trip(now_us)
        return None

    def tick(self, now_us: int) -> Transition | None:
        """Time passes: open turns half-open once the cool-down is over."""
        cool_down_us = int(self.config.cool_down_s * US_PER_S)
        if self.state is S.open and now_us - self.since_us >= cool_down_us:
            return self._move(
                S.half_open, now_us, f"cool-down of {self.config.cool_down_s:g} s over"
            )
        return None

    def adopt(self, seq: int, state: BreakerState, since_us: int) -> bool:
        """A published transition (another executor's, or ours read back): taken when its
        seq is at least ours (the log's order decides between equal ones)."""
        if seq < self.seq:
            return False
        changed = (seq, state, since_us) != (self.seq, self.state, self.since_us)
        if state is not self.state:
            self._enter(state)
        self.seq, self.since_us = seq, since_us
        return changed

    # --- the machine -------------------------------------------------------------------------

    def _trip(self, now_us: int) -> Transition | None:
        c = self.config
        if self.consecutive_failures >= c.consecutive_failures_max:
            return self._move(S.open, now_us, f"{self.consecutive_failures} failures in a row")
        calls = len(self._calls)
        if calls >= c.window_calls_min:
            rate = self._failures_in_window / calls
            if rate >= c.failure_rate_max:
                return self._move(
                    S.open,
                    now_us,
                    f"{self._failures_in_window} of {calls} calls failed in {c.window_s} s",
                )
        return None

    def _move(self, new: BreakerState, now_us: int, reason: str) -> Transition:
        if new not in TRANSITIONS[self.state]:
            raise BreakerError(f"breaker {self.psp}: {self.state.value} -> {new.value}")
        old = self.state
        self._enter(new)
        self.seq += 1
        self.since_us = now_us
        return Transition(self.psp, old, new, self.seq, now_us, reason)

    def _enter(self, new: BreakerState) -> None:
        self.state = new
        self.trial_successes = 0
        if new is not S.half_open:
            self.trials_in_flight = 0
        if new is S.closed:
            # A fresh start: the failures that opened it are history.
            self._calls.clear()
            self._failures_in_window = 0
            self.consecutive_failures = 0

    def _expire(self, now_us: int) -> None:
        horizon = now_us - self.config.window_s * US_PER_S
        calls = self._calls
        while calls and calls[0][0] <= horizon:
            _, ok = calls.popleft()
            if not ok:
                self._failures_in_window -= 1
