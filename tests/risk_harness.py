"""A payments stack with the risk engine for the risk tests: accounts, payments through the
API, decisions read back from the log, and the CLI."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from base.config import Settings
from base.kafka import scan
from base.topics import TopicNames
from paystream import queries
from paystream.api.client import PaymentsClient
from paystream.stack import Stack
from schemas.codec import Codec
from tests.stack import cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "risk"
TERMINAL = ("succeeded", "failed", "rejected")


@dataclass
class RiskWorld:
    stack: Stack

    @property
    def settings(self) -> Settings:
        return self.stack.resolved

    def open_accounts(self, *users: str) -> None:
        from producers.commands import parse_command
        from producers.producer import CommandProducer

        with CommandProducer(self.settings, client_id="risk-test") as p:
            for u in users:
                p.send(parse_command({
                    "type": "open_account", "command_id": f"open-{u}", "account": f"{u}-acct",
                    "user": u, "currency": "USD",
                }))  # fmt: skip
            p.flush(60)
        self.wait()

    def wait(self, timeout_s: float = 120) -> None:
        if not queries.wait(self.settings, timeout_s=timeout_s):
            raise TimeoutError(f"not caught up:\n{self.stack.logs()}")

    def pay_in(
        self, user: str, payment_id: str, amount: str = "10.00", card: str = "card_4242424242424242"
    ) -> None:
        with PaymentsClient.from_settings(self.settings) as c:
            c.pay(
                payment_id=payment_id, user_id=user, type="pay_in", from_acct=card,
                to_acct=f"{user}-acct", amount=amount, currency="USD", payment_option="card",
                idempotency_key=f"{payment_id}-key",
            )  # fmt: skip

    def payment(self, payment_id: str) -> dict[str, Any]:
        with PaymentsClient.from_settings(self.settings) as c:
            got: dict[str, Any] = c.get_payment(payment_id)
            return got

    def wait_status(
        self, payment_id: str, statuses: tuple[str, ...], timeout_s: float = 90
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.payment(payment_id)
            if body["status"] in statuses:
                return body
            time.sleep(0.2)
        raise AssertionError(f"{payment_id} not in {statuses}: {body}\n{self.stack.logs()}")

    def decisions(self) -> list[dict[str, Any]]:
        codec = Codec.default()
        topic = TopicNames(self.settings.topic_prefix).risk_decisions
        return [codec.decode(m.value() or b"")[1] for m in scan(self.settings, topic, timeout_s=60)]

    def live_decision(self, payment_id: str) -> dict[str, Any]:
        got = [d for d in self.decisions() if d["decision_id"] == f"{payment_id}/risk"]
        assert len(got) == 1, (payment_id, got)
        return got[0]

    def request_offsets(self, payment_ids: set[str]) -> dict[str, tuple[int, int]]:
        """Where each payment's risk request sits in paystream.risk-requests.v1."""
        codec = Codec.default()
        topic = TopicNames(self.settings.topic_prefix).risk_requests
        out = {}
        for m in scan(self.settings, topic, timeout_s=60):
            schema, r = codec.decode(m.value() or b"")
            if (
                schema == "RiskRequest"
                and r["kind"] == "payment"
                and r["payment_id"] in payment_ids
            ):
                out[r["payment_id"]] = (m.partition() or 0, m.offset() or 0)
        return out

    def cli(self, *args: str) -> Any:
        return cli(self.settings, *args)

    def cli_json(self, *args: str) -> Any:
        r = cli(self.settings, *args, "--json")
        return r.returncode, (json.loads(r.stdout) if r.stdout.strip() else None), r.stderr
