"""One PSP's HTTP API (aiohttp): routes, the error shape, outage and latency, the test
instruments' misbehaviour on the wire (dropped connection, held response)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from pspsim.clock import iso_from_epoch
from pspsim.config import LIMITS, Limits
from pspsim.delivery import Deliverer
from pspsim.engine import PspEngine
from pspsim.errors import ApiError, bad_request
from pspsim.instruments import Behavior
from pspsim.settlement import parse_day, settlement_rows, to_csv

log = logging.getLogger("pspsim.server")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ADMIN_PREFIX = "/v1/admin/"
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


async def read_json(request: web.Request, limits: Limits) -> object:
    """The body as JSON, or a 4xx ApiError (never a 500) for anything malformed or too big."""
    if request.content_length is not None and request.content_length > limits.body_max_bytes:
        raise ApiError(
            413, "body_too_large", f"bodies are limited to {limits.body_max_bytes} bytes"
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(
            413, "body_too_large", f"bodies are limited to {limits.body_max_bytes} bytes"
        ) from None
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        text = f"the body is not valid JSON: {e}"[: limits.error_text_max_chars]
        raise bad_request("invalid_json", text) from None


def _number(body: dict[str, object], name: str, low: float, high: float) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request("invalid_field", f"{name} must be a number", name)
    if not (math.isfinite(value) and low <= value <= high):
        raise bad_request("invalid_field", f"{name} must be in {low:g}..{high:g}", name)
    return float(value)


def _object(body: object) -> dict[str, object]:
    if not isinstance(body, dict):
        raise bad_request("invalid_body", "the body must be a JSON object")
    return body


class PspServer:
    def __init__(
        self,
        engine: PspEngine,
        deliverer: Deliverer,
        *,
        latency_ms: int,
        hang_s: float,
        limits: Limits = LIMITS,
    ) -> None:
        self.engine = engine
        self.deliverer = deliverer
        self.latency_ms = latency_ms
        self.hang_s = hang_s
        self.limits = limits
        # Monotonic deadline of the current outage (in memory: an admin knob, not state).
        self.outage_until = 0.0

    @property
    def psp(self) -> str:
        return self.engine.name

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.limits.body_max_bytes, middlewares=[self._middleware]
        )
        app.router.add_get("/v1/health", self.health)
        app.router.add_get("/v1/capabilities", self.capabilities)
        app.router.add_post("/v1/tokens", self.create_token)
        app.router.add_get("/v1/tokens", self.token_by_reference)
        app.router.add_get("/v1/tokens/{token}", self.get_token)
        app.router.add_post("/v1/tokens/{token}/execute", self.execute)
        app.router.add_get("/v1/settlement", self.settlement)
        app.router.add_post("/v1/admin/outage", self.outage)
        app.router.add_post("/v1/admin/latency", self.latency)
        app.router.add_get("/v1/admin/stats", self.stats)
        app.router.add_get("/v1/admin/webhooks", self.webhooks)
        app.router.add_post("/v1/admin/webhooks/redeliver", self.redeliver)
        return app

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if not request.path.startswith(ADMIN_PREFIX):
                if self.latency_ms:
                    await asyncio.sleep(self.latency_ms / 1000)
                remaining_s = self.outage_until - time.monotonic()
                if remaining_s > 0:
                    raise ApiError(503, "psp_unavailable", f"{self.psp} is unavailable")
            return await handler(request)
        except ApiError as e:
            headers = {}
            if e.status == 503:
                remaining_s = self.outage_until - time.monotonic()
                headers["Retry-After"] = str(max(1, math.ceil(remaining_s)))
            return _json(e.body(), e.status, headers)
        except web.HTTPException as e:
            # Routing's 404/405 and aiohttp's own refusals, in our error shape.
            code = _HTTP_CODES.get(e.status, f"http_{e.status}")
            allow = {"Allow": e.headers["Allow"]} if "Allow" in e.headers else None
            return _json(ApiError(e.status, code, e.reason).body(), e.status, allow)
        except Exception:
            log.exception("%s: %s %s failed", self.psp, request.method, request.path)
            return _json(ApiError(500, "internal_error", "unexpected error").body(), 500)

    # --- public API -----------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return _json({"psp": self.psp, "status": "ok"})

    async def capabilities(self, request: web.Request) -> web.Response:
        return _json(self.engine.spec.capabilities())

    async def create_token(self, request: web.Request) -> web.Response:
        status, body = self.engine.create_token(await read_json(request, self.limits))
        return _json(body, status)

    async def token_by_reference(self, request: web.Request) -> web.Response:
        reference = request.query.get("merchant_reference")
        if not reference:
            raise bad_request(
                "missing_field", "merchant_reference is required", "merchant_reference"
            )
        return _json(self.engine.view(self.engine.get_by_reference(reference)))

    async def get_token(self, request: web.Request) -> web.Response:
        return _json(self.engine.view(self.engine.get(request.match_info["token"])))

    async def execute(self, request: web.Request) -> web.StreamResponse:
        ex = self.engine.execute(request.match_info["token"])
        # The charge is committed by now; only the answer misbehaves.
        if ex.then is Behavior.DROP:
            if request.transport is not None:
                request.transport.abort()
            log.info("%s: dropped the connection after charging %s", self.psp, ex.body["token"])
            # Nothing can be written any more; this response goes nowhere.
            return web.Response(status=204)
        if ex.then is Behavior.HANG:
            log.info("%s: holding %s for %g s", self.psp, ex.body["token"], self.hang_s)
            await asyncio.sleep(self.hang_s)
        return _json(ex.body, ex.http_status)

    async def settlement(self, request: web.Request) -> web.Response:
        try:
            day = parse_day(request.query.get("date", ""))
        except ValueError as e:
            raise bad_request("invalid_field", str(e), "date") from None
        rows = settlement_rows(self.engine.store, self.psp, day)
        return web.Response(
            text=to_csv(rows),
            content_type="text/csv",
            headers={
                "Content-Disposition": (
                    f'attachment; filename="{self.psp}-settlement-{day.replace("-", "")}.csv"'
                )
            },
        )

    # --- admin ----------------------------------------------------------------------------

    async def outage(self, request: web.Request) -> web.Response:
        body = _object(await read_json(request, self.limits))
        seconds = _number(body, "seconds", 0, self.limits.outage_max_s)
        self.outage_until = time.monotonic() + seconds
        log.info("%s: outage for %g s", self.psp, seconds)
        return _json({"psp": self.psp, "outage_s": seconds})

    async def latency(self, request: web.Request) -> web.Response:
        body = _object(await read_json(request, self.limits))
        ms = _number(body, "ms", 0, self.limits.latency_max_ms)
        if ms != int(ms):
            raise bad_request("invalid_field", "ms must be a whole number", "ms")
        self.latency_ms = int(ms)
        return _json({"psp": self.psp, "latency_ms": self.latency_ms})

    async def stats(self, request: web.Request) -> web.Response:
        return _json({"psp": self.psp, **self.engine.stats()})

    async def webhooks(self, request: web.Request) -> web.Response:
        store = self.engine.store
        events = []
        for e in store.events(self.psp, request.query.get("token")):
            events.append(
                {
                    "event_id": e.event_id,
                    "type": e.type,
                    "token": e.token,
                    "url": e.url,
                    "state": e.state,
                    "attempts": e.attempts,
                    "next_attempt_at": None
                    if e.next_attempt is None
                    else iso_from_epoch(e.next_attempt),
                    "created_at": e.created_at,
                    "payload": json.loads(e.body),
                    "deliveries": [
                        {
                            "at": d.at,
                            "ok": d.ok,
                            "http_status": d.http_status,
                            "error": d.error,
                            "redelivery": d.redelivery,
                            "tampered": d.tampered,
                        }
                        for d in store.deliveries(e.event_id)
                    ],
                }
            )
        return _json({"psp": self.psp, "events": events})

    async def redeliver(self, request: web.Request) -> web.Response:
        body = _object(await read_json(request, self.limits))
        event_id = body.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            raise bad_request("invalid_field", "event_id must be a string", "event_id")
        tamper = body.get("tamper", False)
        if not isinstance(tamper, bool):
            raise bad_request("invalid_field", "tamper must be true or false", "tamper")
        delay_ms = (
            int(_number(body, "delay_ms", 0, self.limits.redeliver_delay_max_ms))
            if ("delay_ms" in body)
            else 0
        )
        event = self.engine.store.event(self.psp, event_id)
        if event is None:
            raise ApiError(
                404, "event_not_found", f"no event {event_id!r} at {self.psp}", "event_id"
            )
        if event.url is None:
            raise ApiError(409, "no_webhook_url", "this event has no webhook URL to send it to")
        self.deliverer.redeliver(event, tamper=tamper, delay_ms=delay_ms)
        return _json(
            {"event_id": event_id, "scheduled": True, "tamper": tamper, "delay_ms": delay_ms}, 202
        )
