"""``python -m paystream.api``: the API process, from PAYSTREAM_* settings (tests use it; the
CLI's ``paystream api`` is the lead's wiring of ``run_api``)."""

from __future__ import annotations

import sys

from base.config import load_settings
from paystream.bootstrap import configure_logging, exit_with_parent

from .server import run_api


def main() -> int:
    configure_logging()
    exit_with_parent()
    return run_api(load_settings())


if __name__ == "__main__":
    sys.exit(main())
