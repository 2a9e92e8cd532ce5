"""Process entry points: what `paystream worker|warehouse|readside|detector` run.

Each takes the ``Settings`` its CLI verb loaded (once, from the environment the stack
builder gave it: ``paystream.stack``), sets up logging, and restarts itself in place on a
failure. Building and stopping the stack is ``paystream.stack``'s business; its ``up``,
``down``, ``status`` and ``resolved`` are re-exported here for the CLI.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from base.config import Limits, Settings
from base.logs import configure_logging
from base.restarts import Restarts, pass_on, restarts_so_far
from ops.procs import note_restart
from paystream.stack import (
    DETECTOR_ROLE,
    READSIDE_ROLE,
    WAREHOUSE_ROLE,
    WORKER_ROLE,
    down,
    psp_sim_argv,
    resolved,
    status,
    up,
)
from streams.payments.routing import PspInfo

log = logging.getLogger(__name__)

# The CLI imports these from here (and the read side imports resolved).
__all__ = [
    "DETECTOR_ROLE",
    "READSIDE_ROLE",
    "WAREHOUSE_ROLE",
    "WORKER_ROLE",
    "configure_logging",
    "down",
    "resolved",
    "restart_in_place",
    "run_api_process",
    "run_detector_process",
    "run_executor_process",
    "run_payments_worker",
    "run_psp_simulator",
    "run_readside_process",
    "run_scheduler_process",
    "run_users_worker",
    "run_warehouse",
    "run_worker",
    "status",
    "up",
]


def _start_process(settings: Settings) -> None:
    """What every process does first: logging from its settings, and (tests set
    ``exit_with_parent``) end with its parent, so an aborted test run leaves nothing behind."""
    configure_logging(settings)
    if not settings.exit_with_parent:
        return
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def restart_in_place(reason: str, limits: Limits | None = None) -> NoReturn:
    """Replace this process with a fresh copy of itself, after a pause that grows with each
    restart. The pid stays, so ``status``, ``down`` and the supervisor's records stay right,
    and a kill -9 from outside still is one. Nothing else restarts a failed process; past
    ``restarts_max`` restarts within ``restart_window_s`` the process exits instead (exit 3):
    a fault that persists needs an operator, not a crash loop.
    """
    limits = limits or Limits()
    now = time.time()
    so_far = restarts_so_far(now)
    count, since = so_far.count, so_far.since
    if now - since > limits.restart_window_s:
        count, since = 0, now
    count += 1
    if count > limits.restarts_max:
        log.critical("giving up after %d restarts in %.0fs: %s", count - 1, now - since, reason)
        note_restart(reason, now, gave_up=True)  # for `paystream status`
        logging.shutdown()
        os._exit(3)
    pause_s = min(limits.restart_backoff_max_s, 0.5 * 2 ** (count - 1))
    log.critical("restarting in place in %.1fs (restart %d): %s", pause_s, count, reason)
    note_restart(reason, now)  # for `paystream status`
    logging.shutdown()
    time.sleep(pause_s)
    pass_on(Restarts(count, since))
    # Descriptors of the old image (sockets of a stuck client, locks) go with it.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


EX_TEMPFAIL = 75  # sysexits.h: "try again later"; a main function may return it
EX_CONFIG = 78  # sysexits.h: a configuration error; no restart would mend it


def _restart_on_failure(name: str, run: Callable[[], int | None]) -> int:
    """Run a process's main function; on a failure (not a violated invariant, which must stop
    the process loudly) restart in place."""
    from streams.errors import InvariantViolation

    try:
        code = run()
    except (InvariantViolation, SystemExit, KeyboardInterrupt):
        raise
    except:  # noqa: E722 - an error in a librdkafka callback comes back as a bare KafkaError
        exc = sys.exc_info()[1]
        log.exception("%s failed", name)
        restart_in_place(f"{name} failed: {type(exc).__name__}: {exc}")
    if code == EX_TEMPFAIL:
        restart_in_place(f"{name} could not start")
    return int(code or 0)


def run_worker(settings: Settings, instance: int) -> int:
    """Entry point of a ledger worker process."""
    _start_process(settings)
    from streams.processor import ledger_processor

    settings = resolved(settings)
    processor = ledger_processor(settings, instance, on_stall=restart_in_place)
    return _restart_on_failure(f"ledger worker {instance}", processor.run)


def run_warehouse(settings: Settings) -> int:
    """Entry point of the warehouse process: owns chDB, serves its HTTP front, runs the sink."""
    _start_process(settings)
    return _restart_on_failure("warehouse", lambda: _warehouse(resolved(settings)))


def _warehouse(settings: Settings) -> int:
    from connectors.sink import ClickHouseSink, WarehouseSink
    from connectors.warehouse import chdb_path, embedded, http_port, migrate, owner_client

    client = owner_client(settings)
    migrate(client)
    server = writer = None
    if embedded(settings):
        from connectors.chhttp import ChdbExecutor, serve

        executor = ChdbExecutor(str(chdb_path(settings)))
        server = serve(executor, port=http_port(settings))
        log.info("ClickHouse HTTP interface on %s", server.url)
        writer = writer_front(settings, executor)
    sink = WarehouseSink(settings, ClickHouseSink(client))
    try:
        sink.run()
    finally:
        if server is not None:
            server.shutdown()
        if writer is not None:
            writer.shutdown()
    return 0


def writer_front(settings: Settings, executor: Any) -> Any:
    """A read-write front on a free port of 127.0.0.1 for the warehouse's own writers
    (reconciliation's settlement imports), its port in $PAYSTREAM_HOME/warehouse-writer.port
    (owner-only, like the API token), and a password of its own in warehouse-writer.key:
    only the owner of $PAYSTREAM_HOME may write, not anyone who reaches the loopback port."""
    import secrets

    from connectors.chhttp import serve
    from connectors.warehouse import WRITER_BODY_BYTES_MAX, writer_key_file, writer_port_file

    password = secrets.token_urlsafe(32)
    _write_private(writer_key_file(settings), password)
    writer = serve(
        executor,
        port=0,
        readonly=False,
        max_body_bytes=WRITER_BODY_BYTES_MAX,
        password=password,
    )
    _write_private(writer_port_file(settings), str(writer.port))
    log.info("warehouse writer front on %s", writer.url)
    return writer


def _write_private(path: Path, text: str) -> None:
    """Write an owner-only file atomically: it is never seen half-written or world-readable."""
    tmp = path.with_suffix(".tmp")
    tmp.touch(0o600)
    tmp.chmod(0o600)
    tmp.write_text(text)
    tmp.replace(path)


def run_readside_process(settings: Settings, web_port: int) -> int:
    """Entry point of a read-side worker (faust), serving its views on ``web_port``."""
    from streams.readside.app import run_readside

    _start_process(settings)
    # A failed batch cannot unwind (faust would commit its offsets): the read side calls
    # restart_in_place from inside the agent, as a kill -9 and a start would.
    return _restart_on_failure(
        "read side",
        lambda: run_readside(resolved(settings), web_port, on_batch_failed=restart_in_place),
    )


def run_detector_process(settings: Settings, max_hops: int, window_s: float) -> int:
    """Entry point of the related-transfer detector."""
    from streams.detector.app import run_detector
    from streams.detector.graph import RelatedTransferDetector

    _start_process(settings)
    # Its limits are refused at start, loudly (ValueError), never by restarting in a loop.
    RelatedTransferDetector(max_hops, round(window_s * 1_000_000))
    return _restart_on_failure(
        "detector", lambda: run_detector(resolved(settings), max_hops, window_s)
    )


# --- payments ---


def _psp_table(settings: Settings) -> tuple[PspInfo, ...]:
    """The PSPs of psps.toml, as routing sees them."""
    from connectors.psp.config import load_psps, psps_path

    return tuple(p.info() for p in load_psps(psps_path(settings.home)))


def run_payments_worker(settings: Settings, instance: int) -> int:
    """Entry point of a payments worker: the exactly-once processor running the payments."""
    _start_process(settings)
    from connectors.psp.errors import PspConfigError
    from streams.payments_agent import PaymentsAgent
    from streams.processor import Processor

    settings = resolved(settings)
    try:
        psps = _psp_table(settings)
    except PspConfigError as exc:
        log.critical("%s", exc)
        return EX_CONFIG

    def run() -> int | None:
        # Routing reads the PSPs' circuit breakers (paystream.psp-breakers.v1) as the
        # executors publish them: an open one is skipped while another candidate is healthy.
        health = _health_view(settings, instance)
        try:
            agent = PaymentsAgent(psps, health.health)
            Processor(agent, settings, instance, on_stall=restart_in_place).run()
        finally:
            health.close()
        return 0

    return _restart_on_failure(f"payments worker {instance}", run)


def _health_view(settings: Settings, instance: int) -> Any:
    from base.topics import TopicNames
    from streams.psp_health import BreakerLog, HealthView

    topic = TopicNames(settings.topic_prefix).psp_breakers
    bootstrap = settings.bootstrap or f"127.0.0.1:{settings.broker_port_base}"
    view = HealthView(BreakerLog(settings, bootstrap, topic, f"payments-{instance}"))
    view.start()
    return view


def run_users_worker(settings: Settings, instance: int) -> int:
    """Entry point of a users worker: the exactly-once processor running the wallet's users
    (streams/users_agent.py, docs/wallet.md)."""
    _start_process(settings)
    from streams.processor import Processor
    from streams.users_agent import UsersAgent

    settings = resolved(settings)
    processor = Processor(UsersAgent(), settings, instance, on_stall=restart_in_place)
    return _restart_on_failure(f"users worker {instance}", processor.run)


def run_executor_process(settings: Settings, instance: int) -> int:
    """Entry point of the PSP executor (connectors/psp/executor.py)."""
    _start_process(settings)
    from connectors.psp.executor import run_executor

    return _restart_on_failure(
        "psp executor", lambda: run_executor(resolved(settings), instance=instance)
    )


def run_api_process(settings: Settings) -> int:
    """Entry point of the payment REST API (paystream/api/)."""
    _start_process(settings)
    from paystream.api.server import run_api

    return _restart_on_failure("payment API", lambda: run_api(resolved(settings)))


def run_scheduler_process(settings: Settings, instance: int) -> int:
    """Entry point of a scheduler (streams/scheduler/): the schedules of its partitions, due
    occurrences submitted to the payment API with the service token."""
    _start_process(settings)
    from paystream.scheduler_sender import PaymentApiSender
    from streams.scheduler.clock import SystemClock
    from streams.scheduler.loop import Scheduler
    from streams.scheduler.submit import SubmitPool

    settings = resolved(settings)
    limits = settings.limits
    clock = SystemClock()
    pool = SubmitPool(
        PaymentApiSender.from_settings(settings),
        clock,
        limits.scheduler_submits_in_flight_max,
        limits.scheduler_submit_backoff_max_s,
    )
    scheduler = Scheduler(settings, pool, instance, clock, on_stall=restart_in_place)
    return _restart_on_failure(f"scheduler {instance}", scheduler.run)


def run_psp_simulator(settings: Settings) -> int:
    """Entry point of the embedded PSP simulator (pspsim): its four PSPs on
    ``psp_sim_port``.., state in ``$PAYSTREAM_HOME/pspsim``, bankco's webhooks to the API."""
    _start_process(settings)
    from pspsim.cli import main as pspsim_main

    return _restart_on_failure("psp simulator", lambda: pspsim_main(psp_sim_argv(settings)))
