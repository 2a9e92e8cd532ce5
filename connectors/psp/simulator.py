"""The connector of the PSP simulator's HTTP API (docs/psp-simulator.md), over httpx.

Answers are mapped precisely, and a failure's class depends on whether the request can have
reached the PSP: a refused connection or no free connection never sent anything
(``sent=False``), while a timeout or a dropped connection after sending leaves the outcome
unknown (for execute: maybe charged; never "declined").
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import quote

import httpx
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from connectors.psp.base import (
    AnswerStatus,
    Capabilities,
    ErrorTable,
    PspAnswer,
    TokenOrder,
    TokenResult,
    WebhookEvent,
)
from connectors.psp.config import PspConfig
from connectors.psp.errors import PspCallError, WebhookRejected
from connectors.psp.http import HttpPool
from connectors.psp.limits import ExecutorLimits

# Every code the simulator (or the wire under it) can give, classed. Declines arrive as
# answers, not errors, but are classed too: a caller must never retry them.
SIMULATOR_ERRORS: Final = ErrorTable(
    retryable=frozenset(
        {
            # the PSP's own
            "psp_unavailable",  # 503 with Retry-After (outage)
            "internal_error",  # 500
            "rate_limited",  # 429 with Retry-After
            "lock_timeout",
            # the wire's (ours)
            "connection_refused",
            "connect_timeout",
            "pool_timeout",
            "timeout",
            "connection_reset",
            "connection_dropped",
            "network_error",
            "bad_response",  # an answer we cannot read: asking again is safe
        }
    ),
    final=frozenset(
        {
            # declines
            "card_declined",
            "insufficient_funds",
            "invalid_instrument",
            "account_closed",
            "payment_declined",
            # requests the PSP will refuse however often they are made
            "invalid_json",
            "invalid_body",
            "missing_field",
            "invalid_field",
            "invalid_amount",
            "unsupported_currency",
            "unsupported_payment_option",
            "token_not_found",
            "event_not_found",
            "not_found",
            "method_not_allowed",
            "idempotency_mismatch",
            "no_webhook_url",
            "body_too_large",
        }
    ),
    # Sent, and no answer we can read: the outcome is unknown (the janitor asks).
    ambiguous=frozenset(
        {"timeout", "connection_reset", "connection_dropped", "network_error", "bad_response"}
    ),
)

_EXECUTE_STATUS: Final[dict[int, AnswerStatus]] = {
    200: "succeeded",
    402: "declined",
    202: "pending",
}
_TOKEN_STATUSES: Final[tuple[AnswerStatus, ...]] = ("created", "pending", "succeeded", "declined")
_WEBHOOK_STATUS: Final[dict[str, AnswerStatus]] = {
    "payment.pending": "pending",
    "payment.succeeded": "succeeded",
    "payment.declined": "declined",
}
_WEBHOOK_ERRORS: Final = (
    ("missing required headers", "missing_headers"),
    ("invalid signature headers", "bad_timestamp"),
    ("too old", "timestamp_too_old"),
    ("too new", "timestamp_too_new"),
    ("no matching signature", "bad_signature"),
)


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    body: dict[str, Any]  # the JSON object, or {} for an error answer without one
    latency_us: int
    retry_after_s: float | None


class SimulatorConnector:
    """One simulated PSP at ``config.base_url``, through its ``HttpPool``."""

    def __init__(self, config: PspConfig, limits: ExecutorLimits | None = None) -> None:
        self.config = config
        self.limits = limits or ExecutorLimits()
        self._http = HttpPool(config.base_url, config.timeout_ms, self.limits)
        self._webhook: Webhook | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def errors(self) -> ErrorTable:
        return SIMULATOR_ERRORS

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- calls ------------------------------------------------------------------------------

    async def capabilities(self) -> Capabilities:
        reply = await self._call("GET", "/v1/capabilities")
        if reply.status != 200:
            raise self._answer_error(reply)
        body = reply.body
        try:
            return Capabilities(
                psp=str(body["psp"]),
                payment_options=tuple(str(o) for o in body["payment_options"]),
                currencies=tuple(str(c) for c in body["currencies"]),
                asynchronous=bool(body["asynchronous"]),
            )
        except (KeyError, TypeError) as exc:
            raise self._unreadable(reply, f"capabilities: {exc!r}") from None

    async def create_token(self, order: TokenOrder) -> TokenResult:
        payload: dict[str, object] = {
            "merchant_reference": order.merchant_reference,
            "direction": order.direction,
            "amount": order.amount,
            "currency": order.currency,
            "payment_option": order.payment_option,
            "instrument": order.instrument,
        }
        if order.webhook_url is not None:
            payload["webhook_url"] = order.webhook_url
        reply = await self._call("POST", "/v1/tokens", payload)
        if reply.status not in (200, 201):
            raise self._answer_error(reply)
        token = reply.body.get("token")
        if not isinstance(token, str) or not token:
            raise self._unreadable(reply, "token answer without a token")
        return TokenResult(token, reply.status == 201, reply.status, reply.latency_us)

    async def execute(self, token: str) -> PspAnswer:
        reply = await self._call("POST", f"/v1/tokens/{_path(token)}/execute")
        expected = _EXECUTE_STATUS.get(reply.status)
        if expected is None:
            raise self._answer_error(reply)
        if reply.body.get("status") != expected:
            raise self._unreadable(
                reply, f"HTTP {reply.status} with status {reply.body.get('status')!r}"
            )
        return _answer(token, expected, reply)

    async def get_status(self, token: str) -> PspAnswer:
        reply = await self._call("GET", f"/v1/tokens/{_path(token)}")
        if reply.status != 200:
            raise self._answer_error(reply)
        current = reply.body.get("status")
        for known in _TOKEN_STATUSES:
            if current == known:
                return _answer(token, known, reply)
        raise self._unreadable(reply, f"unknown token status {current!r}")

    # --- webhooks ---------------------------------------------------------------------------

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Standard Webhooks verification (HMAC-SHA256 with the PSP's secret, 5-minute
        timestamp tolerance: the standardwebhooks package's), then the event's fields."""
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise WebhookRejected("malformed_body", "the body is not UTF-8") from None
        try:
            self._verifier().verify(text, lowered, json_parse=False)
        except WebhookVerificationError as exc:
            message = str(exc).lower()
            code = next((c for text_, c in _WEBHOOK_ERRORS if text_ in message), "bad_signature")
            raise WebhookRejected(code, str(exc)) from None
        except (ValueError, TypeError) as exc:  # a signature header of the wrong shape
            raise WebhookRejected("bad_signature", f"unreadable signature: {exc}") from None
        try:
            doc = json.loads(text)
            data = doc["data"]
            status = _WEBHOOK_STATUS[doc["type"]]
            event = WebhookEvent(
                event_id=lowered["webhook-id"],
                type=doc["type"],
                token=_required_str(data, "token"),
                merchant_reference=_required_str(data, "merchant_reference"),
                status=status,
                code=_optional_str(data, "code"),
                psp_reference=_optional_str(data, "psp_reference"),
                occurred_at=_required_str(doc, "timestamp"),
                sent_at_s=int(lowered["webhook-timestamp"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookRejected("malformed_body", f"not a payment event: {exc!r}") from None
        if data.get("status") != status:
            raise WebhookRejected(
                "malformed_body", f"{doc['type']} with status {data.get('status')!r}"
            )
        return event

    def _verifier(self) -> Webhook:
        # Read once, when the first webhook comes: the simulator writes the secret at start.
        if self._webhook is None:
            path = self.config.webhook_secret_file
            if path is None:
                raise WebhookRejected("no_secret", f"{self.name} has no webhook_secret_file")
            try:
                self._webhook = Webhook(path.read_text().strip())
            except (OSError, ValueError) as exc:
                raise WebhookRejected("no_secret", f"{self.name}: {path}: {exc}") from None
        return self._webhook

    # --- HTTP -------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, payload: object | None = None) -> _Reply:
        """The PSP's answer, whatever its status; a transport failure raises PspCallError."""
        async with self._http.client() as client:
            started = time.perf_counter_ns()
            try:
                response = await client.request(method, path, json=payload)
            except httpx.RequestError as exc:
                latency_us = (time.perf_counter_ns() - started) // 1000
                raise self._transport_error(exc, latency_us) from exc
            latency_us = (time.perf_counter_ns() - started) // 1000
        try:
            body = response.json()
        except ValueError:
            body = None
        reply = _Reply(
            response.status_code,
            body if isinstance(body, dict) else {},
            latency_us,
            _retry_after_s(response.headers.get("retry-after")),
        )
        if not isinstance(body, dict) and 200 <= response.status_code < 300:
            raise self._unreadable(reply, "the body is not a JSON object")
        return reply

    def _transport_error(self, exc: httpx.RequestError, latency_us: int) -> PspCallError:
        # Which failures can have happened after the PSP got the request.
        if isinstance(exc, httpx.ConnectTimeout):
            code, sent = "connect_timeout", False
        elif isinstance(exc, httpx.ConnectError):
            code, sent = "connection_refused", False
        elif isinstance(exc, httpx.PoolTimeout):
            code, sent = "pool_timeout", False
        elif isinstance(exc, httpx.TimeoutException):
            code, sent = "timeout", True
        elif isinstance(exc, httpx.RemoteProtocolError):
            code, sent = "connection_dropped", True
        elif isinstance(exc, httpx.ReadError | httpx.WriteError):
            code, sent = "connection_reset", True
        elif isinstance(exc, httpx.DecodingError):
            code, sent = "bad_response", True
        else:
            code, sent = "network_error", True
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return PspCallError(
            code,
            self._cut(detail),
            retryable=SIMULATOR_ERRORS.is_retryable(code),
            sent=sent,
            latency_us=latency_us,
        )

    def _answer_error(self, reply: _Reply) -> PspCallError:
        status = reply.status
        error = reply.body.get("error")
        code, message = f"http_{status}", ""
        if isinstance(error, dict):
            if isinstance(error.get("code"), str) and error["code"]:
                code = error["code"]
            if isinstance(error.get("message"), str):
                message = error["message"]
        return PspCallError(
            code,
            self._cut(f"HTTP {status}: {message}" if message else f"HTTP {status}"),
            retryable=SIMULATOR_ERRORS.is_retryable(code, status),
            sent=True,
            http_status=status,
            retry_after_s=reply.retry_after_s,
            latency_us=reply.latency_us,
        )

    def _unreadable(self, reply: _Reply, detail: str) -> PspCallError:
        return PspCallError(
            "bad_response",
            self._cut(detail),
            retryable=SIMULATOR_ERRORS.is_retryable("bad_response", reply.status),
            sent=True,
            http_status=reply.status,
            latency_us=reply.latency_us,
        )

    def _cut(self, text: str) -> str:
        return text[: self.limits.detail_chars_max]


def _answer(token: str, status: AnswerStatus, reply: _Reply) -> PspAnswer:
    return PspAnswer(
        token=token,
        status=status,
        code=_optional_str(reply.body, "code"),
        psp_reference=_optional_str(reply.body, "psp_reference"),
        http_status=reply.status,
        latency_us=reply.latency_us,
        already_executed=reply.body.get("already_executed") is True,
    )


def _path(token: str) -> str:
    # A token goes into the URL path: percent-encode anything that could change the route.
    return quote(token, safe="")


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110); None if absent/bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _required_str(doc: Mapping[str, Any], name: str) -> str:
    value = doc[name]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string")
    return value


def _optional_str(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value else None
