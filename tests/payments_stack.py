"""A payments worker, a ledger worker and the payment API as real processes (their
``paystream`` verbs) against the test broker, for the API's integration tests."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from base.config import Settings
from ops.procs import Supervisor
from tests.stack import env_for

REPO = Path(__file__).resolve().parent.parent
TOKEN = "integration-test-token"
PATH = "/payments/payment/v1"


def write_psps_toml(home: Path) -> None:
    """The simulator's PSPs (no simulator runs: no PSP is called before the ledger answers)."""
    from connectors.psp.config import embedded_psps_toml, psps_path

    ports = {"cardco": 9, "bankco": 9, "walletco": 9, "backupcard": 9}  # discard: never called
    path = psps_path(home)
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        path.write_text(embedded_psps_toml(ports, home / "secrets"))


@dataclass
class PaymentsStack:
    settings: Settings
    api_port: int
    token: str = TOKEN
    started: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sup = Supervisor(self.settings.home)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30)

    def env(self) -> dict[str, str]:
        return {
            **env_for(self.settings),
            "PAYSTREAM_API_PORT": str(self.api_port),
            "PAYSTREAM_API_TOKEN": self.token,
        }

    def _start(self, name: str, argv: list[str]) -> None:
        self.sup.start(name, name, argv, env=self.env(), cwd=REPO)
        if name not in self.started:
            self.started.append(name)

    def start_payments_worker(self, instance: int = 1) -> None:
        write_psps_toml(self.settings.home)
        self._start(
            f"payments-{instance}",
            [sys.executable, "-m", "paystream.cli", "payments-worker", "--instance", str(instance)],
        )

    def start_risk_worker(self, instance: int = 1) -> None:
        """The risk engine (its built-in rules allow these tests' payments)."""
        self._start(
            f"risk-{instance}",
            [sys.executable, "-m", "paystream.cli", "risk-worker", "--instance", str(instance)],
        )

    def start_scheduler(self, instance: int = 1) -> None:
        """A scheduler (docs/schedules.md): it submits due occurrences to this stack's API."""
        self._start(
            f"scheduler-{instance}",
            [sys.executable, "-m", "paystream.cli", "scheduler", "--instance", str(instance)],
        )

    def start_ledger_worker(self, instance: int = 1) -> None:
        self._start(
            f"ledger-{instance}",
            [sys.executable, "-m", "paystream.cli", "worker", "--instance", str(instance)],
        )

    @property
    def api_name(self) -> str:
        return f"api-{self.api_port}"  # two stacks may share a home

    def start_api(self, timeout_s: float = 90) -> None:
        write_psps_toml(self.settings.home)
        self._start(self.api_name, [sys.executable, "-m", "paystream.cli", "api"])
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not self.sup.alive(self.api_name):
                raise RuntimeError(f"the API did not start:\n{self.logs()}")
            time.sleep(0.2)

    def kill(self, name: str) -> None:
        import signal

        self.sup.kill(name, signal.SIGKILL)

    def kill_api(self) -> None:
        self.kill(self.api_name)

    def stop(self) -> None:
        self.http.close()
        self.sup.stop_many(reversed(self.started))

    def post(
        self, body: dict[str, Any], key: str | None, token: str | None = TOKEN, **kw: Any
    ) -> httpx.Response:
        headers: dict[str, str] = {}
        if key is not None:
            headers["Idempotency-Key"] = key
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.post(PATH, json=body, headers=headers, **kw)

    def get(self, payment_id: str, token: str | None = TOKEN) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        return self.http.get(f"{PATH}/{payment_id}", headers=headers)

    def wait_status(
        self, payment_id: str, statuses: set[str], timeout_s: float = 60
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            r = self.get(payment_id)
            if r.status_code == 200:
                last = r.json()
                if last["status"] in statuses:
                    return dict(last)
            time.sleep(0.2)
        raise AssertionError(f"{payment_id} not in {statuses}: {last}\n{self.logs()}")

    def logs(self, lines: int = 40) -> str:
        out = []
        for name in self.started:
            path = self.sup.log_path(name)
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"== {name} ==\n" + "\n".join(tail))
        return "\n".join(out)

    def log(self, name: str) -> str:
        path = self.sup.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""
