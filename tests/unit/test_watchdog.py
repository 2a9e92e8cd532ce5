"""The watchdog and the restart in place that together unstick a worker whose librdkafka
call hangs past its own timeout (seen after broker restarts in the chaos soak)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from streams.watchdog import Watchdog


def test_a_guarded_block_past_its_limit_is_reported_once() -> None:
    stalls: list[str] = []
    fired = threading.Event()
    dog = Watchdog(0.2, lambda reason: (stalls.append(reason), fired.set()))
    dog.start()
    try:
        with dog.guard("a transaction"):
            assert fired.wait(5)
        time.sleep(0.3)
    finally:
        dog.stop()
    assert len(stalls) == 1 and "a transaction stuck" in stalls[0]


def test_blocks_within_the_limit_and_idle_time_are_not_stalls() -> None:
    stalls: list[str] = []
    dog = Watchdog(0.3, stalls.append)
    dog.start()
    try:
        for _ in range(5):
            with dog.guard("a transaction"):
                time.sleep(0.1)
        time.sleep(0.6)  # outside any guard: waiting for input is not a stall
    finally:
        dog.stop()
    assert stalls == []


def test_restart_in_place_keeps_the_pid_and_gives_up_past_the_limit(tmp_path: Path) -> None:
    script = tmp_path / "proc.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            from paystream.bootstrap import restart_in_place
            from base.config import Limits

            print(os.getpid(), os.environ.get("PAYSTREAM_RESTARTS", "0"), flush=True)
            restart_in_place("test", Limits(restarts_max=2, restart_backoff_max_s=0.01))
            """
        )
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    lines = [ln.split() for ln in out.stdout.splitlines()]
    assert [n for _, n in lines] == ["0", "1", "2"], out.stderr
    assert len({pid for pid, _ in lines}) == 1  # the same process each time
    assert out.returncode == 3
    assert "giving up after 2 restarts" in out.stderr
