"""When the payments core asks a PSP again about an order it is waiting on: the poller's and
the janitor's schedules (docs/psp-resilience.md). Pure: the core's own limits, since deciding
depends on them (as the ledger's live in streams.ledger.model).

* **Poller**: an order ``pending`` at an asynchronous PSP is asked for its token's status
  ``POLL_INITIAL_S`` after it went pending, then at intervals doubling up to
  ``POLL_INTERVAL_MAX_S`` (Formance caps its backoff at 100 s too), ``POLLS_MAX`` times at
  most; then the order is handed to review (it stays ``pending``: a webhook or a later answer
  still settles it).
* **Janitor**: an order ``unknown`` (execute was sent and no definitive answer came) is
  resolved at the same PSP with the same token, at each delay of ``JANITOR_SCHEDULE_S``
  after the previous answer: 10 s, 1 min, 10 min, 1 h, then daily for a week; still unknown
  after the last, it goes to review (a ``recon`` item of category ``psp_unresolved`` on
  ``paystream.reviews.v1``) and stays ``unknown``.

A chain asks once at a time: the next request is decided only when the answer to the
previous one arrives (or its call failed), so two polls of one order never overlap.
"""

from __future__ import annotations

from typing import Final

US_PER_S: Final = 1_000_000

POLL_INITIAL_S: Final = 1
POLL_INTERVAL_MAX_S: Final = 100
POLLS_MAX: Final = 100  # about 2.6 hours of polling

DAY_S: Final = 86_400
JANITOR_SCHEDULE_S: Final[tuple[int, ...]] = (10, 60, 600, 3_600, *(DAY_S,) * 7)


def poll_delay_us(n: int) -> int | None:
    """The wait before poll ``n`` (1-based) of a pending order; None past the last poll."""
    if not 1 <= n <= POLLS_MAX:
        return None
    delay_s: int = min(POLL_INITIAL_S << min(n - 1, 30), POLL_INTERVAL_MAX_S)
    return delay_s * US_PER_S


def janitor_delay_us(n: int) -> int | None:
    """The wait before the janitor's check ``n`` (1-based) of an unknown order; None past it."""
    if not 1 <= n <= len(JANITOR_SCHEDULE_S):
        return None
    return JANITOR_SCHEDULE_S[n - 1] * US_PER_S
