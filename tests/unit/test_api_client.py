"""The payment API's client against a mock transport: retries keep the key, errors carry
the server's code."""

from __future__ import annotations

import json

import httpx
import pytest

from paystream.api import client as api_client
from paystream.api.client import PaymentsClient
from paystream.api.errors import ApiError

PAY = {
    "payment_id": "p1",
    "user_id": "u1",
    "type": "pay_in",
    "from_acct": "card_4242424242424242",
    "to_acct": "acct-1",
    "amount": "1.00",
    "currency": "USD",
    "payment_option": "card",
}


def _client(answers: list[httpx.Response], seen: list[httpx.Request]) -> PaymentsClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return PaymentsClient("http://api", "tok", transport=httpx.MockTransport(handle))


def test_pay_retries_a_503_with_the_same_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_client, "RETRY_PAUSE_S", 0.0)
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503, json={"error": "not_admitted_in_time", "message": "later"}),
        httpx.Response(201, json={"payment_id": "p1"}, headers={"Idempotent-Replayed": "true"}),
    ]
    with _client(answers, seen) as c:
        paid = c.pay(**PAY)
    assert paid.status == 201 and paid.replayed and paid.body == {"payment_id": "p1"}
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert keys == {paid.idempotency_key} and len(seen) == 2
    assert seen[0].headers["Authorization"] == "Bearer tok"
    assert json.loads(seen[0].content) == PAY


def test_pay_gives_up_after_the_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_client, "RETRY_PAUSE_S", 0.0)
    seen: list[httpx.Request] = []
    busy = httpx.Response(503, json={"error": "not_delivered", "message": "broker"})
    with _client([busy] * 3, seen) as c, pytest.raises(ApiError) as info:
        c.pay(**PAY, idempotency_key="k")
    assert (info.value.status, info.value.code) == (503, "not_delivered")
    assert len(seen) == 3


def test_errors_carry_the_servers_code_and_field() -> None:
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(400, json={"error": "invalid_field", "message": "m", "field": "amount"}),
        httpx.Response(404, json={"error": "payment_not_found", "message": "no"}),
        httpx.Response(502, text="<html>proxy</html>"),
    ]
    with _client(answers, seen) as c:
        with pytest.raises(ApiError) as bad:
            c.pay(**PAY)
        assert (bad.value.code, bad.value.field) == ("invalid_field", "amount")
        with pytest.raises(ApiError) as missing:
            c.get_payment("a/b")
        assert missing.value.code == "payment_not_found"
        assert seen[-1].url.raw_path.endswith(b"/payments/payment/v1/a%2Fb")
        with pytest.raises(ApiError) as proxy:
            c.get_payment("p1")
        assert (proxy.value.status, proxy.value.code) == (502, "http_502")
