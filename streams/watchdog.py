"""A watchdog for calls into librdkafka that can block past their own timeouts.

librdkafka 2.16 can hang in ``send_offsets_to_transaction`` (and with it the whole worker)
after a broker restart, ignoring the call's timeout (upstream librdkafka #5456, #5511); the
chaos soak caught it. A call stuck in C cannot be interrupted from Python, so the watchdog
hands the stall to ``on_stall`` (the worker process restarts itself in place) instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Watchdog:
    def __init__(self, limit_s: float, on_stall: Callable[[str], None]) -> None:
        self.limit_s = limit_s
        self.on_stall = on_stall
        self._since: float | None = None
        self._what = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, daemon=True, name="watchdog")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Watch the block: past ``limit_s`` inside it, ``on_stall`` is called."""
        self._what, self._since = what, time.monotonic()
        try:
            yield
        finally:
            self._since = None

    def _watch(self) -> None:
        tick = min(1.0, self.limit_s / 4)
        while not self._stop.wait(tick):
            since = self._since
            if since is not None and time.monotonic() - since > self.limit_s:
                reason = f"{self._what} stuck for more than {self.limit_s:.0f}s"
                log.critical(reason)
                self.on_stall(reason)
                return
