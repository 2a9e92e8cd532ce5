"""The payment API for real: a payments worker and the API server as processes against the
broker, answers derived from the changelog (also after kill -9 of the API, and from another
API process), every refusal, and the admission latency of sequential requests."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from base.config import Settings
from base.kafka import scan
from base.topics import TopicNames
from paystream.api.client import PaymentsClient
from paystream.api.errors import ApiError
from paystream.api.middleware import SECURITY_HEADERS
from tests.payments_stack import TOKEN, PaymentsStack

pytestmark = pytest.mark.integration

BODY = {
    "payment_id": "pay-1",
    "user_id": "user-1",
    "type": "pay_in",
    "from_acct": "card_4242424242424242",
    "to_acct": "acct-1",
    "amount": "10.50",
    "currency": "USD",
    "payment_option": "card",
}


@pytest.fixture
def stack(settings: Settings, free_port_base: Callable[[int], int]) -> Iterator[PaymentsStack]:
    s = PaymentsStack(settings, free_port_base(1))
    try:
        s.start_payments_worker()
        s.start_api()
        yield s
    finally:
        s.stop()


def _security_headers_on(r: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert r.headers.get(name) == value, (r.request.url, name, r.headers)


def _requests_for_key(settings: Settings, key: str) -> int:
    topic = TopicNames(settings.topic_prefix).payments
    return sum(1 for m in scan(settings, topic) if m.key() == f"@idem/service/{key}".encode())


def test_admission_replays_and_conflicts_survive_kill_9(
    stack: PaymentsStack, settings: Settings, free_port_base: Callable[[int], int]
) -> None:
    created = stack.post(BODY, "key-1")
    assert created.status_code == 201, f"{created.text}\n{stack.logs()}"
    assert "Idempotent-Replayed" not in created.headers
    body = created.json()
    assert body["payment_id"] == "pay-1" and body["status"] == "received"
    assert body["history"] == [{"status": "received", "at": body["created_at"]}]
    _security_headers_on(created)

    replay = stack.post(dict(reversed(list(BODY.items()))), "key-1")
    assert (replay.status_code, replay.json()) == (201, body)
    assert replay.headers["Idempotent-Replayed"] == "true"

    reused = stack.post({**BODY, "amount": "10.51"}, "key-1")
    assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")

    exists = stack.post(BODY, "key-2")
    assert (exists.status_code, exists.json()["error"]) == (409, "payment_exists")

    # No risk worker: the payment waits for the risk engine (before the ledger's check).
    assert stack.wait_status("pay-1", {"risk_check"})["orders"][0]["payment_order_id"] == "pay-1/1"

    # kill -9 and start again (same port and local state): the same answers, from the log.
    stack.kill_api()
    stack.start_api()
    again = stack.post(BODY, "key-1")
    assert (again.status_code, again.json()) == (201, body)
    assert again.headers["Idempotent-Replayed"] == "true"
    exists_again = stack.post(BODY, "key-2")
    assert exists_again.status_code == 409
    assert exists_again.headers["Idempotent-Replayed"] == "true"
    assert stack.post({**BODY, "amount": "1"}, "key-1").status_code == 422

    # Another API process, with a view of its own built from nothing: the same answers.
    other = PaymentsStack(settings, free_port_base(1))
    try:
        other.start_api()
        from_other = other.post(BODY, "key-1")
        assert (from_other.status_code, from_other.json()) == (201, body)
        assert from_other.headers["Idempotent-Replayed"] == "true"
        assert other.get("pay-1").json()["status"] == "risk_check"
    finally:
        other.stop()
    assert _requests_for_key(settings, "key-1") == 1  # replays produced nothing
    assert "payment pay-1: created (201) key service/key-1" in stack.log(stack.api_name)


def test_concurrent_requests_with_one_key_make_one_payment(
    stack: PaymentsStack, settings: Settings
) -> None:
    body = {**BODY, "payment_id": "pay-concurrent"}
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: stack.post(body, "key-c"), range(16)))
    statuses = [a.status_code for a in answers]
    assert statuses.count(201) >= 1, statuses
    for a in answers:
        if a.status_code == 409:
            assert a.json()["error"] == "request_in_progress"
        else:
            assert a.status_code == 201
            assert a.json()["payment_id"] == "pay-concurrent"
    firsts = [a for a in answers if a.status_code == 201 and "Idempotent-Replayed" not in a.headers]
    assert len(firsts) == 1, statuses
    assert _requests_for_key(settings, "key-c") == 1
    assert stack.get("pay-concurrent").status_code == 200


BAD_FIELDS: list[tuple[str, Any]] = [
    ("payment_id", "bad/id"),
    ("payment_id", ""),
    ("user_id", "u\x01"),
    ("user_id", 7),
    ("type", "refund"),
    ("from_acct", "x" * 129),
    ("to_acct", ""),
    ("amount", "-5"),
    ("amount", "1e3"),
    ("amount", 10.5),
    ("currency", "usd"),
    ("payment_option", "cash"),
    ("extra", "x"),
]


def test_every_refusal(stack: PaymentsStack, settings: Settings) -> None:
    for field, value in BAD_FIELDS:
        r = stack.post({**BODY, field: value}, f"key-{field}")
        assert r.status_code == 400, (field, value, r.text)
        assert r.json()["error"] == "invalid_field" and r.json()["field"] == field, r.json()
        _security_headers_on(r)
    missing = {k: v for k, v in BODY.items() if k != "amount"}
    assert stack.post(missing, "key-m").json()["field"] == "amount"
    for key in (None, "", "k" * 256):
        r = stack.post(BODY, key)
        assert (r.status_code, r.json()["field"]) == (400, "Idempotency-Key"), key
    for token in (None, "wrong", TOKEN + "x"):
        r = stack.post(BODY, "key-auth", token=token)
        assert (r.status_code, r.json()["error"]) == (401, "unauthorized")
        assert stack.get("pay-1", token=token).status_code == 401
        _security_headers_on(r)
    big = stack.post({**BODY, "pad": "x" * 70_000}, "key-big")
    assert (big.status_code, big.json()["error"]) == (413, "too_large")
    _security_headers_on(big)
    missing_payment = stack.get("no-such-payment")
    assert (missing_payment.status_code, missing_payment.json()["error"]) == (
        404,
        "payment_not_found",
    )
    for r in (
        missing_payment,
        stack.http.get("/health"),
        stack.http.get("/openapi.json"),
        stack.http.get("/nope"),
        stack.http.put("/health"),
    ):
        _security_headers_on(r)
    assert stack.http.get("/nope").json()["error"] == "not_found"
    assert stack.http.put("/health").json()["error"] == "method_not_allowed"
    # Nothing refused reached the log.
    assert not list(scan(settings, TopicNames(settings.topic_prefix).payments))


def test_a_request_not_admitted_in_time_is_answered_on_retry(
    settings: Settings, free_port_base: Callable[[int], int]
) -> None:
    stack = PaymentsStack(settings, free_port_base(1))
    try:
        stack.start_api()  # no payments worker yet
        late = stack.post({**BODY, "payment_id": "pay-late"}, "key-late")
        assert (late.status_code, late.json()["error"]) == (503, "not_admitted_in_time")
        stack.start_payments_worker()
        # The request stayed in the log: the worker admits it without a retry...
        stack.wait_status("pay-late", {"risk_check"})
        # ...and a retry with the same key gets the original answer.
        with PaymentsClient(f"http://127.0.0.1:{stack.api_port}", TOKEN) as client:
            paid = client.pay(**{**BODY, "payment_id": "pay-late"}, idempotency_key="key-late")
            assert paid.status == 201 and paid.replayed and paid.body["payment_id"] == "pay-late"
            assert client.get_payment("pay-late")["payment_id"] == "pay-late"
            with pytest.raises(ApiError) as info:
                client.get_payment("nothing-here")
            assert (info.value.status, info.value.code) == (404, "payment_not_found")
            with pytest.raises(ApiError) as reused:
                client.pay(
                    **{**BODY, "payment_id": "pay-late", "amount": "2"}, idempotency_key="key-late"
                )
            assert reused.value.code == "idempotency_key_reused"
    finally:
        stack.stop()


def test_a_pay_in_to_a_missing_account_is_rejected_by_the_ledger(
    stack: PaymentsStack, settings: Settings
) -> None:
    from tests.stack import LedgerStack

    stack.start_ledger_worker()
    stack.start_risk_worker()  # every payment is decided by the risk engine first
    ledger = LedgerStack(settings, workers=1)
    ledger.send(
        [
            {
                "type": "open_account",
                "command_id": "open-1",
                "account": "acct-1",
                "user": "user-1",
                "currency": "USD",
            }
        ]
    )
    missing = stack.post({**BODY, "payment_id": "pay-missing", "to_acct": "acct-404"}, "key-404")
    assert missing.status_code == 201
    rejected = stack.wait_status("pay-missing", {"rejected"}, timeout_s=90)
    assert rejected["reason"] == "account_not_found" and rejected["is_complete"]
    ok = stack.post(BODY, "key-ok")
    assert ok.status_code == 201
    assert stack.wait_status("pay-1", {"processing"}, timeout_s=90)["status"] == "processing"


def test_admission_latency_of_sequential_requests(stack: PaymentsStack) -> None:
    """Not a benchmark (make bench is): a figure for the record, and a loose bound."""
    latencies_ms = []
    for i in range(300):
        body = {**BODY, "payment_id": f"lat-{i}"}
        started = time.perf_counter()
        r = stack.post(body, f"lat-key-{i}")
        latencies_ms.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 201, r.text
    latencies_ms.sort()
    p50 = statistics.median(latencies_ms)
    p99 = latencies_ms[int(len(latencies_ms) * 0.99) - 1]
    print(f"\nadmission latency, 300 sequential requests: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert p99 < 2000
