"""The payment API's app through ASGI, with the real pure core behind a fake log and view
(tests/api_fakes.py): routes, admission, errors, headers. The real broker, worker and server
are in tests/integration/test_payment_api.py."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from base.config import Limits, Settings
from paystream.api.app import create_app
from paystream.api.middleware import SECURITY_HEADERS
from streams.partitioner import partition_for
from tests.api_fakes import FakeView, FakeWorker

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/payments/payment/v1"
BODY = {
    "payment_id": "p-1",
    "user_id": "user-1",
    "type": "pay_in",
    "from_acct": "card_4242424242424242",
    "to_acct": "acct-1",
    "amount": "10.50",
    "currency": "USD",
    "payment_option": "card",
}


def _headers(key: str = "k1") -> dict[str, str]:
    return {**AUTH, "Idempotency-Key": key}


@asynccontextmanager
async def _client(
    tmp_path: Path, delay_s: float | None = 0.005, timeout_s: float = 2.0
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeView, FakeWorker]]:
    view = FakeView()
    worker = FakeWorker(view, delay_s)
    settings = Settings(
        home=tmp_path,
        bootstrap="127.0.0.1:1",
        api_token=TOKEN,
        limits=Limits(api_admission_timeout_s=timeout_s),
    )
    app = create_app(settings, view=view, sink=worker)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        yield client, view, worker


Scenario = Callable[[httpx.AsyncClient, FakeView, FakeWorker], Awaitable[None]]


def _run(tmp_path: Path, scenario: Scenario, **kw: Any) -> None:
    async def main() -> None:
        async with _client(tmp_path, **kw) as (client, view, worker):
            await scenario(client, view, worker)

    asyncio.run(main())


def test_created_then_replayed_then_reused(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        first = await c.post(PATH, json=BODY, headers=_headers())
        assert first.status_code == 201, first.text
        assert "Idempotent-Replayed" not in first.headers
        assert first.json()["status"] == "received" and first.json()["payment_id"] == "p-1"
        topic, partition, key, record = worker.sent[0]
        assert (topic, partition) == ("paystream.payments.v1", partition_for(key, 4))
        assert key == "@idem/service/k1" and record["stage"] == "reserve"
        assert record["digest"].startswith("sha256:") and record["ts"] == 0
        again = await c.post(PATH, json=dict(reversed(list(BODY.items()))), headers=_headers())
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(worker.sent) == 1  # a replay produces nothing
        reused = await c.post(PATH, json={**BODY, "amount": "11"}, headers=_headers())
        assert reused.status_code == 422
        assert reused.json()["error"] == "idempotency_key_reused"
        assert "Idempotent-Replayed" not in reused.headers
        other_key = await c.post(PATH, json=BODY, headers=_headers("k2"))
        assert (other_key.status_code, other_key.json()["error"]) == (409, "payment_exists")
        replayed_409 = await c.post(PATH, json=BODY, headers=_headers("k2"))
        assert replayed_409.status_code == 409
        assert replayed_409.headers["Idempotent-Replayed"] == "true"
        got = await c.get(f"{PATH}/p-1", headers=AUTH)
        assert (
            got.status_code == 200 and got.json()["status"] == "risk_check"
        )  # no risk engine here

    _run(tmp_path, scenario)


def test_a_key_won_by_another_body_in_flight_is_422(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        # Another process's request with this key and another body is first in the log.
        worker.delay_s = None
        await c.post(PATH, json={**BODY, "amount": "1"}, headers=_headers())  # times out
        worker.delay_s = 0.005
        first_record = worker.sent[0][3]
        second = asyncio.create_task(c.post(PATH, json=BODY, headers=_headers("k1")))
        await asyncio.sleep(0)
        worker.process(first_record)
        assert (await second).status_code == 422

    _run(tmp_path, scenario, timeout_s=0.2)


def test_concurrent_same_key_requests_make_one_payment(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        answers = await asyncio.gather(
            *(c.post(PATH, json=BODY, headers=_headers()) for _ in range(8))
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses.count(201) >= 1
        assert set(statuses) <= {201, 409}
        for a in answers:
            if a.status_code == 409:
                assert a.json()["error"] == "request_in_progress"
        assert len(worker.sent) == 1
        assert [k for k in view.states if not k.startswith("@")] == ["p-1"]

    _run(tmp_path, scenario, delay_s=0.05)


def test_not_admitted_in_time_is_503_and_a_retry_gets_the_answer(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        worker.delay_s = None  # no worker running
        late = await c.post(PATH, json=BODY, headers=_headers())
        assert (late.status_code, late.json()["error"]) == (503, "not_admitted_in_time")
        worker.process(worker.sent[0][3])  # the worker comes back and admits it
        retry = await c.post(PATH, json=BODY, headers=_headers())
        assert retry.status_code == 201
        assert retry.headers["Idempotent-Replayed"] == "true"

    _run(tmp_path, scenario, timeout_s=0.2)


def test_broker_refusal_is_503(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        worker.fail = True
        r = await c.post(PATH, json=BODY, headers=_headers())
        assert (r.status_code, r.json()["error"]) == (503, "not_delivered")

    _run(tmp_path, scenario)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer"},
    ],
)
def test_without_the_token_every_endpoint_is_401(tmp_path: Path, headers: dict[str, str]) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        posted = await c.post(PATH, json=BODY, headers={**headers, "Idempotency-Key": "k"})
        got = await c.get(f"{PATH}/p-1", headers=headers)
        for r in (posted, got):
            assert r.status_code == 401
            assert r.json()["error"] == "unauthorized"
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert worker.sent == []
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200

    _run(tmp_path, scenario)


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9".encode("latin-1"), b"a\x01b", None])
def test_a_bad_idempotency_key_is_400(tmp_path: Path, key: str | bytes | None) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        headers: dict[str, Any] = dict(AUTH)
        if key is not None:
            headers["Idempotency-Key"] = key
        r = await c.post(PATH, json=BODY, headers=headers)
        assert r.status_code == 400
        assert r.json() == {
            "error": "invalid_field",
            "field": "Idempotency-Key",
            "message": r.json()["message"],
        }

    _run(tmp_path, scenario)


def test_bad_bodies_are_400_and_large_ones_413(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        for content in (b"{", b"[]", b"", b'"x"', b"null"):
            r = await c.post(
                PATH, content=content, headers={**_headers(), "Content-Type": "application/json"}
            )
            assert (r.status_code, r.json()["field"]) == (400, "body"), content
        r = await c.post(PATH, json={**BODY, "amount": "ten"}, headers=_headers())
        assert (r.status_code, r.json()["field"]) == (400, "amount")
        big = {**BODY, "pad": "x" * (64 * 1024)}
        r = await c.post(PATH, json=big, headers=_headers())
        assert (r.status_code, r.json()["error"]) == (413, "too_large")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(80):
                yield b"x" * 1024

        r = await c.post(PATH, content=chunks(), headers=_headers())  # no Content-Length
        assert r.status_code == 413
        assert worker.sent == []

    _run(tmp_path, scenario)


def test_errors_are_consistent_and_every_answer_has_the_security_headers(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        answers = [
            await c.get(f"{PATH}/nope", headers=AUTH),
            await c.get(f"{PATH}/@idem", headers=AUTH),
            await c.get("/missing"),
            await c.get("/health/"),
            await c.delete(PATH, headers=AUTH),
            await c.get("/docs"),
            await c.get("/health"),
            await c.get("/openapi.json"),
            await c.post(PATH, json=BODY),
            await c.post(PATH, json=BODY, headers=_headers()),
        ]
        for r in answers:
            for name, value in SECURITY_HEADERS.items():
                assert r.headers[name] == value, (r.request.url, name)
            if r.status_code >= 400:
                body = r.json()
                assert set(body) <= {"error", "message", "field"} and body["error"], body
        assert answers[0].json()["error"] == "payment_not_found"
        assert answers[1].json()["error"] == "payment_not_found"
        assert [r.status_code for r in answers[2:6]] == [404, 404, 405, 404]
        assert answers[4].json()["error"] == "method_not_allowed"

    _run(tmp_path, scenario)


def test_a_crash_is_500_without_a_trace(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        def boom(payment_id: str) -> None:
            raise RuntimeError("secret detail")

        view.payment = boom  # type: ignore[method-assign,assignment]
        r = await c.get(f"{PATH}/p-1", headers=AUTH)
        assert r.status_code == 500
        assert r.json() == {"error": "internal_error", "message": "internal error"}
        assert "secret" not in r.text
        for name, value in SECURITY_HEADERS.items():
            assert r.headers[name] == value

    _run(tmp_path, scenario)


def test_a_failed_view_is_reported_by_health(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        view.failure = RuntimeError("gone")
        r = await c.get("/health")
        assert r.status_code == 503 and r.json()["status"] == "failing"

    _run(tmp_path, scenario)


def test_openapi_documents_the_contract(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, view: FakeView, worker: FakeWorker) -> None:
        doc = (await c.get("/openapi.json")).json()
        post = doc["paths"][PATH]["post"]
        assert {"201", "400", "401", "409", "413", "422", "503"} <= set(post["responses"])
        # The bearer token, or a user's session cookie (the wallet: docs/wallet.md).
        assert post["security"] == [{"HTTPBearer": []}, {"APIKeyCookie": []}]
        [param] = post["parameters"]
        assert param["name"] == "Idempotency-Key" and param["required"]
        body = doc["components"]["schemas"]["PaymentBody"]
        assert body["additionalProperties"] is False and len(body["required"]) == 8
        assert "HTTPValidationError" not in doc["components"]["schemas"]
        assert "security" not in doc["paths"]["/health"]["get"]

    _run(tmp_path, scenario)
