"""Ledger workers as real processes against the test broker, for integration and chaos tests."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from base.config import Settings
from ops.procs import Supervisor
from paystream import queries
from paystream.bootstrap import WORKER_ROLE, worker_name
from producers.send import send_file


def env_for(settings: Settings) -> dict[str, str]:
    return {
        "PAYSTREAM_HOME": str(settings.home),
        "PAYSTREAM_BOOTSTRAP": settings.bootstrap or "",
        "PAYSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PAYSTREAM_PARTITIONS": str(settings.partitions),
        "PYTHONUNBUFFERED": "1",
        "PAYSTREAM_EXIT_WITH_PARENT": "1",
        # No read side unless a test starts one: CLI reads fall back to the changelog.
        "PAYSTREAM_READSIDE_PORT": "9",
    }


@dataclass
class LedgerStack:
    settings: Settings
    workers: int = 2
    warehouse_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. PAYSTREAM_KAFKA_* security

    def __post_init__(self) -> None:
        self.sup = Supervisor(self.settings.home)

    def env(self) -> dict[str, str]:
        env = {**env_for(self.settings), **self.extra_env}
        if self.warehouse_port:
            env["PAYSTREAM_WAREHOUSE_PORT"] = str(self.warehouse_port)
        return env

    def start_warehouse(self, port: int) -> None:
        """The warehouse process (chDB owner, HTTP front, sink); waits until it answers."""
        import time
        import urllib.request

        self.warehouse_port = port
        self.sup.start(
            "warehouse",
            "warehouse",
            [sys.executable, "-m", "paystream.cli", "warehouse"],
            env=self.env(),
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline or not self.sup.alive("warehouse"):
                    raise RuntimeError(f"warehouse did not start:\n{self.logs()}") from None
                time.sleep(0.2)

    def warehouse(self):  # type: ignore[no-untyped-def]
        import clickhouse_connect

        return clickhouse_connect.get_client(host="127.0.0.1", port=self.warehouse_port)

    def start(self, i: int | None = None) -> None:
        for n in [i] if i else range(1, self.workers + 1):
            self.sup.start(
                worker_name(n),
                WORKER_ROLE,
                [sys.executable, "-m", "paystream.cli", "worker", "--instance", str(n)],
                env=self.env(),
            )

    def kill(self, i: int) -> None:
        self.sup.kill(worker_name(i), signal.SIGKILL)

    def stop(self) -> None:
        self.sup.stop_all()

    def send(self, commands: Iterable[dict[str, Any]]) -> int:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for c in commands:
                f.write(json.dumps(c) + "\n")
        report = send_file(self.settings, f.name, progress=False)
        Path(f.name).unlink()
        return report.exit_code

    def wait(self, timeout_s: float = 120) -> None:
        if not queries.wait(self.settings, timeout_s):
            raise TimeoutError(f"not caught up after {timeout_s}s; logs:\n{self.logs()}")

    def logs(self) -> str:
        out = []
        for p in self.sup.list():
            path = self.sup.log_path(p["name"])
            if path.exists():
                out.append(f"== {p['name']} ==\n" + "\n".join(path.read_text().splitlines()[-30:]))
        return "\n".join(out)

    def balances(self) -> dict[str, dict[str, str]]:
        return {
            b["account"]: {k: b[k] for k in ("account", "user", "currency", "balance", "status")}
            for b in queries.balances(self.settings)
        }

    def outcomes(self) -> list[dict[str, Any]]:
        from base.topics import TopicNames
        from schemas.codec import Codec

        codec = Codec.default()
        return [
            codec.decode(m.value())[1]
            for m in queries.scan(self.settings, TopicNames(self.settings.topic_prefix).outcomes)
        ]


def cli(settings: Settings, *args: str, port: int = 0) -> subprocess.CompletedProcess[str]:
    extra = {"PAYSTREAM_WAREHOUSE_PORT": str(port)} if port else {}
    return subprocess.run(
        [sys.executable, "-m", "paystream.cli", *args],
        env={**__import__("os").environ, **env_for(settings), **extra},
        capture_output=True,
        text=True,
        timeout=300,
    )
