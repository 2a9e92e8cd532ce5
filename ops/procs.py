"""A tiny background-process supervisor.

``paystream up/down/status`` run every process (brokers, ledger workers, sinks...) through
this. Each process gets ``home/run/{name}.json`` (who it is) and ``home/log/{name}.log``
(stdout and stderr, appended). A process is identified by its pid *and* its create time, so a
recycled pid is never mistaken for ours and never signalled.

A process that restarts itself in place (same pid: ``paystream.bootstrap.restart_in_place``)
notes it with :func:`note_restart` in ``home/run/{name}.restarts`` (the path is in its
environment, ``PAYSTREAM_RESTARTS_FILE``), and ``list`` shows the count and the last one.

Processes run in their own session so they outlive the CLI that started them. Only the
recorded pid is signalled, not its process group: ``argv`` should exec the real program
rather than wrap it in a shell.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

BROKER_ROLE = "broker"
# create_time comes from jiffies since boot (10 ms ticks); 50 ms absorbs rounding only.
CREATE_TIME_TOLERANCE_S = 0.05
# After SIGKILL a process only survives while stuck in the kernel; don't wait forever.
_KILL_GRACE_S = 5.0
_POLL_S = 0.05
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
# Where a supervised process notes its restarts in place: set in its environment by start().
RESTARTS_FILE_ENV = "PAYSTREAM_RESTARTS_FILE"

# Popen handles of children started by this interpreter, by pid. Polling them reaps exited
# children (no zombies in long-lived parents such as pytest) and stops Popen from warning
# that a still-running child was garbage collected.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def _reap_children() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)  # another thread may have reaped it first


@dataclass(frozen=True, slots=True)
class ProcRecord:
    name: str
    role: str
    pid: int
    argv: list[str]
    create_time: float  # psutil create_time, epoch seconds
    started_at: float  # wall clock when we spawned it; orders stop_all


def _same_process(pid: int, create_time: float) -> bool:
    """True if ``pid`` is running (not a zombie) and is the process born at ``create_time``."""
    _reap_children()
    try:
        proc = psutil.Process(pid)
        if abs(proc.create_time() - create_time) > CREATE_TIME_TOLERANCE_S:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _signal_exact(pid: int, create_time: float, sig: int) -> bool:
    """Send ``sig`` only if ``pid`` is still the recorded process. Returns whether it was sent."""
    try:
        # A pidfd pins the process: checking identity then signalling through the fd cannot
        # hit a different process that recycled the pid in between.
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # kernel without pidfd (< 5.3): accept the microsecond race
        fd = -1
    try:
        if not _same_process(pid, create_time):
            return False
        if fd >= 0:
            signal.pidfd_send_signal(fd, sig)
        else:
            os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        if fd >= 0:
            os.close(fd)


class Supervisor:
    """Start, watch and stop named background processes under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "log"

    # -- paths and records -------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        _check_name(name)
        return self.log_dir / f"{name}.log"

    def _record_path(self, name: str) -> Path:
        _check_name(name)
        return self.run_dir / f"{name}.json"

    def restarts_path(self, name: str) -> Path:
        _check_name(name)
        return self.run_dir / f"{name}.restarts"  # not *.json: that is a process record

    def restarts(self, name: str) -> dict[str, Any]:
        """``{"restarts": n, "last_restart": {"at", "reason"} | None}`` of the current process."""
        try:
            data = json.loads(self.restarts_path(name).read_text())
            return {"restarts": int(data["restarts"]), "last_restart": data["last_restart"]}
        except FileNotFoundError:
            return {"restarts": 0, "last_restart": None}
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring unreadable restart record of %s: %s", name, exc)
            return {"restarts": 0, "last_restart": None}

    def record(self, name: str) -> ProcRecord | None:
        """The recorded process for ``name`` (alive or not), or None."""
        path = self._record_path(name)
        try:
            data = json.loads(path.read_text())
            return ProcRecord(
                name=str(data["name"]),
                role=str(data["role"]),
                pid=int(data["pid"]),
                argv=[str(a) for a in data["argv"]],
                create_time=float(data["create_time"]),
                started_at=float(data["started_at"]),
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError) as exc:
            # A torn or hand-edited record identifies nothing; treat it as absent.
            log.warning("ignoring unreadable process record %s: %s", path, exc)
            return None

    def _write(self, rec: ProcRecord) -> None:
        path = self._record_path(rec.name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(rec), indent=2) + "\n")
        os.replace(tmp, path)  # readers never see a half-written record

    def _records(self) -> list[ProcRecord]:
        if not self.run_dir.is_dir():
            return []
        names = sorted(p.stem for p in self.run_dir.glob("*.json") if _NAME_RE.match(p.stem))
        return [r for n in names if (r := self.record(n)) is not None]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two CLIs running `up` at once must not both spawn the same name.
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(
        self,
        name: str,
        role: str,
        argv: list[str],
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> int:
        """Start ``argv`` as ``name`` unless it is already alive; returns its pid.

        ``env`` is laid over the current environment (the child still gets PATH, JAVA_HOME...).
        """
        if not argv:
            raise ValueError("argv must not be empty")
        with self._locked():
            current = self.record(name)
            if current is not None and _same_process(current.pid, current.create_time):
                return current.pid
            self.log_dir.mkdir(parents=True, exist_ok=True)
            # A new process starts with no restarts; it notes its own in this file.
            with contextlib.suppress(FileNotFoundError):
                self.restarts_path(name).unlink()
            child_env = {
                **os.environ,
                **(env or {}),
                RESTARTS_FILE_ENV: str(self.restarts_path(name)),
            }
            with open(self.log_path(name), "ab") as out:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                out.write(f"--- {stamp} paystream starting {name}: {argv!r}\n".encode())
                out.flush()
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=child_env,
                    cwd=cwd,
                    start_new_session=True,  # outlive the CLI; no terminal signals
                    close_fds=True,
                )
            _CHILDREN[proc.pid] = proc
            # Unreaped, our child stays readable (at worst as a zombie) until we poll it.
            create_time = psutil.Process(proc.pid).create_time()
            rec = ProcRecord(name, role, proc.pid, list(argv), create_time, time.time())
            self._write(rec)
        log.info("started %s (%s) pid %d", name, role, proc.pid)
        return proc.pid

    def alive(self, name: str) -> bool:
        rec = self.record(name)
        return rec is not None and _same_process(rec.pid, rec.create_time)

    def pid(self, name: str) -> int | None:
        """The pid of ``name`` if it is alive."""
        rec = self.record(name)
        if rec is None or not _same_process(rec.pid, rec.create_time):
            return None
        return rec.pid

    def kill(self, name: str, sig: int = signal.SIGKILL) -> bool:
        """Send ``sig`` to ``name`` if it is alive; the record stays (status shows it dead).

        After SIGKILL this returns once the process is gone, so a following ``start`` starts a
        new one instead of finding the dying one still alive.
        """
        rec = self.record(name)
        if rec is None:
            return False
        sent = _signal_exact(rec.pid, rec.create_time, sig)
        if sent:
            log.info("sent signal %s to %s pid %d", signal.Signals(sig).name, name, rec.pid)
            if sig == signal.SIGKILL and _wait_gone([rec], time.monotonic() + _KILL_GRACE_S):
                log.error("%s pid %d survived SIGKILL", name, rec.pid)
        return sent

    def stop(self, name: str, timeout_s: float = 30.0) -> bool:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; removes the record.

        Returns True if a live process was stopped.
        """
        return bool(self.stop_many([name], timeout_s))

    def stop_many(self, names: Iterable[str], timeout_s: float = 30.0) -> list[str]:
        """Stop several processes at once: SIGTERM all (in the given order), then wait.

        Waiting on all together keeps shutdown time at the slowest process, not the sum, and
        lets peers (e.g. Kafka controllers) shut down while they can still reach each other.
        Returns the names that were alive.
        """
        recs = [r for n in names if (r := self.record(n)) is not None]
        live = [r for r in recs if _signal_exact(r.pid, r.create_time, signal.SIGTERM)]
        left = _wait_gone(live, time.monotonic() + timeout_s)
        for r in left:
            log.warning(
                "%s pid %d ignored SIGTERM for %.0fs; sending SIGKILL", r.name, r.pid, timeout_s
            )
            _signal_exact(r.pid, r.create_time, signal.SIGKILL)
        stuck = {r.name for r in _wait_gone(left, time.monotonic() + _KILL_GRACE_S)}
        for r in recs:
            if r.name in stuck:
                # Keep the record so `status` still shows a process we could not end.
                log.error("%s pid %d survived SIGKILL", r.name, r.pid)
                continue
            for path in (self._record_path(r.name), self.restarts_path(r.name)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        for r in live:
            log.info("stopped %s pid %d", r.name, r.pid)
        return [r.name for r in live]

    def stop_all(self, roles: set[str] | None = None, timeout_s: float = 30.0) -> list[str]:
        """Stop every recorded process (or those with a role in ``roles``).

        Newest first, and everything else before the brokers, so clients never lose their
        broker while still running.
        """
        recs = [r for r in self._records() if roles is None or r.role in roles]
        newest_first = sorted(recs, key=lambda r: (r.started_at, r.name), reverse=True)
        stopped = self.stop_many([r.name for r in newest_first if r.role != BROKER_ROLE], timeout_s)
        stopped += self.stop_many(
            [r.name for r in newest_first if r.role == BROKER_ROLE], timeout_s
        )
        return stopped

    def list(self) -> list[dict[str, Any]]:
        """Every recorded process, sorted by name: name, role, pid, alive, restarts (in place,
        since it was started) and the last one (``{"at": ISO 8601 UTC, "reason"}`` or None)."""
        return [
            {
                "name": r.name,
                "role": r.role,
                "pid": r.pid,
                "alive": _same_process(r.pid, r.create_time),
                **self.restarts(r.name),
            }
            for r in self._records()
        ]


def note_restart(reason: str, at: float, gave_up: bool = False) -> None:
    """Called by a supervised process as it restarts itself in place (or gives up): one more
    restart, and this one's time and reason, for ``status``. Not supervised: nothing to do."""
    target = os.environ.get(RESTARTS_FILE_ENV)
    if not target:
        return
    path = Path(target)
    try:
        count = int(json.loads(path.read_text())["restarts"])
    except (OSError, ValueError, KeyError, TypeError):
        count = 0
    last = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at)),
        "reason": reason,
        "gave_up": gave_up,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"restarts": count + (not gave_up), "last_restart": last}))
        os.replace(tmp, path)
    except OSError as exc:  # bookkeeping must never stop a restart
        log.warning("could not note the restart in %s: %s", path, exc)


def _wait_gone(recs: list[ProcRecord], deadline: float) -> list[ProcRecord]:
    """Wait until every process in ``recs`` has exited or ``deadline``; returns those left."""
    left = list(recs)
    while left:
        # An unreaped child of ours is still exiting even if psutil already calls it a zombie:
        # a multi-threaded process's leader turns zombie before its other threads have closed
        # the process's files (a JVM's sockets, say).
        left = [r for r in left if _same_process(r.pid, r.create_time) or r.pid in _CHILDREN]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(_POLL_S)
    return left


def _check_name(name: str) -> None:
    # Names become file names; keep them to a safe alphabet.
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid process name {name!r}")
