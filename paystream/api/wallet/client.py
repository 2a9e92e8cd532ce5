"""A small synchronous client of the wallet (``paystream demo`` and the tests)::

    with WalletClient("http://127.0.0.1:8080") as w:
        w.sign_up("alice@example.com", "alice", "a long passphrase")
        w.log_in("alice", "a long passphrase")  # its token is used from then on
        w.transfer("bob", "5.00")
        w.account()

Every non-2xx answer raises ``ApiError`` with the server's code.
"""

from __future__ import annotations

import time
import uuid
from types import TracebackType
from typing import Any, Self

import httpx

from paystream.api.client import _error

TIMEOUT_S = 20.0


class WalletClient:
    def __init__(self, base_url: str, timeout_s: float = TIMEOUT_S) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=timeout_s)
        self.token: str | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _json(self, r: httpx.Response, *ok: int) -> dict[str, Any]:
        if r.status_code not in ok:
            raise _error(r)
        body: dict[str, Any] = r.json() if r.content else {}
        return body

    def sign_up(
        self, email: str, username: str, password: str, currency: str = "USD"
    ) -> dict[str, Any]:
        body = {"email": email, "username": username, "password": password, "currency": currency}
        return self._json(self.http.post("/v1/user", json=body), 201)

    def log_in(self, username: str, password: str) -> dict[str, Any]:
        r = self.http.post("/v1/session", json={"username": username, "password": password})
        session = self._json(r, 200)
        self.token = session["token"]
        return session

    def log_out(self) -> None:
        self._json(self.http.delete("/v1/session", headers=self._auth()), 204)
        self.token = None

    def account(self) -> dict[str, Any]:
        return self._json(self.http.get("/v1/account", headers=self._auth()), 200)

    def transfer(self, username: str, amount: str, key: str | None = None) -> dict[str, Any]:
        headers = {**self._auth(), "Idempotency-Key": key or str(uuid.uuid4())}
        r = self.http.post(
            "/v1/transfer", json={"username": username, "amount": amount}, headers=headers
        )
        return self._json(r, 201)

    def transfer_status(self, transfer_id: str) -> dict[str, Any]:
        return self._json(self.http.get(f"/v1/transfer/{transfer_id}", headers=self._auth()), 200)

    def wait_transfer(self, transfer_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        """The transfer once it is posted, voided or rejected (or as it stands at the end)."""
        deadline = time.monotonic() + timeout_s
        while True:
            t = self.transfer_status(transfer_id)
            if t["status"] != "pending" or time.monotonic() > deadline:
                return t
            time.sleep(0.2)

    def pay_in(
        self, user_id: str, account: str, amount: str, instrument: str = "card_4242424242424242"
    ) -> dict[str, Any]:
        """A pay-in into the user's own account, with the user's own token."""
        body = {
            "payment_id": f"wallet-{uuid.uuid4().hex[:20]}",
            "user_id": user_id,
            "type": "pay_in",
            "from_acct": instrument,
            "to_acct": account,
            "amount": amount,
            "currency": "USD",
            "payment_option": "card",
        }
        headers = {**self._auth(), "Idempotency-Key": str(uuid.uuid4())}
        return self._json(self.http.post("/payments/payment/v1", json=body, headers=headers), 201)

    def payment(self, payment_id: str) -> dict[str, Any]:
        return self._json(
            self.http.get(f"/payments/payment/v1/{payment_id}", headers=self._auth()), 200
        )

    def wait_payment(self, payment_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while True:
            p = self.payment(payment_id)
            if p["status"] in ("succeeded", "failed", "rejected") or time.monotonic() > deadline:
                return p
            time.sleep(0.2)
