"""A payments worker, a ledger worker and the payment API as real processes against the test
broker (until the CLI has their verbs), for the API's integration tests."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx

from base.config import Settings
from ops.procs import Supervisor
from streams.payments.routing import PspInfo
from tests.stack import env_for

REPO = Path(__file__).resolve().parent.parent
TOKEN = "integration-test-token"
PATH = "/payments/payment/v1"

# docs/psp-simulator.md's table (the simulator itself is not needed: no PSP is called
# before the ledger answers).
PSPS = (
    PspInfo(
        "cardco",
        frozenset({"card", "apple_pay", "google_pay"}),
        frozenset({"USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD"}),
        1,
        Decimal("2.9"),
        30,
    ),
    PspInfo(
        "bankco",
        frozenset({"bank_account"}),
        frozenset({"USD", "EUR", "GBP"}),
        1,
        Decimal("0.8"),
        0,
    ),
    PspInfo(
        "walletco", frozenset({"paypal"}), frozenset({"USD", "EUR", "GBP"}), 1, Decimal("3.4"), 35
    ),
)


def payments_worker_main(instance: int) -> None:
    """A payments worker process: ``python -c 'from tests.payments_stack import ...'``."""
    from base.config import load_settings
    from paystream.bootstrap import configure_logging, exit_with_parent
    from streams.payments_agent import PaymentsAgent
    from streams.processor import Processor

    configure_logging()
    exit_with_parent()
    Processor(PaymentsAgent(PSPS), load_settings(), instance).run()


def ledger_takes_payments() -> bool:
    """Whether this checkout's ledger handles the payments' commands (authorize_payin...)."""
    from streams.records import to_command

    record = {
        "command_id": "p/1/authorize",
        "account": "a",
        "payment_order_id": "p/1",
        "reply_to": "p",
        "amount": "1",
        "currency": "USD",
    }
    try:
        to_command("AuthorizePayin", record, 0)
    except Exception:
        return False
    return True


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
        code = f"from tests.payments_stack import payments_worker_main; payments_worker_main({instance})"
        self._start(f"payments-{instance}", [sys.executable, "-c", code])

    def start_ledger_worker(self, instance: int = 1) -> None:
        self._start(
            f"ledger-{instance}",
            [sys.executable, "-m", "paystream.cli", "worker", "--instance", str(instance)],
        )

    @property
    def api_name(self) -> str:
        return f"api-{self.api_port}"  # two stacks may share a home

    def start_api(self, timeout_s: float = 90) -> None:
        self._start(self.api_name, [sys.executable, "-m", "paystream.api"])
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
