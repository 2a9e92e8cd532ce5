"""A half-open breaker's trial call when no payment brings one: the PSP's capabilities
(read-only, and refused by an outage like every call), so a PSP's recovery never waits for
traffic that routing keeps away from it."""

from __future__ import annotations

import logging
import time

from connectors.psp.base import PspConnector
from connectors.psp.board import BreakerBoard
from connectors.psp.errors import PspCallError

log = logging.getLogger(__name__)


async def probe(connector: PspConnector, board: BreakerBoard) -> None:
    """One trial call; its outcome goes to the breaker (the board counted the trial)."""
    psp = connector.name
    started = time.perf_counter_ns()
    ok, latency_us = False, 0
    board.started(psp)
    try:
        await connector.capabilities()
        ok = True
    except PspCallError as exc:
        ok, latency_us = not exc.retryable, exc.latency_us
    except Exception:
        log.exception("probe of %s failed", psp)
    finally:
        latency_us = latency_us or (time.perf_counter_ns() - started) // 1000
        board.ended(psp, ok, latency_us, trial=True)
    log.info(
        "breaker %s: probe %s in %.1f ms", psp, "answered" if ok else "failed", latency_us / 1000
    )
