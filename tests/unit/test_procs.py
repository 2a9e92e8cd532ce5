from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from ops.procs import Supervisor

SLEEP = ["sleep", "30"]
NO_RESTARTS = {"restarts": 0, "last_restart": None}


@pytest.fixture
def sup(tmp_path: Path) -> Iterator[Supervisor]:
    s = Supervisor(tmp_path)
    yield s
    s.stop_all(timeout_s=2)


def _eventually(cond: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_start_alive_list_stop(sup: Supervisor, tmp_path: Path) -> None:
    pid = sup.start("sleeper", "worker", SLEEP)
    assert sup.alive("sleeper")
    assert sup.pid("sleeper") == pid
    # Starting a live name is a no-op.
    assert sup.start("sleeper", "worker", SLEEP) == pid
    assert sup.list() == [
        {**NO_RESTARTS, "name": "sleeper", "role": "worker", "pid": pid, "alive": True}
    ]
    rec = json.loads((tmp_path / "run" / "sleeper.json").read_text())
    assert rec["argv"] == SLEEP
    assert {"name", "role", "pid", "argv", "create_time", "started_at"} <= rec.keys()

    assert sup.stop("sleeper", timeout_s=5)
    assert not sup.alive("sleeper")
    assert not psutil.pid_exists(pid)  # reaped, not left as a zombie
    assert sup.list() == []
    assert not sup.stop("sleeper")


def test_output_goes_to_log_and_exit_is_seen(sup: Supervisor) -> None:
    code = "import sys; print('to-stdout'); print('to-stderr', file=sys.stderr)"
    sup.start("talker", "worker", [sys.executable, "-c", code])
    assert _eventually(lambda: not sup.alive("talker"))
    log = sup.log_path("talker").read_text()
    assert "to-stdout" in log and "to-stderr" in log
    rec = sup.record("talker")
    assert rec is not None
    assert sup.list() == [
        {**NO_RESTARTS, "name": "talker", "role": "worker", "pid": rec.pid, "alive": False}
    ]


def test_kill_keeps_record_and_start_restarts(sup: Supervisor) -> None:
    pid = sup.start("victim", "worker", SLEEP)
    assert sup.kill("victim", signal.SIGKILL)
    assert _eventually(lambda: not sup.alive("victim"))
    assert sup.list()[0]["alive"] is False
    new_pid = sup.start("victim", "worker", SLEEP)
    assert new_pid != pid and sup.alive("victim")


def test_sigterm_ignored_escalates_to_sigkill(sup: Supervisor) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('handler' + '-installed', flush=True); time.sleep(60)"
    )
    sup.start("stubborn", "worker", [sys.executable, "-c", code])
    # The marker is built at run time so the argv echoed in the log's header can't match.
    assert _eventually(lambda: "handler-installed" in sup.log_path("stubborn").read_text())
    t0 = time.monotonic()
    assert sup.stop("stubborn", timeout_s=0.5)
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed < 5
    assert not sup.alive("stubborn")


def test_pid_reuse_is_not_ours(sup: Supervisor, tmp_path: Path) -> None:
    # A stranger now holds the recorded pid: same pid, different birth time.
    stranger = subprocess.Popen(SLEEP)
    try:
        born = psutil.Process(stranger.pid).create_time()
        (tmp_path / "run").mkdir(parents=True, exist_ok=True)
        (tmp_path / "run" / "ghost.json").write_text(
            json.dumps(
                {
                    "name": "ghost",
                    "role": "worker",
                    "pid": stranger.pid,
                    "argv": SLEEP,
                    "create_time": born - 100.0,
                    "started_at": time.time() - 100.0,
                }
            )
        )
        assert not sup.alive("ghost")
        assert sup.list() == [
            {**NO_RESTARTS, "name": "ghost", "role": "worker", "pid": stranger.pid, "alive": False}
        ]
        assert not sup.kill("ghost", signal.SIGKILL)
        assert not sup.stop("ghost", timeout_s=1)
        sup.stop_all(timeout_s=1)
        assert stranger.poll() is None  # never signalled
        # Starting the name again spawns our own process instead of adopting the stranger.
        assert sup.start("ghost", "worker", SLEEP) != stranger.pid
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_all_filters_roles_newest_first(sup: Supervisor) -> None:
    sup.start("broker-1", "broker", SLEEP)
    sup.start("w1", "worker", SLEEP)
    sup.start("w2", "worker", SLEEP)
    sup.start("sink", "sink", SLEEP)
    assert sup.stop_all(roles={"worker"}, timeout_s=5) == ["w2", "w1"]
    assert [p["name"] for p in sup.list() if p["alive"]] == ["broker-1", "sink"]
    # Brokers go last even though they started first.
    sup.start("w3", "worker", SLEEP)
    assert sup.stop_all(timeout_s=5) == ["w3", "sink", "broker-1"]
    assert sup.list() == []


def test_names_are_checked(sup: Supervisor) -> None:
    with pytest.raises(ValueError):
        sup.start("../evil", "worker", SLEEP)
    with pytest.raises(ValueError):
        sup.start("ok", "worker", [])


def test_restarts_in_place_are_counted(sup: Supervisor) -> None:
    """A process notes its restarts (``note_restart``, as ``restart_in_place`` does) and
    ``list`` shows them; a new start of the name begins from zero."""
    code = (
        "import time; from ops.procs import note_restart;"
        "note_restart('first', 1_700_000_000.0); note_restart('second: boom', 1_700_000_060.0);"
        "time.sleep(30)"
    )
    argv = [sys.executable, "-c", code]
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sup.start("restarter", "worker", argv, env=env)
    assert _eventually(lambda: sup.list()[0]["restarts"] == 2)
    [p] = sup.list()
    assert p["alive"] and p["last_restart"] == {
        "at": "2023-11-14T22:14:20Z",
        "reason": "second: boom",
        "gave_up": False,
    }
    sup.kill("restarter")
    sup.start("restarter", "worker", SLEEP)
    assert sup.list()[0]["restarts"] == 0 and sup.list()[0]["last_restart"] is None
    sup.stop("restarter", timeout_s=2)
    assert not sup.restarts_path("restarter").exists()


def test_note_restart_outside_a_supervisor_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    from ops.procs import RESTARTS_FILE_ENV, note_restart

    monkeypatch.delenv(RESTARTS_FILE_ENV, raising=False)
    note_restart("nobody listens", time.time())  # no error, no file
