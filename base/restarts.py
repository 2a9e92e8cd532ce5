"""How many times this process restarted itself in place, and since when.

``restart_in_place`` (paystream.bootstrap) re-executes the process image, which keeps its
pid and its environment and nothing else: the count travels in two environment variables,
read and written only here. They are process state, not settings: nobody sets them by hand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_COUNT = "PAYSTREAM_RESTARTS"
_SINCE = "PAYSTREAM_RESTARTS_SINCE"


@dataclass(frozen=True, slots=True)
class Restarts:
    count: int  # restarts in place within the current window
    since: float  # epoch seconds: when the window began


def restarts_so_far(now: float) -> Restarts:
    """The restarts of this process before its current image (none: ``Restarts(0, now)``)."""
    return Restarts(int(os.environ.get(_COUNT) or 0), float(os.environ.get(_SINCE) or now))


def pass_on(restarts: Restarts) -> None:
    """Leave ``restarts`` for the next image of this process (set before ``os.execv``)."""
    os.environ[_COUNT] = str(restarts.count)
    os.environ[_SINCE] = repr(restarts.since)
