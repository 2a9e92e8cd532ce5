"""Stacks of real processes against the test broker, for integration and chaos tests.

A thin layer over the one stack builder (``paystream.stack``): the processes are the same
``paystream <verb>`` processes ``paystream up`` runs, with their settings from the test's
``Settings`` (and ``exit_with_parent``, so an aborted test run leaves nothing behind).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from base.config import Settings, settings_env
from paystream import queries
from paystream.stack import Layout, Stack, warehouse_spec, worker_name, worker_spec
from producers.send import send_file


def harness_settings(settings: Settings) -> Settings:
    """The settings a test's processes run with: those of the test, ending with the test."""
    return settings.with_(exit_with_parent=True)


def env_for(settings: Settings) -> dict[str, str]:
    """The environment of a process (or a CLI call) that runs with ``settings``."""
    return {**settings_env(harness_settings(settings)), "PYTHONUNBUFFERED": "1"}


def stack_for(settings: Settings, layout: Layout) -> Stack:
    return Stack(harness_settings(settings), layout)


@dataclass
class LedgerStack:
    """Ledger workers (and, on demand, the warehouse) of one test's namespace."""

    settings: Settings
    workers: int = 2
    warehouse_port: int = 0

    def __post_init__(self) -> None:
        self._build()

    def _build(self) -> None:
        layout = Layout(workers=self.workers, warehouse=False, readside=False, detector=False)
        settings = self.settings
        if self.warehouse_port:
            settings = settings.with_(warehouse_port=self.warehouse_port)
        self.stack = stack_for(settings, layout)
        self.sup = self.stack.sup

    def env(self) -> dict[str, str]:
        return self.stack.env()

    def start_warehouse(self, port: int) -> None:
        """The warehouse process (chDB owner, HTTP front, sink); waits until it answers."""
        self.warehouse_port = port
        self._build()
        self.stack.start(warehouse_spec(self.stack.settings))

    def warehouse(self) -> Client:
        import clickhouse_connect

        return clickhouse_connect.get_client(host="127.0.0.1", port=self.warehouse_port)

    def start(self, i: int | None = None) -> None:
        # Not waited for: the crash tests start a killed worker again mid-phase.
        numbers = [i] if i else range(1, self.workers + 1)
        self.stack.start(*(worker_spec(n) for n in numbers), wait=False)

    def kill(self, i: int) -> None:
        self.stack.kill(worker_name(i))

    def stop(self) -> None:
        self.sup.stop_all()

    def send(self, commands: Iterable[dict[str, Any]]) -> int:
        with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
            for c in commands:
                f.write(json.dumps(c) + "\n")
        report = send_file(self.settings, f.name, progress=False)
        Path(f.name).unlink()
        return report.exit_code

    def wait(self, timeout_s: float = 120, *, downstream: bool = True) -> None:
        if not queries.wait(self.settings, timeout_s, downstream=downstream):
            raise TimeoutError(f"not caught up after {timeout_s}s; logs:\n{self.logs()}")

    def logs(self) -> str:
        return self.stack.logs()

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
    """``paystream ARGS`` with ``settings`` (and the warehouse on ``port``, if given)."""
    if port:
        settings = settings.with_(warehouse_port=port)
    return subprocess.run(
        [sys.executable, "-m", "paystream.cli", *args],
        env={**os.environ, **env_for(settings)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def payments_stack(
    settings: Settings,
    warehouse: bool = True,
    workers: int = 1,
    executors: int = 1,
    payment_workers: int = 1,
    schedulers: int = 0,
) -> Stack:
    """Everything the payments need (ledger and payments workers, the PSP simulator, the
    executors, the API, and the warehouse unless told not to), on free ports; and
    ``schedulers`` scheduler processes (scheduled payments)."""
    from ops.ports import free_port_base

    base = free_port_base(7)
    s = settings.with_(
        api_port=base, warehouse_port=base + 1, readside_port=base + 2, psp_sim_port=base + 3
    )
    layout = Layout(
        workers=workers,
        warehouse=warehouse,
        readside=False,
        detector=False,
        payment_workers=payment_workers,
        executor=True,
        api=True,
        psp_sim=True,
        executors=executors,
        schedulers=schedulers,
    )
    return stack_for(s, layout)


def run_payments_scenario(
    stack: Stack,
    prefix: str,
    between: Any = None,
    timeout_s: float = 240.0,
    allow_fallback: bool = False,
) -> Any:
    """The payments scenario (paystream.payments_scenario) against ``stack``."""
    from decimal import Decimal

    from paystream import payments_scenario
    from producers.commands import parse_command
    from producers.producer import CommandProducer

    s = stack.resolved

    def send(commands: list[dict[str, Any]]) -> None:
        with CommandProducer(s, client_id="test") as p:
            for c in commands:
                p.send(parse_command(c))
            p.flush(60)

    def wait() -> None:
        if not queries.wait(s, timeout_s=timeout_s):
            raise TimeoutError(f"not caught up in {timeout_s} s:\n{stack.logs()}")

    def balance(account: str) -> Decimal | None:
        view = queries.account(s, account)
        return None if view is None else Decimal(view["balance"])

    return payments_scenario.run(
        s, prefix, send, wait, balance, timeout_s, between, allow_fallback=allow_fallback
    )
