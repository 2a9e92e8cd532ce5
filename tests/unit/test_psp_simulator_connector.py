"""SimulatorConnector against a real simulator process (no Kafka): every answer's mapping,
transport failures, webhooks; and the executor's RequestHandler on top of it."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from standardwebhooks import Webhook

from connectors.psp.base import PspAnswer, TokenOrder
from connectors.psp.board import BreakerBoard
from connectors.psp.config import PspConfig, embedded_psps_toml, parse_psps
from connectors.psp.errors import PspCallError, WebhookRejected
from connectors.psp.handler import RequestHandler
from connectors.psp.limits import ExecutorLimits
from connectors.psp.records import PspRequest, parse_request
from connectors.psp.simulator import SimulatorConnector
from ops.ports import free_port_base
from schemas.codec import Codec
from tests.pspsim_harness import Simulator, WebhookReceiver, wait_until

T = TypeVar("T")
CODEC = Codec.default()
_refs = itertools.count(1)
HANG_S = 3


def ref() -> str:
    return f"uc-{next(_refs)}-{time.monotonic_ns()}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver) -> Iterator[Simulator]:
    s = Simulator(
        tmp_path_factory.mktemp("pspsim-conn") / "state",
        ["--hang-s", str(HANG_S), "--seed", "3", "--webhook-url", f"bankco={receiver.url}"],
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def psps(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> dict[str, PspConfig]:
    text = embedded_psps_toml(
        sim.ports, sim.state_dir / "webhook-secrets", timeout_ms={"cardco": 1000}
    )
    home = tmp_path_factory.mktemp("home")
    return {p.name: p for p in parse_psps(text, "psps.toml", home)}


def order(instrument: str, option: str = "card", currency: str = "USD", **kw: Any) -> TokenOrder:
    fields: dict[str, Any] = {
        "merchant_reference": ref(),
        "direction": "pay_in",
        "amount": "12.34",
        "currency": currency,
        "payment_option": option,
        "instrument": instrument,
    }
    fields.update(kw)
    return TokenOrder(**fields)


def with_connector(
    psp: PspConfig, fn: Callable[[SimulatorConnector], Awaitable[T]], **limits: Any
) -> T:
    async def main() -> T:
        connector = SimulatorConnector(psp, ExecutorLimits(**limits))
        try:
            return await fn(connector)
        finally:
            await connector.aclose()

    return asyncio.run(main())


async def failure(call: Awaitable[object]) -> PspCallError:
    with pytest.raises(PspCallError) as info:
        await call
    return info.value


# --- tokens --------------------------------------------------------------------------------


def test_create_token_is_idempotent_on_the_reference(psps: dict[str, PspConfig]) -> None:
    async def go(c: SimulatorConnector) -> None:
        o = order("card_4242424242424242")
        first = await c.create_token(o)
        again = await c.create_token(o)
        assert (first.created, first.http_status) == (True, 201)
        assert (again.created, again.http_status, again.token) == (False, 200, first.token)
        assert first.token.startswith("tok_") and first.latency_us > 0

    with_connector(psps["cardco"], go)


@pytest.mark.parametrize(
    ("changes", "code", "status"),
    [
        ({"amount": "12.345"}, "invalid_amount", 400),
        ({"currency": "SEK"}, "unsupported_currency", 400),
        ({"payment_option": "paypal"}, "unsupported_payment_option", 400),
        ({"direction": "sideways"}, "invalid_field", 400),
    ],
)
def test_create_token_refusals_are_final(
    psps: dict[str, PspConfig], changes: dict[str, str], code: str, status: int
) -> None:
    async def go(c: SimulatorConnector) -> PspCallError:
        return await failure(c.create_token(order("card_4242424242424242", **changes)))

    exc = with_connector(psps["cardco"], go)
    assert (exc.code, exc.http_status, exc.retryable, exc.sent) == (code, status, False, True)
    assert f"HTTP {status}" in exc.detail


def test_same_reference_other_parameters_is_an_idempotency_mismatch(
    psps: dict[str, PspConfig],
) -> None:
    async def go(c: SimulatorConnector) -> PspCallError:
        o = order("card_4242424242424242")
        await c.create_token(o)
        return await failure(c.create_token(order(o.instrument, merchant_reference=o.merchant_reference, amount="1.00")))  # fmt: skip

    exc = with_connector(psps["cardco"], go)
    assert (exc.code, exc.http_status, exc.retryable) == ("idempotency_mismatch", 409, False)


# --- execute and status ----------------------------------------------------------------------


def test_succeeded_then_already_executed(psps: dict[str, PspConfig]) -> None:
    async def go(c: SimulatorConnector) -> tuple[PspAnswer, PspAnswer, PspAnswer, PspAnswer]:
        token = (await c.create_token(order("card_4242424242424242"))).token
        before = await c.get_status(token)
        return before, await c.execute(token), await c.execute(token), await c.get_status(token)

    before, first, again, status = with_connector(psps["cardco"], go)
    assert (before.status, before.definitive, before.psp_reference) == ("created", False, None)
    assert (first.status, first.http_status, first.already_executed) == ("succeeded", 200, False)
    assert first.psp_reference and first.code is None and first.definitive
    assert (again.status, again.already_executed, again.psp_reference) == (
        "succeeded",
        True,
        first.psp_reference,
    )
    assert (status.status, status.http_status, status.psp_reference) == (
        "succeeded",
        200,
        first.psp_reference,
    )


@pytest.mark.parametrize(
    ("psp", "instrument", "option", "code"),
    [
        ("cardco", "card_4000000000000002", "card", "card_declined"),
        ("cardco", "card_4000000000009995", "card", "insufficient_funds"),
        ("cardco", "card_123", "card", "invalid_instrument"),
        ("walletco", "paypal_declined@example.com", "paypal", "payment_declined"),
        ("backupcard", "card_4000000000000002", "card", "card_declined"),
    ],
)
def test_declines_carry_their_code(
    psps: dict[str, PspConfig], psp: str, instrument: str, option: str, code: str
) -> None:
    async def go(c: SimulatorConnector) -> PspAnswer:
        return await c.execute((await c.create_token(order(instrument, option))).token)

    answer = with_connector(psps[psp], go)
    assert (answer.status, answer.http_status, answer.code) == ("declined", 402, code)
    assert answer.definitive


def test_flaky_instrument_answers_500_twice_then_succeeds(psps: dict[str, PspConfig]) -> None:
    async def go(c: SimulatorConnector) -> tuple[list[PspCallError], PspAnswer]:
        token = (await c.create_token(order("card_4000000000000119"))).token
        errors = [await failure(c.execute(token)) for _ in range(2)]
        return errors, await c.execute(token)

    errors, answer = with_connector(psps["cardco"], go)
    for exc in errors:
        assert (exc.code, exc.http_status, exc.retryable, exc.sent) == (
            "internal_error",
            500,
            True,
            True,
        )
    assert (answer.status, answer.already_executed) == ("succeeded", False)


def test_dropped_connection_after_the_charge_is_outcome_unknown(
    psps: dict[str, PspConfig],
) -> None:
    async def go(c: SimulatorConnector) -> tuple[PspCallError, PspAnswer]:
        token = (await c.create_token(order("card_4000000000000259"))).token
        return await failure(c.execute(token)), await c.execute(token)

    exc, answer = with_connector(psps["cardco"], go)
    assert (exc.code, exc.http_status, exc.retryable, exc.sent) == (
        "connection_dropped",
        None,
        True,
        True,
    )
    assert (answer.status, answer.already_executed) == ("succeeded", True)


def test_held_response_times_out_as_outcome_unknown(psps: dict[str, PspConfig]) -> None:
    assert psps["cardco"].timeout_ms == 1000

    async def go(c: SimulatorConnector) -> tuple[PspCallError, PspAnswer]:
        token = (await c.create_token(order("card_4000000000000341"))).token
        return await failure(c.execute(token)), await c.execute(token)

    exc, answer = with_connector(psps["cardco"], go)
    assert (exc.code, exc.retryable, exc.sent) == ("timeout", True, True)
    assert 0.9 < exc.latency_us / 1e6 < HANG_S * 0.9  # the client gave up, not the server
    assert (answer.status, answer.already_executed) == ("succeeded", True)


def test_unknown_token_is_final(psps: dict[str, PspConfig]) -> None:
    async def go(c: SimulatorConnector) -> tuple[PspCallError, PspCallError]:
        return await failure(c.execute("tok_nope")), await failure(c.get_status("tok_/../x"))

    for exc in with_connector(psps["cardco"], go):
        assert (exc.code, exc.http_status, exc.retryable) == ("token_not_found", 404, False)


def test_asynchronous_psp_is_pending_then_definitive(psps: dict[str, PspConfig]) -> None:
    async def go(c: SimulatorConnector) -> tuple[PspAnswer, PspAnswer, PspAnswer]:
        ok = (await c.create_token(order("bank_DE89370400440532013000", "bank_account"))).token
        closed = (await c.create_token(order("bank_DE62370400440532013001", "bank_account"))).token
        pending = await c.execute(ok)
        await c.execute(closed)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done = await c.get_status(ok), await c.get_status(closed)
            if all(a.definitive for a in done):
                return pending, *done
            await asyncio.sleep(0.25)
        raise AssertionError("bankco did not complete in 10 s")

    pending, ok, closed = with_connector(psps["bankco"], go)
    assert (pending.status, pending.http_status, pending.definitive) == ("pending", 202, False)
    assert (ok.status, ok.psp_reference) == ("succeeded", pending.psp_reference)
    assert (closed.status, closed.code) == ("declined", "account_closed")


def test_outage_is_retryable_with_retry_after(sim: Simulator, psps: dict[str, PspConfig]) -> None:
    admin = f"{sim.url('walletco')}/v1/admin/outage"
    httpx.post(admin, json={"seconds": 30}).raise_for_status()
    try:

        async def go(c: SimulatorConnector) -> PspCallError:
            return await failure(c.create_token(order("paypal_ok@example.com", "paypal")))

        exc = with_connector(psps["walletco"], go)
    finally:
        httpx.post(admin, json={"seconds": 0}).raise_for_status()
    assert (exc.code, exc.http_status, exc.retryable) == ("psp_unavailable", 503, True)
    assert exc.retry_after_s is not None and 25 <= exc.retry_after_s <= 30


def test_nothing_listening_is_refused_and_never_sent(psps: dict[str, PspConfig]) -> None:
    port = free_port_base(1)
    closed = PspConfig(**{**_fields(psps["cardco"]), "base_url": f"http://127.0.0.1:{port}"})

    async def go(c: SimulatorConnector) -> PspCallError:
        return await failure(c.execute("tok_x"))

    exc = with_connector(closed, go)
    assert (exc.code, exc.http_status, exc.retryable, exc.sent) == (
        "connection_refused",
        None,
        True,
        False,
    )


def test_capabilities(psps: dict[str, PspConfig]) -> None:
    caps = with_connector(psps["bankco"], lambda c: c.capabilities())
    assert (caps.psp, caps.payment_options, caps.asynchronous) == (
        "bankco",
        ("bank_account",),
        True,
    )
    assert set(caps.currencies) == set(psps["bankco"].currencies)


# --- webhooks --------------------------------------------------------------------------------


def _fields(p: PspConfig) -> dict[str, Any]:
    return {f: getattr(p, f) for f in p.__dataclass_fields__}


def _signed(secret_file: Path, body: str, at: datetime, event_id: str = "evt_1") -> dict[str, str]:
    signature = Webhook(secret_file.read_text().strip()).sign(event_id, at, body)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def test_real_webhooks_verify_and_parse(
    sim: Simulator, receiver: WebhookReceiver, psps: dict[str, PspConfig]
) -> None:
    async def go(c: SimulatorConnector) -> str:
        token = (await c.create_token(order("bank_DE89370400440532013000", "bank_account"))).token
        await c.execute(token)
        return token

    token = with_connector(psps["bankco"], go)
    deliveries = wait_until(lambda: receiver.for_token(token), 10, "the pending webhook")
    connector = SimulatorConnector(psps["bankco"])
    event = connector.parse_webhook(deliveries[0].headers, deliveries[0].body.encode())
    assert (event.type, event.status, event.token) == ("payment.pending", "pending", token)
    assert event.event_id == deliveries[0].headers["webhook-id"]
    assert event.psp_reference and event.occurred_at.endswith("Z")

    # A tampered redelivery of the same event is refused.
    n = len(receiver.for_token(token))
    httpx.post(
        f"{sim.url('bankco')}/v1/admin/webhooks/redeliver",
        json={"event_id": event.event_id, "tamper": True},
    ).raise_for_status()
    tampered = wait_until(lambda: receiver.for_token(token)[n:], 10, "the tampered redelivery")
    with pytest.raises(WebhookRejected) as info:
        connector.parse_webhook(tampered[0].headers, tampered[0].body.encode())
    assert info.value.code == "bad_signature"


def test_webhook_refusals(psps: dict[str, PspConfig]) -> None:
    psp = psps["bankco"]
    assert psp.webhook_secret_file is not None
    connector = SimulatorConnector(psp)
    body = json.dumps(
        {
            "type": "payment.succeeded",
            "timestamp": "2025-03-04T10:00:02.789Z",
            "data": {"token": "tok_1", "merchant_reference": "po-1", "status": "succeeded",
                     "code": None, "psp_reference": "R1"},
        }
    )  # fmt: skip
    now = datetime.now(UTC)
    ok = connector.parse_webhook(_signed(psp.webhook_secret_file, body, now), body.encode())
    assert (ok.status, ok.merchant_reference, ok.psp_reference) == ("succeeded", "po-1", "R1")

    def refused(headers: dict[str, str], raw: str = body) -> str:
        with pytest.raises(WebhookRejected) as info:
            connector.parse_webhook(headers, raw.encode())
        return info.value.code

    secret = psp.webhook_secret_file
    assert refused(_signed(secret, body, now - timedelta(minutes=6))) == "timestamp_too_old"
    assert refused(_signed(secret, body, now + timedelta(minutes=6))) == "timestamp_too_new"
    assert refused({}) == "missing_headers"
    assert refused({**_signed(secret, body, now), "webhook-timestamp": "soon"}) == "bad_timestamp"
    assert (
        refused({**_signed(secret, body, now), "webhook-signature": "garbage"}) == "bad_signature"
    )
    assert refused(_signed(secret, body, now), body.replace("po-1", "po-2")) == "bad_signature"
    for bad in ("[]", "{}", body.replace("payment.succeeded", "payment.refunded"),
                body.replace('"status": "succeeded"', '"status": "declined"')):  # fmt: skip
        assert refused(_signed(secret, bad, now), bad) == "malformed_body"
    no_secret = SimulatorConnector(PspConfig(**{**_fields(psp), "webhook_secret_file": None}))
    with pytest.raises(WebhookRejected) as info:
        no_secret.parse_webhook(_signed(secret, body, now), body.encode())
    assert info.value.code == "no_secret"


# --- the handler: one call per request, retries through the (emulated) delay topics ---------


def request(kind: str, psp: str, instrument: str, option: str = "card", **kw: Any) -> PspRequest:
    reference = kw.pop("order", None) or ref()
    fields: dict[str, Any] = {
        "request_id": f"{reference}/1/{kind}",
        "payment_id": reference,
        "payment_order_id": reference,
        "attempt": 1,
        "kind": kind,
        "psp": psp,
        "token": None,
        "direction": "pay_in",
        "amount": "5.00",
        "currency": "USD",
        "payment_option": option,
        "instrument": instrument,
        "ts": 0,
    }
    fields.update(kw)
    return PspRequest(**{**fields, "record": fields})


class FakeOutbox:
    """Records what the handler writes; a retry is parsed back like the executor reads it
    from the delay topic (its ``not_before`` kept, to be checked, not waited for)."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.retries: list[tuple[str, dict[str, Any]]] = []
        self.dead_letters: list[dict[str, Any]] = []

    async def result(self, record: dict[str, Any]) -> None:
        CODEC.encode("PspResult", record)
        self.results.append(record)

    async def retry(self, record: dict[str, Any], key: str, topic: str) -> None:
        CODEC.encode("PspRequest", record)
        self.retries.append((topic, record))

    async def dead(self, record: dict[str, Any]) -> None:
        CODEC.encode("PspDeadLetter", record)
        self.dead_letters.append(record)

    def encode_request(self, record: dict[str, Any]) -> bytes:
        return CODEC.encode("PspRequest", record)


def handle_all(
    psps: dict[str, PspConfig],
    requests: list[PspRequest],
    outbox: FakeOutbox | None = None,
    **limits: Any,
) -> list[dict[str, Any]]:
    """Run requests one after the other (each may use the previous result's token); a retried
    request is run again at once (the delay topic's wait is the executor's, not tested here)."""
    box = outbox or FakeOutbox()

    async def main() -> None:
        lim = ExecutorLimits(**limits)
        connectors = {name: SimulatorConnector(p, lim) for name, p in psps.items()}
        board = BreakerBoard(connectors, lim, "psp-executor-t", lambda t: None)
        handler = RequestHandler(connectors, box, board, lim, executor="psp-executor-t")
        try:
            for r in requests:
                if r.kind != "create_token" and r.token is None:
                    token = box.results[-1]["token"]
                    r = PspRequest(**{**_req_fields(r), "token": token, "record": {**r.record, "token": token}})  # fmt: skip
                await handler.handle(r)
                while box.retries and len(box.retries) < 20:
                    _, record = box.retries[-1]
                    again = parse_request("PspRequest", record, connectors)
                    before = len(box.retries)
                    await handler.handle(again)
                    if len(box.retries) == before:
                        break
        finally:
            for c in connectors.values():
                await c.aclose()

    asyncio.run(main())
    return box.results


def _req_fields(r: PspRequest) -> dict[str, Any]:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}


def test_handler_retries_execute_through_the_delay_topics_on_the_same_token(
    psps: dict[str, PspConfig],
) -> None:
    o = ref()
    box = FakeOutbox()
    results = handle_all(
        psps,
        [request("create_token", "cardco", "card_4000000000000119", order=o),
         request("execute", "cardco", "card_4000000000000119", order=o)],
        box,
    )  # fmt: skip
    created, answered = results
    assert created["kind"] == "token_created" and created["http_status"] == 201
    assert (answered["kind"], answered["status"], answered["source"]) == (
        "answered",
        "succeeded",
        "executor",
    )
    assert answered["token"] == created["token"] and answered["psp_reference"]
    assert "after 3 attempts" in answered["detail"]
    # Two retries, each through a delay topic, with backoff and the failure in the history.
    (t1, r1), (t2, r2) = box.retries
    assert (r1["tries"], r2["tries"]) == (1, 2) and t1 == t2 == "psp_retry_5s"
    assert r1["token"] == r2["token"] == created["token"]
    assert [h["code"] for h in r2["history"]] == ["internal_error", "internal_error"]
    assert r2["not_before"] - r2["history"][-1]["at"] >= 0.8 * 2_000_000  # 2 s, jittered
    assert r1["first_tried_at"] == r2["first_tried_at"]


def test_an_outage_is_retried_after_retry_after_then_dead_lettered_and_unknown(
    sim: Simulator, psps: dict[str, PspConfig]
) -> None:
    o = ref()
    token = handle_all(psps, [request("create_token", "backupcard", "card_4242424242424242", order=o)])[0]["token"]  # fmt: skip
    admin = f"{sim.url('backupcard')}/v1/admin/outage"
    httpx.post(admin, json={"seconds": 30}).raise_for_status()
    box = FakeOutbox()
    try:
        (unknown,) = handle_all(
            psps,
            [request("execute", "backupcard", "card_4242424242424242", order=o, token=token)],
            box,
            retry_attempts_max=3,
        )
    finally:
        httpx.post(admin, json={"seconds": 0}).raise_for_status()
    # Retry-After (about 30 s) is honoured: longer than the backoff.
    (_, first), (_, _second) = box.retries
    assert first["not_before"] - first["history"][0]["at"] >= 25_000_000
    (dead,) = box.dead_letters
    assert (dead["kind"], dead["tries"], dead["token"]) == ("execute", 3, token)
    assert [h["code"] for h in dead["history"]] == ["psp_unavailable"] * 3
    assert "retries exhausted" in dead["reason"]
    assert (unknown["kind"], unknown["status"], unknown["retryable"], unknown["code"]) == (
        "answered",
        "unknown",
        True,
        "psp_unavailable",
    )
    assert unknown["http_status"] == 503 and "retries exhausted" in unknown["detail"]
    # The token was never executed: a poll says so ("unknown", not_executed); the janitor's
    # resolve executes it (the same token) and answers definitively.
    (status,) = handle_all(
        psps, [request("status", "backupcard", "card_4242424242424242", order=o, token=token, check=1)]
    )  # fmt: skip
    assert (status["status"], status["code"], status["source"], status["check"]) == (
        "unknown",
        "not_executed",
        "poll",
        1,
    )
    (resolved,) = handle_all(
        psps, [request("resolve", "backupcard", "card_4242424242424242", order=o, token=token, check=2)]
    )  # fmt: skip
    assert (resolved["status"], resolved["source"], resolved["check"]) == (
        "succeeded",
        "janitor",
        2,
    )
    assert "never executed" in resolved["detail"]


def test_an_ambiguous_execute_is_unknown_at_once_and_the_janitor_finds_the_charge(
    psps: dict[str, PspConfig],
) -> None:
    o = ref()
    box = FakeOutbox()
    created, unknown = handle_all(
        psps,
        [request("create_token", "cardco", "card_4000000000000259", order=o),
         request("execute", "cardco", "card_4000000000000259", order=o)],
        box,
    )  # fmt: skip
    assert not box.retries and not box.dead_letters  # never executed again at once
    assert (unknown["status"], unknown["code"], unknown["retryable"]) == (
        "unknown",
        "connection_dropped",
        True,
    )
    (resolved,) = handle_all(
        psps,
        [request("resolve", "cardco", "card_4000000000000259", order=o, token=created["token"], check=1)],
    )  # fmt: skip
    assert (resolved["status"], resolved["source"]) == ("succeeded", "janitor")
    assert resolved["psp_reference"]


def test_handler_token_failures_and_final_execute_errors(psps: dict[str, PspConfig]) -> None:
    failed, missing = handle_all(
        psps,
        [request("create_token", "cardco", "card_4242424242424242", currency="SEK"),
         request("execute", "cardco", "card_4242424242424242", token="tok_missing")],
    )  # fmt: skip
    assert (failed["kind"], failed["code"], failed["retryable"], failed["http_status"]) == (
        "token_failed",
        "unsupported_currency",
        False,
        400,
    )
    assert (missing["status"], missing["code"], missing["retryable"]) == (
        "unknown",
        "token_not_found",
        False,
    )


def test_a_token_failure_falls_back_at_once_unless_this_psp_is_the_last(
    sim: Simulator, psps: dict[str, PspConfig]
) -> None:
    admin = f"{sim.url('walletco')}/v1/admin/outage"
    httpx.post(admin, json={"seconds": 30}).raise_for_status()
    try:
        box = FakeOutbox()
        (now,) = handle_all(
            psps,
            [request("create_token", "walletco", "paypal_ok@example.com", "paypal", fallback=True)],
            box,
        )
        assert (now["kind"], now["code"], now["retryable"]) == (
            "token_failed",
            "psp_unavailable",
            True,
        )
        assert not box.retries
        last = FakeOutbox()
        (late,) = handle_all(
            psps,
            [request("create_token", "walletco", "paypal_ok@example.com", "paypal")],
            last,
            retry_attempts_max=2,
        )
        assert len(last.retries) == 1 and len(last.dead_letters) == 1
        assert late["kind"] == "token_failed" and "retries exhausted" in late["detail"]
    finally:
        httpx.post(admin, json={"seconds": 0}).raise_for_status()


def test_a_pending_payment_is_answered_pending_and_polled_by_status(
    psps: dict[str, PspConfig],
) -> None:
    o = ref()
    results = handle_all(
        psps,
        [request("create_token", "bankco", "bank_DE89370400440532013000", "bank_account", order=o),
         request("execute", "bankco", "bank_DE89370400440532013000", "bank_account", order=o)],
    )  # fmt: skip
    _, pending = results
    assert (pending["status"], pending["source"], pending["http_status"]) == (
        "pending",
        "executor",
        202,
    )
    deadline = time.monotonic() + 15
    while True:
        (poll,) = handle_all(
            psps,
            [request("status", "bankco", "bank_DE89370400440532013000", "bank_account",
                     order=o, token=pending["token"], check=1)],
        )  # fmt: skip
        if poll["status"] != "pending" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (poll["status"], poll["source"], poll["http_status"]) == ("succeeded", "poll", 200)
    assert poll["psp_reference"] == pending["psp_reference"]
