"""The one stack builder: `paystream up`, the tests, the benchmarks and the soak all use it.

A stack is the embedded Kafka cluster (unless ``settings.bootstrap`` names a running one),
the declared topics, and the processes a :class:`Layout` asks for: N ledger workers, the
warehouse, the read side, the detector. Each process is ``paystream <verb>`` (one entry
point per role, in ``paystream.cli``) started through :class:`ops.procs.Supervisor`, with
the environment from which it loads the same settings (``base.config.settings_env``), so
the ports, the namespace and the security of the whole stack come from one ``Settings``.
Nothing here runs at import.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.config import KAFKA_VERSION, Settings, api_token, kafka_libs_dir, settings_env
from ops.kafka import KafkaCluster, ensure_jars, kafka_version
from ops.procs import Supervisor
from ops.topics import ensure_topics

log = logging.getLogger(__name__)

WORKER_ROLE = "ledger-worker"
WAREHOUSE_ROLE = "warehouse"
READSIDE_ROLE = "readside"
DETECTOR_ROLE = "detector"
PAYMENTS_ROLE = "payments-worker"
EXECUTOR_ROLE = "psp-executor"
API_ROLE = "api"
PSP_SIM_ROLE = "psp-sim"
SCHEDULER_ROLE = "scheduler"
USERS_ROLE = "users-worker"
RISK_ROLE = "risk-worker"
REVIEWS_ROLE = "reviews-worker"
DEFAULT_WORKERS = 2
DEFAULT_PAYMENT_WORKERS = 1
DEFAULT_USER_WORKERS = 1
# The embedded simulator's PSPs, in port order from Settings.psp_sim_port.
SIM_PSPS = ("cardco", "bankco", "walletco", "backupcard")
# After starting, a process that dies on start (bad config, missing topic) shows up here.
_FIRST_LOOK_S = 1.0
_POLL_S = 0.2


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
    """The embedded cluster under ``settings.home``; None when ``settings.bootstrap`` is set."""
    if settings.bootstrap:
        return None
    n = brokers or StackConfig.load(settings.home).brokers
    return KafkaCluster(
        settings.home, brokers=n, port_base=settings.broker_port_base, libs=kafka_libs_dir(settings)
    )


def bootstrap_servers(settings: Settings) -> str:
    c = cluster(settings)
    if c is None:
        return settings.bootstrap or ""
    return c.bootstrap


def resolved(settings: Settings) -> Settings:
    """Settings with ``bootstrap`` filled in (for processes and clients)."""
    stack = StackConfig.load(settings.home)
    return settings.with_(bootstrap=bootstrap_servers(settings), brokers=stack.brokers)


# --- the processes ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    role: str
    verb: tuple[str, ...]  # `paystream <verb...>` runs it
    ready_url: str | None = None  # polled until it answers, if set

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "paystream.cli", *self.verb]


def worker_name(i: int) -> str:
    return f"ledger-{i}"


def worker_spec(i: int) -> ProcessSpec:
    return ProcessSpec(worker_name(i), WORKER_ROLE, ("worker", "--instance", str(i)))


def warehouse_spec(settings: Settings) -> ProcessSpec:
    # A real ClickHouse (a DSN) has no HTTP front of ours to wait for.
    embedded = not settings.clickhouse_dsn
    ping = f"http://127.0.0.1:{settings.warehouse_port}/ping" if embedded else None
    return ProcessSpec("warehouse", WAREHOUSE_ROLE, ("warehouse",), ping)


def readside_spec(
    settings: Settings, name: str = "readside", port: int | None = None
) -> ProcessSpec:
    """A read-side worker; several may share the partitions, each on its own port."""
    port = settings.readside_port if port is None else port
    return ProcessSpec(
        name,
        READSIDE_ROLE,
        ("readside", "--web-port", str(port)),
        f"http://127.0.0.1:{port}/health",
    )


def detector_spec(settings: Settings) -> ProcessSpec:
    return ProcessSpec(
        "detector",
        DETECTOR_ROLE,
        (
            "detector",
            "--max-hops",
            str(settings.detector_max_hops),
            "--window-s",
            repr(settings.detector_window_s),
        ),
    )


def payments_worker_spec(i: int) -> ProcessSpec:
    return ProcessSpec(f"payments-{i}", PAYMENTS_ROLE, ("payments-worker", "--instance", str(i)))


def users_worker_spec(i: int) -> ProcessSpec:
    return ProcessSpec(f"users-{i}", USERS_ROLE, ("users-worker", "--instance", str(i)))


def risk_worker_spec(i: int) -> ProcessSpec:
    return ProcessSpec(f"risk-{i}", RISK_ROLE, ("risk-worker", "--instance", str(i)))


def reviews_worker_spec(i: int) -> ProcessSpec:
    return ProcessSpec(f"reviews-{i}", REVIEWS_ROLE, ("reviews-worker", "--instance", str(i)))


def executor_spec(i: int = 1) -> ProcessSpec:
    return ProcessSpec(f"executor-{i}", EXECUTOR_ROLE, ("executor", "--instance", str(i)))


def scheduler_name(i: int) -> str:
    return f"scheduler-{i}"


def scheduler_spec(i: int = 1) -> ProcessSpec:
    return ProcessSpec(scheduler_name(i), SCHEDULER_ROLE, ("scheduler", "--instance", str(i)))


def api_spec(settings: Settings) -> ProcessSpec:
    return ProcessSpec("api", API_ROLE, ("api",), f"http://127.0.0.1:{settings.api_port}/health")


def psp_sim_spec(settings: Settings) -> ProcessSpec:
    return ProcessSpec(
        "psp-sim",
        PSP_SIM_ROLE,
        ("psp-sim",),
        f"http://127.0.0.1:{settings.psp_sim_port}/v1/health",
    )


def psp_sim_ports(settings: Settings) -> dict[str, int]:
    return {name: settings.psp_sim_port + i for i, name in enumerate(SIM_PSPS)}


def psp_sim_dir(settings: Settings) -> Path:
    return settings.home / "pspsim"


def psp_sim_argv(settings: Settings) -> list[str]:
    """The embedded simulator's arguments: its PSPs' ports, its state, bankco's webhooks to
    the payment API."""
    argv = ["serve", "--state-dir", str(psp_sim_dir(settings))]
    for name, port in psp_sim_ports(settings).items():
        argv += ["--psp", f"{name}={port}"]
    argv += [
        "--webhook-url",
        f"bankco=http://127.0.0.1:{settings.api_port}/psp/webhooks/bankco",
        "--webhook-secret-dir",
        str(psp_sim_dir(settings) / "webhook-secrets"),
    ]
    return argv


def write_psps_toml(settings: Settings) -> Path:
    """$PAYSTREAM_HOME/psps.toml for the embedded simulator, unless one exists (an operator's
    own configuration is never overwritten)."""
    from connectors.psp.config import embedded_psps_toml, psps_path

    path = psps_path(settings.home)
    if not path.exists():
        text = embedded_psps_toml(
            psp_sim_ports(settings), psp_sim_dir(settings) / "webhook-secrets"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


@dataclass(frozen=True, slots=True)
class Layout:
    """Which processes a stack runs (the brokers are the embedded cluster's, if any)."""

    workers: int = DEFAULT_WORKERS
    warehouse: bool = True
    readside: bool = True
    detector: bool = True
    brokers: int = 1  # nodes of the embedded cluster
    # Payments (docs/payments.md): workers, the PSP executor, the API, the PSP simulator.
    # Off unless asked for (`paystream up` asks: Layout.full), so a ledger-only harness
    # starts no web server on a fixed port.
    payment_workers: int = 0
    executor: bool = False
    api: bool = False
    psp_sim: bool = False
    # Scheduled payments (docs/schedules.md): scheduler processes (one consumer group).
    schedulers: int = 0
    # The wallet's users workers (docs/wallet.md): sign-ups, log-outs, wallet transfers.
    user_workers: int = 0
    # PSP executor processes when ``executor`` (one group: they share the requests, the delay
    # topics and, through paystream.psp-breakers.v1, every PSP's circuit breaker).
    executors: int = 1
    # Risk engine and review queue workers (docs/risk.md); None: one each when payments run.
    risk_workers: int | None = None
    review_workers: int | None = None

    @staticmethod
    def full(
        workers: int = DEFAULT_WORKERS,
        brokers: int = 1,
        payment_workers: int = DEFAULT_PAYMENT_WORKERS,
    ) -> Layout:
        """Everything: what `paystream up` runs."""
        return Layout(
            workers=workers,
            brokers=brokers,
            payment_workers=payment_workers,
            executor=True,
            api=True,
            psp_sim=True,
            schedulers=1,
            user_workers=DEFAULT_USER_WORKERS,
        )

    @property
    def payments(self) -> bool:
        return self.payment_workers > 0 or self.executor or self.api

    @property
    def risk_count(self) -> int:
        """Every payment waits for the risk engine: one worker runs when payments do."""
        if self.risk_workers is not None:
            return self.risk_workers
        return 1 if self.payment_workers > 0 else 0

    @property
    def reviews_count(self) -> int:
        if self.review_workers is not None:
            return self.review_workers
        return 1 if self.payment_workers > 0 else 0


def process_specs(settings: Settings, layout: Layout) -> list[ProcessSpec]:
    """Every process of the stack but the brokers, in start order."""
    specs = [worker_spec(i) for i in range(1, layout.workers + 1)]
    specs += [payments_worker_spec(i) for i in range(1, layout.payment_workers + 1)]
    specs += [users_worker_spec(i) for i in range(1, layout.user_workers + 1)]
    specs += [risk_worker_spec(i) for i in range(1, layout.risk_count + 1)]
    specs += [reviews_worker_spec(i) for i in range(1, layout.reviews_count + 1)]
    if layout.warehouse:
        specs.append(warehouse_spec(settings))
    if layout.readside:
        specs.append(readside_spec(settings))
    if layout.detector:
        specs.append(detector_spec(settings))
    if layout.psp_sim:
        specs.append(psp_sim_spec(settings))
    if layout.executor:
        specs += [executor_spec(i) for i in range(1, layout.executors + 1)]
    if layout.api:
        specs.append(api_spec(settings))
    specs += [scheduler_spec(i) for i in range(1, layout.schedulers + 1)]
    return specs


class Stack:
    """The processes of one stack under ``settings.home``, started as ``paystream <verb>``."""

    def __init__(self, settings: Settings, layout: Layout | None = None) -> None:
        self.settings = settings
        self.layout = layout or Layout()
        self.sup = Supervisor(settings.home)
        self.specs = {s.name: s for s in process_specs(settings, self.layout)}

    def cluster(self) -> KafkaCluster | None:
        return cluster(self.settings, self.layout.brokers)

    @property
    def resolved(self) -> Settings:
        """The settings with the bootstrap of the broker this stack runs against."""
        c = self.cluster()
        bootstrap = self.settings.bootstrap if c is None else c.bootstrap
        return self.settings.with_(bootstrap=bootstrap, brokers=self.layout.brokers)

    def env(self) -> dict[str, str]:
        """The environment of every process of the stack: its settings, and unbuffered."""
        return {**settings_env(self.resolved), "PYTHONUNBUFFERED": "1"}

    def up(self, timeout_s: float | None = None) -> None:
        """Start the broker (if embedded), the topics and every process; return when ready."""
        limits = self.settings.limits
        c = self.cluster()
        if c is not None:
            ensure_jars(c.libs)
            c.start(timeout_s=limits.broker_start_timeout_s)
        s = self.resolved
        ensure_topics(
            s.bootstrap or "",
            s.topic_prefix,
            s.partitions,
            self.layout.brokers,
            security=s.kafka_security,
        )
        if self.layout.readside or self.layout.api or self.layout.schedulers:
            api_token(s)  # PAYSTREAM_API_TOKEN, or $PAYSTREAM_HOME/api-token (0600) made now
        if self.layout.api:
            from paystream.api.wallet.keys import ensure_key

            ensure_key(s.home)  # the wallet's session signing key (0600), unless one exists
        if self.layout.payments:
            write_psps_toml(s)  # the simulator's PSPs, unless an operator wrote their own
        self.start(*self.specs.values(), timeout_s=timeout_s)

    def start(
        self, *specs: ProcessSpec | str, wait: bool = True, timeout_s: float | None = None
    ) -> None:
        """Start processes (specs, or names of this layout's) that are not running; unless
        ``wait`` is false, return once each is alive and answers at its ``ready_url``."""
        todo = [self.specs[s] if isinstance(s, str) else s for s in specs]
        env = self.env()
        for spec in todo:
            self.sup.start(spec.name, spec.role, spec.argv(), env=env)
        if wait:
            limit_s = self.settings.limits.process_start_timeout_s
            self.wait_ready(todo, limit_s if timeout_s is None else timeout_s)

    def wait_ready(self, specs: list[ProcessSpec], timeout_s: float) -> None:
        time.sleep(_FIRST_LOOK_S)
        deadline = time.monotonic() + timeout_s
        pending = list(specs)
        while pending:
            for spec in list(pending):
                if not self.sup.alive(spec.name):
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{spec.name} is not alive; see `paystream logs {spec.name}`:\n"
                            + self.log_tail(spec.name)
                        )
                    continue
                if spec.ready_url:
                    try:
                        urllib.request.urlopen(spec.ready_url, timeout=1).read()
                    except OSError:
                        if time.monotonic() > deadline:
                            raise RuntimeError(
                                f"{spec.name} does not answer at {spec.ready_url}:\n"
                                + self.log_tail(spec.name)
                            ) from None
                        continue
                pending.remove(spec)
            if pending:
                time.sleep(_POLL_S)

    def kill(self, name: str) -> bool:
        """kill -9 one process; the record stays (a later ``start`` starts it again)."""
        return self.sup.kill(name, signal.SIGKILL)

    def alive(self, name: str) -> bool:
        return self.sup.alive(name)

    def stop(self) -> list[str]:
        """Stop every process of this home (the embedded brokers too, last)."""
        stopped = self.sup.stop_all(roles={p["role"] for p in self.sup.list()} - {"broker"})
        c = self.cluster()
        if c is not None:
            stopped += [f"kafka-{i}" for i in c.node_ids if c.supervisor.alive(f"kafka-{i}")]
            c.stop()
        return stopped

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.sup.log_path(name)
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def logs(self, lines: int = 30) -> str:
        """The tail of every process's log, for a failing test's message."""
        return "\n".join(
            f"== {p['name']} ==\n{self.log_tail(p['name'], lines)}" for p in self.sup.list()
        )


# --- `paystream up`, `down`, `status` ---------------------------------------------------------


def up(
    settings: Settings, workers: int | None = None, brokers: int | None = None
) -> dict[str, Any]:
    """Start whatever is not running and return when all of it is ready. Idempotent."""
    prev = StackConfig.load(settings.home)
    config = StackConfig(workers or prev.workers, brokers or prev.brokers)
    config.save(settings.home)
    stack = Stack(settings, Layout.full(workers=config.workers, brokers=config.brokers))
    stack.up()
    # Workers scaled down since the last `up` are stopped.
    for p in stack.sup.list():
        if p["role"] == WORKER_ROLE and int(p["name"].split("-")[1]) > config.workers:
            stack.sup.stop(p["name"])
    return status(settings)


def down(settings: Settings) -> list[str]:
    """Stop what ``up`` started: workers first, brokers last."""
    return Stack(settings, Layout(brokers=StackConfig.load(settings.home).brokers)).stop()


def status(settings: Settings) -> dict[str, Any]:
    c = cluster(settings)
    version = KAFKA_VERSION
    try:
        version = kafka_version(kafka_libs_dir(settings))
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
