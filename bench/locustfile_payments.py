"""The seed's traffic for locust: two reads (GET a payment) per write (POST a payment).

Run by bench_payments.py (``mix``) as ``locust --headless``; every user paces itself to
``PAYSTREAM_LOCUST_USER_RPS`` requests per second, so users x that is the offered rate.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid

from locust import FastHttpUser, constant_throughput, task

TOKEN = os.environ["PAYSTREAM_LOCUST_TOKEN"]
USER_RPS = float(os.environ.get("PAYSTREAM_LOCUST_USER_RPS", "1"))
PATH = "/payments/payment/v1"
_ids: list[str] = []
_count = itertools.count()


class PaymentClient(FastHttpUser):
    wait_time = constant_throughput(USER_RPS)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        if not _ids:
            self._write()

    def _write(self) -> None:
        pid = f"mix-{uuid.uuid4().hex[:20]}"
        body = {
            "payment_id": pid, "user_id": "bench-user", "type": "pay_in",
            "from_acct": "card_4242424242424242", "to_acct": "bench-acct", "amount": "1.00",
            "currency": "USD", "payment_option": "card",
        }  # fmt: skip
        with self.client.post(
            PATH, json=body, headers={**self.headers, "Idempotency-Key": pid},
            name="POST payment", catch_response=True,
        ) as r:  # fmt: skip
            if r.status_code == 201:
                _ids.append(pid)
                r.success()
            else:
                r.failure(f"{r.status_code}")

    @task(1)
    def write(self) -> None:
        self._write()

    @task(2)
    def read(self) -> None:
        pid = random.choice(_ids) if _ids else "missing"
        self.client.get(f"{PATH}/{pid}", headers=self.headers, name="GET payment")
