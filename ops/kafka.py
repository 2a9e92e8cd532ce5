"""The embedded Apache Kafka: KRaft nodes in combined mode, run with the machine's ``java``.

Every node is both broker and controller (``process.roles=broker,controller``), binds
127.0.0.1 only, and keeps its data under ``home/kafka/node-{i}/data`` so it survives
stop and start. The jars come from Maven Central through ``ops/pom.xml``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from base.config import DEFAULT_KAFKA_LIBS
from ops.errors import KafkaSetupError, KafkaStartError
from ops.procs import BROKER_ROLE, Supervisor

log = logging.getLogger(__name__)

_OPS_DIR = Path(__file__).resolve().parent
_POM = _OPS_DIR / "pom.xml"
_KAFKA_JAR_RE = re.compile(r"^kafka_2\.13-(\d+\.\d+\.\d+)\.jar$")
_MVN_TIMEOUT_S = 1800.0
_TAIL_LINES = 40
# A node killed a moment ago may still hold its sockets while its threads finish exiting.
_PORT_FREE_WAIT_S = 10.0
# Flags for short-lived tool JVMs (StorageTool): start fast, small heap.
_TOOL_JVM_FLAGS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
SCRAM_MECHANISM = "SCRAM-SHA-512"
# Characters that JAAS quoting and StorageTool's --add-scram syntax cannot carry.
_SCRAM_BAD = re.compile(r'["\\,=\[\]\s]')


def _kafka_jar(libs: Path) -> Path | None:
    if not libs.is_dir():
        return None
    return next((p for p in sorted(libs.iterdir()) if _KAFKA_JAR_RE.match(p.name)), None)


def ensure_jars(libs: Path | None = None) -> Path:
    """Make sure the Kafka jars are in ``libs`` (default: var/kafka/libs in the checkout; a
    process with settings passes ``base.config.kafka_libs_dir(settings)``); returns it.

    Maven copies into a temporary sibling directory that is renamed into place, so a crash
    mid-copy never leaves a directory that looks complete.
    """
    libs = Path(libs).resolve() if libs is not None else DEFAULT_KAFKA_LIBS
    if _kafka_jar(libs) is not None:
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(f"Kafka jars are missing from {libs} and `mvn` is not on PATH")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with _flock(libs.parent / f".{libs.name}.lock"):
        if _kafka_jar(libs) is not None:  # another process finished the copy while we waited
            return libs
        tmp = Path(tempfile.mkdtemp(prefix=f".{libs.name}.", dir=libs.parent))
        try:
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(_POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}",
                "-DincludeScope=runtime",
            ]
            log.info("fetching Kafka jars into %s", libs)
            try:
                res = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    timeout=_MVN_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
                raise KafkaSetupError(
                    f"mvn timed out after {_MVN_TIMEOUT_S:.0f}s: {' '.join(cmd)}\n{_tail(out)}"
                ) from None
            if res.returncode != 0:
                raise KafkaSetupError(
                    f"mvn failed (exit {res.returncode}): {' '.join(cmd)}\n{_tail(res.stdout)}"
                )
            if _kafka_jar(tmp) is None:
                raise KafkaSetupError(
                    f"mvn succeeded but copied no kafka_2.13-*.jar into {tmp}\n{_tail(res.stdout)}"
                )
            if libs.exists():
                # A directory without the Kafka jar is a leftover (e.g. an interrupted copy
                # made by hand): move it aside so the rename below can take its place.
                old = libs.with_name(f".{libs.name}.old-{os.getpid()}")
                os.rename(libs, old)
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, libs)  # same directory, so atomic
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # nothing left after a successful rename
    return libs


def kafka_version(libs: Path | None = None) -> str:
    """The Kafka version of the jars in ``libs``, read from the ``kafka_2.13-*.jar`` name."""
    libs = Path(libs) if libs is not None else DEFAULT_KAFKA_LIBS
    jar = _kafka_jar(libs)
    if jar is None:
        raise KafkaSetupError(f"no kafka_2.13-*.jar in {libs}; run ensure_jars()")
    m = _KAFKA_JAR_RE.match(jar.name)
    assert m is not None  # _kafka_jar only returns names that match
    return m.group(1)


def java_bin() -> str:
    """The java to run: ``$JAVA_HOME/bin/java`` if set (as Kafka's scripts do), else PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("java")
    if found is None:
        raise KafkaSetupError("`java` not found (set JAVA_HOME or put java on PATH)")
    return found


class KafkaCluster:
    """``brokers`` KRaft combined-mode nodes under ``home``; node ``i`` is 1-based.

    Node ``i`` listens on ``port_base + 2*(i-1)`` (clients) and the next port (controller).

    ``sasl_users`` (username -> password) turns the client listener into SASL_PLAINTEXT with
    SCRAM-SHA-512: the credentials are written into the metadata when the storage is formatted
    (``--add-scram``), and the brokers talk to each other as the first user. The controller
    listener stays PLAINTEXT on loopback. Off by default; a cluster must be formatted with it.
    """

    def __init__(
        self,
        home: Path,
        brokers: int = 1,
        port_base: int = 9092,
        libs: Path | None = None,
        heap_mb: int = 768,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        if not 1 <= port_base <= 65535 - 2 * brokers:
            raise ValueError(f"port_base {port_base} out of range for {brokers} nodes")
        self.home = Path(home).resolve()
        self.brokers = brokers
        self.port_base = port_base
        self.libs = Path(libs).resolve() if libs is not None else DEFAULT_KAFKA_LIBS
        self.heap_mb = heap_mb
        self.sasl_users = dict(sasl_users or {})
        for name, password in self.sasl_users.items():
            if not name or not password or _SCRAM_BAD.search(name + password):
                raise ValueError(f"SCRAM user {name!r}: empty, or a character from {_SCRAM_BAD}")
        self.supervisor = Supervisor(self.home)

    def __repr__(self) -> str:
        return (
            f"KafkaCluster(home={str(self.home)!r}, brokers={self.brokers}, "
            f"bootstrap={self.bootstrap!r})"
        )

    # -- layout ------------------------------------------------------------------------------

    @property
    def node_ids(self) -> list[int]:
        return list(range(1, self.brokers + 1))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(i)}" for i in self.node_ids)

    @property
    def listener(self) -> str:
        return "SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT"

    def client_config(self, user: str | None = None) -> dict[str, Any]:
        """librdkafka properties to reach the cluster (as ``user``, default the first one)."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        if self.sasl_users:
            name = user or next(iter(self.sasl_users))
            conf |= {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": SCRAM_MECHANISM,
                "sasl.username": name,
                "sasl.password": self.sasl_users[name],
            }
        return conf

    def broker_port(self, i: int) -> int:
        self._check_node(i)
        return self.port_base + 2 * (i - 1)

    def controller_port(self, i: int) -> int:
        return self.broker_port(i) + 1

    def node_name(self, i: int) -> str:
        self._check_node(i)
        return f"kafka-{i}"

    def node_dir(self, i: int) -> Path:
        self._check_node(i)
        return self.home / "kafka" / f"node-{i}"

    def data_dir(self, i: int) -> Path:
        return self.node_dir(i) / "data"

    def pid_file(self, i: int) -> Path:
        return self.home / "run" / f"{self.node_name(i)}.pid"

    def log_path(self, i: int) -> Path:
        return self.supervisor.log_path(self.node_name(i))

    def _check_node(self, i: int) -> None:
        if not 1 <= i <= self.brokers:
            raise ValueError(f"node {i} not in 1..{self.brokers}")

    # -- status ------------------------------------------------------------------------------

    def version(self) -> str:
        return kafka_version(self.libs)

    def nodes_status(self) -> list[dict[str, Any]]:
        out = []
        for i in self.node_ids:
            name = self.node_name(i)
            rec = self.supervisor.record(name)
            out.append(
                {
                    "name": name,
                    "role": BROKER_ROLE,
                    "pid": rec.pid if rec is not None else None,
                    "alive": self.supervisor.alive(name),
                }
            )
        return out

    def running(self) -> bool:
        """True if every node's process is alive (readiness is :meth:`wait_ready`)."""
        return all(self.supervisor.alive(self.node_name(i)) for i in self.node_ids)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> None:
        """Start every node that is not running and wait until all brokers are registered.

        Idempotent: live nodes are left alone; a node whose record points to a dead (or
        recycled) pid is started again.
        """
        t0 = time.monotonic()
        self._launch(self.node_ids)
        self.wait_ready(max(1.0, timeout_s - (time.monotonic() - t0)))
        log.info("Kafka ready at %s after %.1fs", self.bootstrap, time.monotonic() - t0)

    def start_node(self, i: int, timeout_s: float = 90.0, wait: bool = True) -> int:
        """Start node ``i`` if needed; with ``wait``, until it is registered. Returns its pid."""
        self._launch([i])
        if wait:
            self.wait_ready(timeout_s, node_ids=[i])
        pid = self.supervisor.pid(self.node_name(i))
        if pid is None:
            raise KafkaStartError(f"{self.node_name(i)} exited\n{_tail_file(self.log_path(i))}")
        return pid

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop all nodes together: SIGTERM, then SIGKILL after ``timeout_s``."""
        self._stop(self.node_ids, timeout_s)

    def stop_node(self, i: int, timeout_s: float = 30.0) -> bool:
        """Stop node ``i`` cleanly. Returns True if it was running."""
        return bool(self._stop([i], timeout_s))

    def kill_node(self, i: int, sig: int = signal.SIGKILL) -> bool:
        """Signal node ``i`` (default SIGKILL, a crash). Returns True if it was alive."""
        return self.supervisor.kill(self.node_name(i), sig)

    def wait_ready(self, timeout_s: float = 90.0, node_ids: Iterable[int] | None = None) -> None:
        """Wait until a metadata request lists every broker in ``node_ids`` (default: all)."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        want = set(self.node_ids if node_ids is None else node_ids)
        deadline = time.monotonic() + timeout_s
        admin: AdminClient | None = None
        why = "not started"
        while True:
            for i in sorted(want):
                if not self.supervisor.alive(self.node_name(i)):
                    raise KafkaStartError(
                        f"{self.node_name(i)} exited during start; end of {self.log_path(i)}:\n"
                        f"{_tail_file(self.log_path(i))}"
                    )
            # Wait for the sockets first: a client aimed at closed ports logs an error per try.
            if admin is None and all(_port_accepts(self.broker_port(i)) for i in want):
                # librdkafka's own log goes through logging, not straight to stderr.
                conf: dict[str, Any] = {
                    **self.client_config(),
                    "logger": logging.getLogger(f"{__name__}.rdkafka"),
                }
                admin = AdminClient(conf)
            if admin is not None:
                try:
                    md = admin.list_topics(timeout=max(0.5, min(2.0, deadline - time.monotonic())))
                    have = set(md.brokers)
                    if want <= have:
                        return
                    why = f"registered brokers {sorted(have)}, want {sorted(want)}"
                except KafkaException as exc:
                    why = str(exc)
            else:
                why = "broker ports not accepting connections yet"
            if time.monotonic() >= deadline:
                logs = ", ".join(str(self.log_path(i)) for i in sorted(want))
                raise KafkaStartError(f"Kafka not ready after {timeout_s:.0f}s ({why}); see {logs}")
            time.sleep(0.2)

    # -- internals ---------------------------------------------------------------------------

    def _launch(self, ids: list[int]) -> None:
        libs = ensure_jars(self.libs)
        java = java_bin()
        with self._lock():
            todo = [i for i in ids if not self.supervisor.alive(self.node_name(i))]
            if not todo:
                return
            for i in todo:
                for port in (self.broker_port(i), self.controller_port(i)):
                    if not _wait_port_free(port, _PORT_FREE_WAIT_S):
                        raise KafkaStartError(
                            f"127.0.0.1:{port} is in use, so {self.node_name(i)} cannot start "
                            "(another Kafka or another program holds it)"
                        )
            cluster_id = self._cluster_id()
            for i in todo:
                self._write_configs(i)
            self._format(todo, cluster_id, java, libs)
            for i in todo:
                argv = [
                    java,
                    f"-Xms{min(256, self.heap_mb)}m",
                    f"-Xmx{self.heap_mb}m",
                    "-XX:+UseG1GC",
                    "-XX:MaxGCPauseMillis=20",
                    # A broker out of heap should die and be restarted, not limp along.
                    "-XX:+ExitOnOutOfMemoryError",
                    "-Djava.awt.headless=true",
                    f"-Dlog4j.configuration={(self.node_dir(i) / 'log4j.properties').as_uri()}",
                    "-cp",
                    f"{libs}/*",
                    "kafka.Kafka",
                    str(self.node_dir(i) / "server.properties"),
                ]
                pid = self.supervisor.start(
                    self.node_name(i), BROKER_ROLE, argv, cwd=self.node_dir(i)
                )
                _write_atomic(self.pid_file(i), f"{pid}\n")

    def _stop(self, ids: list[int], timeout_s: float) -> list[str]:
        with self._lock():
            # All at once: a controller quorum stopped one by one can lose its majority while
            # the last brokers still wait for a controlled shutdown.
            stopped = self.supervisor.stop_many(
                [self.node_name(i) for i in reversed(ids)], timeout_s
            )
            for i in ids:
                if not self.supervisor.alive(self.node_name(i)):
                    with contextlib.suppress(FileNotFoundError):
                        self.pid_file(i).unlink()
        return stopped

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        # Serialises start/stop between CLIs sharing this home (format must run once).
        with _flock(self.home / "kafka" / ".lock"):
            yield

    def _cluster_id(self) -> str:
        path = self.home / "kafka" / "cluster.id"
        if path.exists():
            cid = path.read_text().strip()
            if cid:
                return cid
        cid = _new_cluster_id()
        _write_atomic(path, cid + "\n")
        log.info("new Kafka cluster id %s", cid)
        return cid

    def _write_configs(self, i: int) -> None:
        node = self.node_dir(i)
        self.data_dir(i).mkdir(parents=True, exist_ok=True)
        self.log_path(i).parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(node / "server.properties", _properties(self._server_properties(i)))
        _write_atomic(node / "log4j.properties", _properties(_log4j_properties(self.log_path(i))))

    def _server_properties(self, i: int) -> dict[str, str]:
        n = self.brokers
        replication = min(3, n)
        voters = ",".join(f"{j}@127.0.0.1:{self.controller_port(j)}" for j in self.node_ids)
        name = self.listener
        return {
            "process.roles": "broker,controller",
            "node.id": str(i),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "listeners": (
                f"{name}://127.0.0.1:{self.broker_port(i)},"
                f"CONTROLLER://127.0.0.1:{self.controller_port(i)}"
            ),
            "advertised.listeners": f"{name}://127.0.0.1:{self.broker_port(i)}",
            "listener.security.protocol.map": f"{name}:{name},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": name,
            **self._sasl_properties(),
            "log.dirs": str(self.data_dir(i)),
            "num.network.threads": "2",
            "num.io.threads": "4",
            # Topics are declared in ops/topics.py; a typo must fail, not create a topic.
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.replication.factor": str(replication),
            "offsets.topic.num.partitions": "12",
            "transaction.state.log.replication.factor": str(replication),
            "transaction.state.log.min.isr": str(min(2, n)),
            "transaction.state.log.num.partitions": "12",
            "transaction.max.timeout.ms": "900000",
            "default.replication.factor": str(replication),
            "min.insync.replicas": str(max(1, replication - 1)),
            "unclean.leader.election.enable": "false",
            # log.flush.* stay at their defaults: durability comes from replication (acks=all,
            # min.insync.replicas), not from fsync on every write.
        }

    def _sasl_properties(self) -> dict[str, str]:
        if not self.sasl_users:
            return {}
        user, password = next(iter(self.sasl_users.items()))
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{password}";'
        )
        return {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
        }

    def _scram_args(self) -> list[str]:
        args: list[str] = []
        for user, password in self.sasl_users.items():
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        return args

    def _format(self, ids: list[int], cluster_id: str, java: str, libs: Path) -> None:
        """Format the storage of nodes that have none yet (in parallel: each is a JVM start)."""
        procs: list[tuple[int, subprocess.Popen[str]]] = []
        for i in ids:
            if (self.data_dir(i) / "meta.properties").exists():
                continue
            argv = [
                java,
                *_TOOL_JVM_FLAGS,
                f"-Dlog4j.configuration={(self.node_dir(i) / 'log4j.properties').as_uri()}",
                "-cp",
                f"{libs}/*",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.node_dir(i) / "server.properties"),
                "--ignore-formatted",
                *self._scram_args(),
            ]
            log.info("formatting storage of %s", self.node_name(i))
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
                cwd=self.node_dir(i),
            )
            procs.append((i, proc))
        failures = []
        for i, proc in procs:
            out, _ = proc.communicate()
            if proc.returncode != 0 or not (self.data_dir(i) / "meta.properties").exists():
                failures.append(f"{self.node_name(i)} (exit {proc.returncode}):\n{_tail(out)}")
        if failures:
            raise KafkaSetupError(
                "kafka.tools.StorageTool format failed for " + "\n".join(failures)
            )


def _log4j_properties(log_file: Path) -> dict[str, str]:
    # One rolling file per node, INFO; the chattiest loggers at WARN. Nothing on the console.
    return {
        "log4j.rootLogger": "INFO, file",
        "log4j.appender.file": "org.apache.log4j.RollingFileAppender",
        "log4j.appender.file.File": str(log_file),
        "log4j.appender.file.Append": "true",
        "log4j.appender.file.MaxFileSize": "50MB",
        "log4j.appender.file.MaxBackupIndex": "3",
        "log4j.appender.file.layout": "org.apache.log4j.PatternLayout",
        "log4j.appender.file.layout.ConversionPattern": "[%d] %p %m (%c)%n",
        "log4j.logger.kafka.request.logger": "WARN",
        "log4j.logger.kafka.network.RequestChannel$": "WARN",
        "log4j.logger.state.change.logger": "WARN",
        "log4j.logger.kafka.authorizer.logger": "WARN",
        "log4j.logger.org.apache.kafka.clients.NetworkClient": "WARN",
    }


def _properties(props: dict[str, str]) -> str:
    return "".join(f"{k}={_escape_property(v)}\n" for k, v in props.items())


def _escape_property(value: str) -> str:
    # java.util.Properties reads files as ISO-8859-1 and treats backslash as an escape.
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif not 0x20 <= ord(ch) <= 0x7E:
            out.extend(f"\\u{u:04x}" for u in _utf16_units(ch))
        else:
            out.append(ch)
    return "".join(out)


def _utf16_units(ch: str) -> list[int]:
    data = ch.encode("utf-16-be")
    return [int.from_bytes(data[k : k + 2], "big") for k in range(0, len(data), 2)]


def _new_cluster_id() -> str:
    # Kafka's Uuid.randomUuid(): 16 random bytes, base64url without padding (22 chars),
    # never starting with '-' (it would read as a command-line flag).
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _port_free(port: int) -> bool:
    # SO_REUSEADDR like the JVM's server sockets, so TIME_WAIT from a stopped broker is fine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _wait_port_free(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not _port_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(text: str, lines: int = _TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _tail_file(path: Path, lines: int = _TAIL_LINES, max_bytes: int = 64 * 1024) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - max_bytes))
            return _tail(fh.read().decode(errors="replace"), lines)
    except FileNotFoundError:
        return "(no log)"
