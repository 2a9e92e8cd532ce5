"""Wiring: the one place that builds the stack from settings. Nothing here runs at import.

The stack is: the embedded Kafka cluster (unless ``PAYSTREAM_BOOTSTRAP`` names an external
one), the declared topics, and N ledger workers, each a background process recorded by the
supervisor under ``var/run`` with its log under ``var/log``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from base.config import KAFKA_VERSION, Limits, Settings, api_token
from ops.kafka import KafkaCluster, ensure_jars, kafka_version
from ops.procs import Supervisor, note_restart
from ops.topics import ensure_topics

log = logging.getLogger(__name__)

WORKER_ROLE = "ledger-worker"
WAREHOUSE_ROLE = "warehouse"
READSIDE_ROLE = "readside"
DETECTOR_ROLE = "detector"


def readside_port() -> int:
    return int(os.environ.get("PAYSTREAM_READSIDE_PORT", "6066"))


DEFAULT_WORKERS = 2


@dataclass(frozen=True, slots=True)
class StackConfig:
    """What ``up`` last brought up; a later ``up`` without flags brings up the same."""

    workers: int = DEFAULT_WORKERS
    brokers: int = 1

    @staticmethod
    def load(home: Path) -> StackConfig:
        path = home / "stack.json"
        if path.exists():
            data = json.loads(path.read_text())
            return StackConfig(int(data["workers"]), int(data["brokers"]))
        return StackConfig()

    def save(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        (home / "stack.json").write_text(
            json.dumps({"workers": self.workers, "brokers": self.brokers})
        )


def cluster(settings: Settings, brokers: int | None = None) -> KafkaCluster | None:
    if settings.bootstrap:
        return None
    n = brokers or StackConfig.load(settings.home).brokers
    return KafkaCluster(settings.home, brokers=n, port_base=settings.broker_port_base)


def bootstrap_servers(settings: Settings) -> str:
    c = cluster(settings)
    return settings.bootstrap if c is None else c.bootstrap  # type: ignore[return-value]


def resolved(settings: Settings) -> Settings:
    """Settings with ``bootstrap`` filled in (for processes and clients)."""
    stack = StackConfig.load(settings.home)
    return settings.with_(bootstrap=bootstrap_servers(settings), brokers=stack.brokers)


def child_env(settings: Settings) -> dict[str, str]:
    """The environment a background process needs to see the same settings."""
    return {
        "PAYSTREAM_HOME": str(settings.home),
        "PAYSTREAM_BOOTSTRAP": bootstrap_servers(settings),
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PAYSTREAM_BROKERS": str(StackConfig.load(settings.home).brokers),
        **(
            {"PAYSTREAM_CLICKHOUSE_DSN": settings.clickhouse_dsn} if settings.clickhouse_dsn else {}
        ),
        "PAYSTREAM_PROCESSING_GUARANTEE": settings.processing_guarantee,
        "PAYSTREAM_READSIDE_PORT": str(readside_port()),
        "PYTHONUNBUFFERED": "1",
    }


def worker_name(i: int) -> str:
    return f"ledger-{i}"


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    role: str
    verb: list[str]  # `paystream <verb...>` runs it
    ready_url: str | None = None  # polled until it answers, if set


def process_specs(settings: Settings, stack: StackConfig) -> list[ProcessSpec]:
    """Every process of the stack but the brokers, in start order."""
    from connectors.warehouse import embedded, http_port

    specs = [
        ProcessSpec(worker_name(i), WORKER_ROLE, ["worker", "--instance", str(i)])
        for i in range(1, stack.workers + 1)
    ]
    ping = f"http://127.0.0.1:{http_port(settings)}/ping" if embedded(settings) else None
    specs.append(ProcessSpec("warehouse", WAREHOUSE_ROLE, ["warehouse"], ping))
    specs.append(
        ProcessSpec(
            "readside",
            READSIDE_ROLE,
            ["readside", "--web-port", str(readside_port())],
            f"http://127.0.0.1:{readside_port()}/health",
        )
    )
    specs.append(ProcessSpec("detector", DETECTOR_ROLE, ["detector"]))
    return specs


def up(
    settings: Settings, workers: int | None = None, brokers: int | None = None
) -> dict[str, Any]:
    """Start whatever is not running and return when all of it is ready. Idempotent."""
    prev = StackConfig.load(settings.home)
    stack = StackConfig(workers or prev.workers, brokers or prev.brokers)
    stack.save(settings.home)
    c = cluster(settings, stack.brokers)
    if c is not None:
        ensure_jars()
        c.start(timeout_s=settings.limits.broker_start_timeout_s)
    bootstrap = bootstrap_servers(settings)
    ensure_topics(bootstrap, settings.topic_prefix, settings.partitions, stack.brokers)
    api_token(settings)  # PAYSTREAM_API_TOKEN, or $PAYSTREAM_HOME/api-token (0600) made now
    sup = Supervisor(settings.home)
    env = child_env(settings)
    specs = process_specs(settings, stack)
    for spec in specs:
        sup.start(
            spec.name, spec.role, [sys.executable, "-m", "paystream.cli", *spec.verb], env=env
        )
    # Workers scaled down since the last `up` are stopped.
    for p in sup.list():
        if p["role"] == WORKER_ROLE and int(p["name"].split("-")[1]) > stack.workers:
            sup.stop(p["name"])
    _wait_ready(sup, specs, settings.limits.process_start_timeout_s)
    return status(settings)


def _wait_ready(sup: Supervisor, specs: list[ProcessSpec], timeout_s: float) -> None:
    # A process that dies on start (bad config, missing topic) shows up here, not later.
    import urllib.request

    time.sleep(1.0)
    deadline = time.monotonic() + timeout_s
    pending = list(specs)
    while pending:
        for spec in list(pending):
            if not sup.alive(spec.name):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{spec.name} is not alive; see `paystream logs {spec.name}`"
                    )
                continue
            if spec.ready_url:
                try:
                    urllib.request.urlopen(spec.ready_url, timeout=1).read()
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{spec.name} does not answer at {spec.ready_url}"
                        ) from None
                    continue
            pending.remove(spec)
        if pending:
            time.sleep(0.2)


def down(settings: Settings) -> list[str]:
    """Stop what ``up`` started: workers first, brokers last."""
    sup = Supervisor(settings.home)
    stopped = sup.stop_all(roles={p["role"] for p in sup.list() if p["role"] != "broker"})
    c = cluster(settings)
    if c is not None:
        stopped += [f"kafka-{i}" for i in c.node_ids if c.supervisor.alive(f"kafka-{i}")]
        c.stop()
    return stopped


def status(settings: Settings) -> dict[str, Any]:
    c = cluster(settings)
    version = KAFKA_VERSION
    try:
        version = kafka_version()
    except Exception:  # jars not fetched yet: report the declared version
        log.debug("kafka jars not found", exc_info=True)
    return {
        "broker": {
            "version": version,
            "bootstrap": bootstrap_servers(settings),
            "embedded": c is not None,
        },
        "processes": Supervisor(settings.home).list(),
    }


def exit_with_parent() -> None:
    """Tests set PAYSTREAM_EXIT_WITH_PARENT so an aborted test run leaves no process behind."""
    import threading

    if not os.environ.get("PAYSTREAM_EXIT_WITH_PARENT"):
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
    count = int(os.environ.get("PAYSTREAM_RESTARTS", "0"))
    since = float(os.environ.get("PAYSTREAM_RESTARTS_SINCE", str(now)))
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
    os.environ["PAYSTREAM_RESTARTS"] = str(count)
    os.environ["PAYSTREAM_RESTARTS_SINCE"] = str(since)
    # Descriptors of the old image (sockets of a stuck client, locks) go with it.
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


EX_TEMPFAIL = 75  # sysexits.h: "try again later"; a main function may return it


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
    exit_with_parent()
    from streams.processor import LedgerProcessor

    settings = resolved(settings)
    processor = LedgerProcessor(settings, instance, on_stall=restart_in_place)
    return _restart_on_failure(f"ledger worker {instance}", processor.run)


def run_warehouse(settings: Settings) -> int:
    """Entry point of the warehouse process: owns chDB, serves its HTTP front, runs the sink."""
    exit_with_parent()
    return _restart_on_failure("warehouse", lambda: _warehouse(resolved(settings)))


def _warehouse(settings: Settings) -> int:
    from connectors.sink import ClickHouseSink, WarehouseSink
    from connectors.warehouse import chdb_path, embedded, http_port, migrate, owner_client

    client = owner_client(settings)
    migrate(client)
    server = None
    if embedded(settings):
        from connectors.chhttp import ChdbExecutor, serve

        server = serve(ChdbExecutor(str(chdb_path(settings))), port=http_port(settings))
        log.info("ClickHouse HTTP interface on %s", server.url)
    sink = WarehouseSink(settings, ClickHouseSink(client))
    try:
        sink.run()
    finally:
        if server is not None:
            server.shutdown()
    return 0


def run_readside_process(settings: Settings, web_port: int) -> int:
    from streams.readside.app import run_readside

    exit_with_parent()
    # A failed batch cannot unwind (faust would commit its offsets): the read side calls
    # restart_in_place from inside the agent, as a kill -9 and a start would.
    return _restart_on_failure(
        "read side",
        lambda: run_readside(resolved(settings), web_port, on_batch_failed=restart_in_place),
    )


def run_detector_process(settings: Settings, max_hops: int, window_s: float) -> int:
    from streams.detector.app import run_detector

    exit_with_parent()
    return _restart_on_failure(
        "detector", lambda: run_detector(resolved(settings), max_hops, window_s)
    )


def configure_logging(verbose: bool = False) -> None:
    level = (
        logging.DEBUG
        if verbose
        else getattr(logging, os.environ.get("PAYSTREAM_LOG_LEVEL", "INFO"))
    )
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
        stream=sys.stderr,
    )
