"""Log-in lock-out: after ``failures_max`` failures within ``window_s`` for one username or one
client address, further tries are refused (429) until the oldest of them leaves the window.

The counters are per API process, in memory (docs/wallet.md says why): a failure is counted
by the process that saw it. Bounded: at most ``keys_max`` usernames and addresses are
remembered, the least recently failed dropped first, and each keeps its last
``failures_max`` failure times only. Pure: the caller gives the time.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque


class Lockout:
    def __init__(self, failures_max: int, window_s: float, keys_max: int) -> None:
        if failures_max < 1 or window_s <= 0 or keys_max < 1:
            raise ValueError("failures_max, window_s and keys_max must be positive")
        self.failures_max = failures_max
        self.window_s = window_s
        self.keys_max = keys_max
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after_s(self, keys: list[str], now: float) -> int | None:
        """Whole seconds until a try is allowed again for every key; None if allowed now."""
        wait = 0.0
        for key in keys:
            times = self._failures.get(key)
            if times is None:
                continue
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if not times:
                del self._failures[key]
            elif len(times) >= self.failures_max:
                wait = max(wait, times[0] + self.window_s - now)
        return max(1, math.ceil(wait)) if wait > 0 else None

    def failed(self, keys: list[str], now: float) -> None:
        for key in keys:
            times = self._failures.pop(key, None) or deque(maxlen=self.failures_max)
            times.append(now)
            self._failures[key] = times  # most recently failed last
            while len(self._failures) > self.keys_max:
                self._failures.popitem(last=False)

    def succeeded(self, username_key: str) -> None:
        """A right password clears its username's failures (never its address's)."""
        self._failures.pop(username_key, None)

    def __len__(self) -> int:
        return len(self._failures)
