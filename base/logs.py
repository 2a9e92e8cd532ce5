"""The one logging set-up of every paystream process (the CLI's process verbs, the soak)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable

from base.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
# Libraries that log every transient hiccup at INFO: kept at WARNING or above.
_CHATTY = ("aiokafka",)


def configure_logging(
    level: Settings | str | int = logging.INFO, *, silenced: Iterable[str] = ()
) -> None:
    """Log to stderr at ``level`` (a Settings' ``log_level``, a level name or number).

    Replaces whatever set-up was there, so the entry point's settings win over an earlier
    call. ``silenced`` loggers only log CRITICAL (the soak's probes of a restarting broker).
    """
    if isinstance(level, Settings):
        level = level.log_level
    number = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(number, int):
        raise ValueError(f"unknown log level {level!r}")
    logging.basicConfig(level=number, format=FORMAT, stream=sys.stderr, force=True)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(number, logging.WARNING))
    for name in silenced:
        logging.getLogger(name).setLevel(logging.CRITICAL)
