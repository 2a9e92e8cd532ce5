"""The scheduler's payment API client (paystream/scheduler_sender.py) against a real HTTP
server on loopback: what each answer of the payment API means to the scheduler."""

from __future__ import annotations

import asyncio

from aiohttp import web

from ops.ports import free_port_base
from paystream.scheduler_sender import PaymentApiSender
from streams.scheduler.submit import ADMITTED, REFUSED, RETRY, Job

# payment id -> (status, body) the stand-in payment API answers
ANSWERS: dict[str, tuple[int, object]] = {
    "sched-new": (201, {"payment_id": "sched-new"}),
    "sched-exists": (409, {"error": "payment_exists"}),
    "sched-reused": (422, {"error": "idempotency_key_reused"}),
    "sched-bad": (400, {"error": "invalid_amount"}),
    "sched-busy": (409, {"error": "request_in_progress"}),
    "sched-down": (503, "not json"),
    "sched-auth": (401, {"error": "unauthorized"}),
}


def _job(payment_id: str) -> Job:
    return Job("s1", 0, 0, False, {"payment_id": payment_id, "amount": "1.00"})


async def _run() -> tuple[dict[str, tuple[str, str | None, int | None]], list[tuple[str, str]]]:
    seen: list[tuple[str, str]] = []

    async def pay(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append((request.headers["Idempotency-Key"], request.headers["Authorization"]))
        status, answer = ANSWERS[body["payment_id"]]
        if isinstance(answer, str):
            return web.Response(status=status, text=answer)
        return web.json_response(answer, status=status)

    app = web.Application()
    app.add_routes([web.post("/payments/payment/v1", pay)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port_base(1)
    await web.TCPSite(runner, "127.0.0.1", port).start()
    sender = PaymentApiSender(f"http://127.0.0.1:{port}", "tok", 4, 5.0)
    try:
        out = {}
        for pid in ANSWERS:
            a = await sender.send(_job(pid))
            out[pid] = (a.outcome, a.code, a.status)
    finally:
        await sender.aclose()
    # nothing listens any more: a lost connection is retried
    closed = PaymentApiSender(f"http://127.0.0.1:{port}", "tok", 4, 5.0)
    await runner.cleanup()
    try:
        gone = await closed.send(_job("sched-new"))
        out["gone"] = (gone.outcome, gone.code, gone.status)
    finally:
        await closed.aclose()
    return out, seen


def test_answers_of_the_payment_api() -> None:
    out, seen = asyncio.run(_run())
    assert out["sched-new"] == (ADMITTED, None, 201)
    assert out["sched-exists"] == (ADMITTED, "payment_exists", 409)
    assert out["sched-reused"] == (ADMITTED, "idempotency_key_reused", 422)
    assert out["sched-bad"] == (REFUSED, "invalid_amount", 400)
    assert out["sched-busy"] == (RETRY, "request_in_progress", 409)
    assert out["sched-down"] == (RETRY, None, 503)
    assert out["sched-auth"] == (RETRY, "unauthorized", 401)
    assert out["gone"][0] == RETRY and out["gone"][2] is None
    assert seen == [(pid, "Bearer tok") for pid in ANSWERS]
