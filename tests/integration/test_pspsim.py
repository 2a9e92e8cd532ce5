"""The PSP simulator over real HTTP: a `python -m pspsim` subprocess, httpx as the client."""

from __future__ import annotations

import csv
import io
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from tests.pspsim_harness import REPO, Simulator, WebhookReceiver, wait_until

pytestmark = pytest.mark.integration

OK_CARD, OK_BANK, OK_PAYPAL = (
    "card_4242424242424242",
    "bank_DE89370400440532013000",
    "paypal_ok@example.com",
)
_refs = itertools.count(1)


def ref(prefix: str = "po") -> str:
    return f"{prefix}-{next(_refs)}-{time.monotonic_ns()}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver) -> Iterator[Simulator]:
    s = Simulator(
        tmp_path_factory.mktemp("pspsim") / "state",
        ["--hang-s", "3", "--seed", "11", "--webhook-url", f"bankco={receiver.url}"],
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


def token_body(reference: str, instrument: str, option: str = "card", currency: str = "USD",
               amount: str = "12.34", direction: str = "pay_in") -> dict[str, Any]:  # fmt: skip
    return {"merchant_reference": reference, "direction": direction, "amount": amount,
            "currency": currency, "payment_option": option, "instrument": instrument}  # fmt: skip


def new_token(http: httpx.Client, base: str, **kw: Any) -> dict[str, Any]:
    r = http.post(f"{base}/v1/tokens", json=token_body(**kw))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def execute(http: httpx.Client, base: str, token: str) -> httpx.Response:
    return http.post(f"{base}/v1/tokens/{token}/execute")


def stats(http: httpx.Client, base: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"{base}/v1/admin/stats").json()
    return body


def test_ports_health_and_capabilities(sim: Simulator, http: httpx.Client) -> None:
    assert set(sim.ports) == {"cardco", "bankco", "walletco", "backupcard"}
    assert all(p > 0 for p in sim.ports.values())
    for psp in sim.ports:
        assert http.get(f"{sim.url(psp)}/v1/health").json() == {"psp": psp, "status": "ok"}
    caps = {p: http.get(f"{sim.url(p)}/v1/capabilities").json() for p in sim.ports}
    assert caps["cardco"]["payment_options"] == ["card", "apple_pay", "google_pay"]
    assert caps["bankco"]["asynchronous"] is True and caps["cardco"]["asynchronous"] is False
    assert caps["backupcard"]["priority"] == 2 and caps["walletco"]["priority"] == 1
    assert caps["bankco"]["commission"] == {"percent": "0.8", "fixed_minor": 0, "max_minor": 500}
    assert caps["backupcard"]["currencies"] == ["USD", "EUR", "GBP", "JPY"]


@pytest.mark.parametrize(
    ("psp", "option", "instrument", "direction", "status", "code"),
    [("cardco", "card", OK_CARD, "pay_in", 200, None),
     ("cardco", "apple_pay", "card_4111111111111111", "pay_in", 200, None),
     ("walletco", "paypal", OK_PAYPAL, "pay_in", 200, None),
     ("backupcard", "card", OK_CARD, "pay_out", 200, None),
     ("cardco", "card", "card_4000000000000002", "pay_in", 402, "card_declined"),
     ("cardco", "google_pay", "card_4000000000000002", "pay_out", 402, "card_declined"),
     ("backupcard", "card", "card_4000000000009995", "pay_in", 402, "insufficient_funds"),
     ("walletco", "paypal", "paypal_declined@example.com", "pay_in", 402, "payment_declined"),
     ("cardco", "card", "card_4242424242424241", "pay_in", 402, "invalid_instrument"),
     ("cardco", "card", OK_BANK, "pay_in", 402, "invalid_instrument"),
     ("walletco", "paypal", "paypal_nobody", "pay_out", 402, "invalid_instrument"),
     ("bankco", "bank_account", "bank_DE8937", "pay_in", 402, "invalid_instrument")],
)  # fmt: skip
def test_synchronous_outcomes_of_the_instruments(
    sim: Simulator, http: httpx.Client, psp: str, option: str, instrument: str,
    direction: str, status: int, code: str | None,
) -> None:  # fmt: skip
    base = sim.url(psp)
    reference = ref()
    tok = new_token(http, base, reference=reference, instrument=instrument, option=option,
                    direction=direction)  # fmt: skip
    r = execute(http, base, tok["token"])
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == ("succeeded" if status == 200 else "declined")
    assert (body["code"], body["direction"], body["already_executed"]) == (code, direction, False)
    assert body["psp_reference"] and body["merchant_reference"] == reference
    assert stats(http, base)["charges_by_reference"].get(reference, 0) == (status == 200)


def test_token_idempotency_and_mismatch(sim: Simulator, http: httpx.Client) -> None:
    base = sim.url("cardco")
    body = token_body(ref(), OK_CARD)
    first = http.post(f"{base}/v1/tokens", json=body)
    again = http.post(f"{base}/v1/tokens", json={**body, "amount": "12.34"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json() and first.json()["status"] == "created"
    for change in ({"amount": "12.35"}, {"instrument": "card_4111111111111111"},
                   {"direction": "pay_out"}, {"currency": "EUR"}):  # fmt: skip
        r = http.post(f"{base}/v1/tokens", json={**body, **change})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "idempotency_mismatch"
        assert r.json()["error"]["field"] == next(iter(change))
    by_ref = http.get(
        f"{base}/v1/tokens", params={"merchant_reference": body["merchant_reference"]}
    )
    assert by_ref.json()["token"] == first.json()["token"]
    assert http.get(f"{base}/v1/tokens", params={"merchant_reference": "nope"}).status_code == 404


def test_reexecute_answers_the_original_without_moving_money(
    sim: Simulator, http: httpx.Client
) -> None:
    base = sim.url("walletco")
    tok = new_token(http, base, reference=ref(), instrument=OK_PAYPAL, option="paypal")
    first = execute(http, base, tok["token"])
    second = execute(http, base, tok["token"])
    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json() == {**first.json(), "already_executed": True}
    view = http.get(f"{base}/v1/tokens/{tok['token']}").json()
    assert (view["executions"], view["charged"], view["status"]) == (2, True, "succeeded")
    assert view["created_at"].endswith("Z") and view["completed_at"] == view["executed_at"]
    assert stats(http, base)["charges_by_reference"][tok["merchant_reference"]] == 1
    assert execute(http, base, "tok_unknown").json()["error"]["code"] == "token_not_found"


def test_the_flaky_card_fails_twice_then_charges_once(sim: Simulator, http: httpx.Client) -> None:
    base = sim.url("cardco")
    tok = new_token(http, base, reference=ref(), instrument="card_4000000000000119")
    answers = [execute(http, base, tok["token"]) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 500, 200, 200]
    assert answers[0].json()["error"]["code"] == "internal_error"
    assert [a.json()["already_executed"] for a in answers[2:]] == [False, True]
    assert stats(http, base)["charges_by_reference"][tok["merchant_reference"]] == 1


def test_the_dropped_connection_still_charged_once(sim: Simulator, http: httpx.Client) -> None:
    base = sim.url("cardco")
    tok = new_token(http, base, reference=ref(), instrument="card_4000000000000259")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        execute(http, base, tok["token"])
    view = http.get(f"{base}/v1/tokens/{tok['token']}").json()
    assert (view["status"], view["charged"], view["executions"]) == ("succeeded", True, 1)
    again = execute(http, base, tok["token"])
    assert again.status_code == 200 and again.json()["already_executed"] is True
    assert stats(http, base)["charges_by_reference"][tok["merchant_reference"]] == 1


def test_the_held_response_times_out_a_client_yet_charged_once(
    sim: Simulator, http: httpx.Client
) -> None:
    base = sim.url("backupcard")
    tok = new_token(http, base, reference=ref(), instrument="card_4000000000000341")
    started = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"{base}/v1/tokens/{tok['token']}/execute", timeout=1)
    assert time.monotonic() - started < 2.5
    assert http.get(f"{base}/v1/tokens/{tok['token']}").json()["charged"] is True
    again = execute(http, base, tok["token"])  # answered at once, while the first is held
    assert again.status_code == 200 and again.json()["already_executed"] is True
    assert stats(http, base)["charges_by_reference"][tok["merchant_reference"]] == 1


def _verified(secret: str, delivery: Any) -> dict[str, Any]:
    doc: dict[str, Any] = Webhook(secret).verify(delivery.body, delivery.headers)
    return doc


def test_bankco_completes_asynchronously_with_signed_webhooks(
    sim: Simulator, http: httpx.Client, receiver: WebhookReceiver
) -> None:
    base = sim.url("bankco")
    secret = (sim.state_dir / "webhook-secrets" / "bankco").read_text().strip()
    ok = new_token(
        http, base, reference=ref("b"), instrument=OK_BANK, option="bank_account", currency="EUR"
    )
    closed = new_token(http, base, reference=ref("b"), instrument="bank_DE62370400440532013001",
                       option="bank_account", direction="pay_out")  # fmt: skip
    # The success's first delivery fails: it must come again, with the same id.
    receiver.failures[(ok["token"], "payment.succeeded")] = 1
    for tok in (ok, closed):
        r = execute(http, base, tok["token"])
        assert r.status_code == 202 and r.json()["status"] == "pending", r.text
        assert execute(http, base, tok["token"]).json()["already_executed"] is True

    def final(token: str, kind: str) -> list[Any]:
        return [d for d in receiver.for_token(token) if d.payload["type"] == kind]

    wait_until(lambda: len(final(ok["token"], "payment.succeeded")) >= 2, 10, "success + retry")
    wait_until(lambda: final(closed["token"], "payment.declined"), 10, "the decline")
    first, retry = final(ok["token"], "payment.succeeded")[:2]
    assert first.headers["webhook-id"] == retry.headers["webhook-id"].strip()
    assert first.headers["webhook-id"].startswith("evt_") and first.body == retry.body
    doc = _verified(secret, retry)
    assert doc["data"] | {"psp_reference": None} == {
        "token": ok["token"], "merchant_reference": ok["merchant_reference"],
        "status": "succeeded", "code": None, "psp_reference": None, "amount": "12.34",
        "currency": "EUR", "direction": "pay_in",
    }  # fmt: skip
    declined = _verified(secret, final(closed["token"], "payment.declined")[0])
    assert declined["data"]["code"] == "account_closed"
    pending = [d for d in receiver.for_token(ok["token"]) if d.payload["type"] == "payment.pending"]
    assert _verified(secret, pending[0])["data"]["status"] == "pending"
    assert http.get(f"{base}/v1/tokens/{ok['token']}").json()["status"] == "succeeded"
    after = execute(http, base, closed["token"])
    assert after.status_code == 402 and after.json()["already_executed"] is True
    assert stats(http, base)["charges_by_reference"].get(closed["merchant_reference"]) is None
    assert stats(http, base)["charges_by_reference"][ok["merchant_reference"]] == 1

    # The stored events and their attempts; a tampered redelivery does not verify.
    events = http.get(f"{base}/v1/admin/webhooks", params={"token": ok["token"]}).json()["events"]
    succeeded = next(e for e in events if e["type"] == "payment.succeeded")
    assert succeeded["state"] == "delivered" and succeeded["attempts"] == 2
    assert [d["http_status"] for d in succeeded["deliveries"]] == [500, 204]
    count = len(receiver.deliveries)
    r = http.post(f"{base}/v1/admin/webhooks/redeliver",
                  json={"event_id": succeeded["event_id"], "tamper": True})  # fmt: skip
    assert r.status_code == 202
    wait_until(lambda: len(receiver.deliveries) > count, 5, "the redelivery")
    tampered = receiver.deliveries[count]
    assert tampered.headers["webhook-id"] == succeeded["event_id"]
    with pytest.raises(WebhookVerificationError):
        _verified(secret, tampered)
    missing = http.post(f"{base}/v1/admin/webhooks/redeliver", json={"event_id": "evt_nope"})
    assert missing.status_code == 404


def test_outage_answers_503_then_recovers(sim: Simulator, http: httpx.Client) -> None:
    base = sim.url("walletco")
    assert http.post(f"{base}/v1/admin/outage", json={"seconds": 30}).status_code == 200
    r = http.post(f"{base}/v1/tokens", json=token_body(ref(), OK_PAYPAL, option="paypal"))
    assert r.status_code == 503 and r.json()["error"]["code"] == "psp_unavailable"
    assert 1 <= int(r.headers["Retry-After"]) <= 30
    assert http.get(f"{base}/v1/health").status_code == 503
    assert http.get(f"{sim.url('cardco')}/v1/health").status_code == 200  # only walletco is down
    assert http.get(f"{base}/v1/admin/stats").status_code == 200  # admin still answers
    assert http.post(f"{base}/v1/admin/outage", json={"seconds": 0}).status_code == 200
    assert http.get(f"{base}/v1/health").status_code == 200


def test_latency_is_added_per_psp(sim: Simulator, http: httpx.Client) -> None:
    base = sim.url("backupcard")
    assert http.post(f"{base}/v1/admin/latency", json={"ms": 300}).json()["latency_ms"] == 300
    try:
        started = time.monotonic()
        http.get(f"{base}/v1/health")
        assert time.monotonic() - started >= 0.3
    finally:
        http.post(f"{base}/v1/admin/latency", json={"ms": 0})


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "code"),
    [("POST", "/v1/tokens", b"{not json", 400, "invalid_json"),
     ("POST", "/v1/tokens", b"\xff\xfe", 400, "invalid_json"),
     ("POST", "/v1/tokens", b"[1, 2]", 400, "invalid_body"),
     ("POST", "/v1/tokens", b'{"amount": NaN}', 400, "invalid_json"),
     ("POST", "/v1/tokens", b"[" * 100_00 + b"]" * 100_00, 400, "invalid_json"),
     ("POST", "/v1/tokens", b'{"a": "' + b"x" * 70_000 + b'"}', 413, "body_too_large"),
     ("POST", "/v1/tokens", b'{"merchant_reference": "r", "direction": "pay_in", "currency": '
                            b'"SEK", "payment_option": "card"}', 400, "unsupported_currency"),
     ("POST", "/v1/admin/outage", b'{"seconds": "5"}', 400, "invalid_field"),
     ("POST", "/v1/admin/latency", b'{"ms": -1}', 400, "invalid_field"),
     ("POST", "/v1/admin/webhooks/redeliver", b'{"event_id": 1}', 400, "invalid_field"),
     ("GET", "/v1/settlement?date=2025-02-30", b"", 400, "invalid_field"),
     ("GET", "/v1/tokens", b"", 400, "missing_field"),
     ("GET", "/v1/nothing", b"", 404, "not_found"),
     ("DELETE", "/v1/tokens", b"", 405, "method_not_allowed")],
)  # fmt: skip
def test_malformed_requests_get_a_4xx_error_body(
    sim: Simulator,
    http: httpx.Client,
    method: str,
    path: str,
    content: bytes,
    status: int,
    code: str,
) -> None:
    r = http.request(method, f"{sim.url('cardco')}{path}", content=content)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert http.get(f"{sim.url('cardco')}/v1/health").status_code == 200


def test_settlement_has_one_row_per_charge_and_consistent_batches(
    sim: Simulator, http: httpx.Client
) -> None:
    base = sim.url("cardco")
    mine = []
    for instrument, direction, currency, amount in [
        (OK_CARD, "pay_in", "USD", "100.00"), (OK_CARD, "pay_out", "USD", "40.00"),
        (OK_CARD, "pay_in", "JPY", "5000"), ("card_4000000000000002", "pay_in", "USD", "9.99"),
    ]:  # fmt: skip
        tok = new_token(http, base, reference=ref("s"), instrument=instrument,
                        direction=direction, currency=currency, amount=amount)  # fmt: skip
        for _ in range(3):  # executed thrice: still one movement
            execute(http, base, tok["token"])
        mine.append(tok)
    never = new_token(http, base, reference=ref("s"), instrument=OK_CARD)  # never executed
    day = http.get(f"{base}/v1/tokens/{mine[0]['token']}").json()["completed_at"][:10]
    r = http.get(f"{base}/v1/settlement", params={"date": day})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(r.text))
    assert reader.fieldnames == [
        "Company Account", "Merchant Account", "Psp Reference", "Merchant Reference",
        "Payment Method", "Creation Date", "TimeZone", "Type", "Modification Reference",
        "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate",
        "Net Currency", "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)", "Markup (NC)",
        "Scheme Fees (NC)", "Interchange (NC)", "Batch Number",
    ]  # fmt: skip
    rows = list(reader)
    moves = [row for row in rows if row["Type"] in ("Settled", "PaidOut")]
    # Every charge of the day is one row, and nothing else is.
    charged = stats(http, base)["charges_by_reference"]
    today = {
        ref_ for ref_ in charged
        if http.get(f"{base}/v1/tokens", params={"merchant_reference": ref_}).json()["completed_at"][:10] == day
    }  # fmt: skip
    assert sorted(row["Merchant Reference"] for row in moves) == sorted(today)
    assert never["merchant_reference"] not in today and mine[3]["merchant_reference"] not in today
    by_ref = {row["Merchant Reference"]: row for row in moves}
    pay_in, pay_out, yen = (by_ref[t["merchant_reference"]] for t in mine[:3])
    assert (pay_in["Type"], pay_in["Gross Credit (GC)"], pay_in["Commission (NC)"]) == (
        "Settled",
        "100.00",
        "3.20",
    )
    assert pay_in["Net Credit (NC)"] == "96.80" and pay_in["Batch Number"] == day.replace("-", "")
    assert (pay_out["Type"], pay_out["Gross Debit (GC)"], pay_out["Net Debit (NC)"]) == (
        "PaidOut",
        "40.00",
        "41.46",
    )
    assert (yen["Gross Credit (GC)"], yen["Commission (NC)"]) == ("5000", "175")  # 145 + 30 yen
    for currency, fee in (("USD", "1.00"), ("JPY", "100")):
        batch = [row for row in rows if row["Net Currency"] == currency]
        assert [row["Net Debit (NC)"] for row in batch if row["Type"] == "Fee"] == [fee]
        assert [row["Type"] for row in batch].count("MerchantPayout") == 1
        scale = 1 if currency == "JPY" else 100
        net = sum(round(float(row["Net Credit (NC)"] or 0) * scale)
                  - round(float(row["Net Debit (NC)"] or 0) * scale) for row in batch)  # fmt: skip
        assert net == 0, batch
    # The same file offline, from the state directory.
    out = subprocess.run(
        [sys.executable, "-m", "pspsim", "settlement", "--state-dir", str(sim.state_dir),
         "--psp", "cardco", "--date", day],
        cwd=REPO, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert out.stdout == r.text


def test_a_second_server_on_the_same_state_dir_is_refused(sim: Simulator, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pspsim", "--state-dir", str(sim.state_dir), "--psp", "cardco=0"],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0 and "another simulator" in out.stderr
