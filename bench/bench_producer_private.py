#!/usr/bin/env python
"""The producer benchmark against a private broker (bench_producer.py takes any broker)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from common import private_broker

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--commands", type=int, default=200_000)
    a = ap.parse_args()
    with private_broker() as cluster:
        here = Path(__file__).resolve().parent
        sys.exit(
            subprocess.call(
                [
                    sys.executable,
                    str(here / "bench_producer.py"),
                    "--bootstrap",
                    cluster.bootstrap,
                    "--commands",
                    str(a.commands),
                ]
            )
        )
