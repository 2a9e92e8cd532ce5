"""A small synchronous client of ``/payments/scheduled-payment/v1`` (``paystream schedule``).

Every non-2xx answer raises ``ApiError`` with the server's code. ``create`` retries a 503
or a lost connection with the same Idempotency-Key (the server answers a retry with the
original answer); the other calls are retried on a 503 the broker caused (nothing was
written), never on one that says the request is in the log.
"""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import quote

import httpx

from .client import RETRIES_MAX, RETRY_PAUSE_S, ServiceClient, _error

SCHEDULES_PATH = "/payments/scheduled-payment/v1"
_SAFE_RETRY = {"not_delivered", "overloaded", "unavailable"}


class SchedulesClient(ServiceClient):
    def _call(
        self, method: str, path: str, *, retry_any_503: bool = False, **kw: Any
    ) -> httpx.Response:
        for attempt in range(RETRIES_MAX + 1):
            last = attempt == RETRIES_MAX
            try:
                r = self._http.request(method, path, **kw)
            except httpx.TransportError:
                if last or method != "POST" or not retry_any_503:
                    raise
            else:
                if r.status_code != 503 or last:
                    return r
                if not retry_any_503 and _code(r) not in _SAFE_RETRY:
                    return r
            time.sleep(RETRY_PAUSE_S * 2**attempt)
        raise AssertionError("unreachable")

    def create(
        self, body: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """(the schedule as created, whether the answer is an earlier request's)."""
        key = idempotency_key or str(uuid.uuid4())
        r = self._call(
            "POST", SCHEDULES_PATH, json=body, headers={"Idempotency-Key": key}, retry_any_503=True
        )
        if r.status_code != 201:
            raise _error(r)
        return r.json(), r.headers.get("Idempotent-Replayed") == "true"

    def list(self, **filters: Any) -> dict[str, Any]:
        params = {k: v for k, v in filters.items() if v is not None}
        return self._json(self._call("GET", SCHEDULES_PATH, params=params), 200)

    def get(self, schedule_id: str) -> dict[str, Any]:
        return self._json(self._call("GET", _one(schedule_id)), 200)

    def update(self, schedule_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._json(self._call("PUT", _one(schedule_id), json=changes), 200)

    def delete(self, schedule_id: str) -> dict[str, Any]:
        return self._json(self._call("DELETE", _one(schedule_id)), 200)

    def backfill(self, schedule_id: str, frm: str, to: str) -> dict[str, Any]:
        r = self._call("POST", _one(schedule_id) + "/backfill", json={"from": frm, "to": to})
        return self._json(r, 202)

    @staticmethod
    def _json(r: httpx.Response, ok: int) -> dict[str, Any]:
        if r.status_code != ok:
            raise _error(r)
        body: dict[str, Any] = r.json()
        return body


def _one(schedule_id: str) -> str:
    return f"{SCHEDULES_PATH}/{quote(schedule_id, safe='')}"


def _code(r: httpx.Response) -> str | None:
    try:
        body = r.json()
    except ValueError:
        return None
    return body.get("error") if isinstance(body, dict) else None
