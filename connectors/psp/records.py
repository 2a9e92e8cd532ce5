"""The executor's records: ``PspRequest`` in (validated), ``PspResult`` out (built).

Schemas: ``schemas/PspRequest.avsc`` and ``schemas/PspResult.avsc``.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from connectors.psp.errors import BadRequest
from schemas import now_micros

REQUEST_SCHEMA: Final = "PspRequest"
RESULT_SCHEMA: Final = "PspResult"

RequestKind = Literal["create_token", "execute", "status"]
REQUEST_KINDS: Final[tuple[RequestKind, ...]] = ("create_token", "execute", "status")
# PspResult.kind and .source values the executor writes.
ResultKind = Literal["token_created", "token_failed", "answered"]
Source = Literal["executor", "poll"]
# PspResult.status values the executor writes ("unknown": no definitive answer).
ResultStatus = Literal["succeeded", "declined", "pending", "unknown"]


@dataclass(frozen=True, slots=True)
class PspRequest:
    request_id: str
    payment_id: str
    payment_order_id: str
    attempt: int
    kind: RequestKind
    psp: str
    token: str | None
    direction: str
    amount: str
    currency: str
    payment_option: str
    instrument: str
    ts: int

    def describe(self) -> str:
        """How a log line names it: payment, order, attempt, PSP."""
        return (
            f"payment={self.payment_id} order={self.payment_order_id} attempt={self.attempt} "
            f"psp={self.psp}"
        )


def parse_request(schema: str, record: Mapping[str, Any], psps: Container[str]) -> PspRequest:
    """A decoded record as a request this executor can work on, or ``BadRequest``."""
    if schema != REQUEST_SCHEMA:
        raise BadRequest("unexpected_record", f"a {schema} record, not a {REQUEST_SCHEMA}")
    kind = record["kind"]
    kinds: tuple[str, ...] = REQUEST_KINDS
    if kind not in kinds:
        raise BadRequest("unknown_kind", f"kind {kind!r} is not one of {', '.join(kinds)}")
    if record["psp"] not in psps:
        raise BadRequest("unknown_psp", f"no PSP named {record['psp']!r} in psps.toml")
    for field in ("request_id", "payment_id", "payment_order_id"):
        if not record[field]:
            raise BadRequest("invalid_field", f"{field} is empty")
    if record["attempt"] < 1:
        raise BadRequest("invalid_field", f"attempt must be 1 or more, got {record['attempt']}")
    token = record.get("token")
    if kind != "create_token" and not token:
        raise BadRequest("missing_token", f"a {kind} request needs the token")
    return PspRequest(
        request_id=record["request_id"],
        payment_id=record["payment_id"],
        payment_order_id=record["payment_order_id"],
        attempt=record["attempt"],
        kind=kind,
        psp=record["psp"],
        token=token,
        direction=record["direction"],
        amount=record["amount"],
        currency=record["currency"],
        payment_option=record["payment_option"],
        instrument=record["instrument"],
        ts=record["ts"],
    )


def result_record(
    request: PspRequest,
    kind: ResultKind,
    source: Source,
    *,
    token: str | None = None,
    status: ResultStatus | None = None,
    code: str | None = None,
    psp_reference: str | None = None,
    retryable: bool = False,
    http_status: int | None = None,
    latency_us: int | None = None,
    detail: str | None = None,
) -> dict[str, Any]:
    """A ``PspResult`` answering ``request``, observed now."""
    return {
        "payment_id": request.payment_id,
        "payment_order_id": request.payment_order_id,
        "attempt": request.attempt,
        "psp": request.psp,
        "kind": kind,
        "token": token if token is not None else request.token,
        "status": status,
        "code": code,
        "psp_reference": psp_reference,
        "retryable": retryable,
        "http_status": http_status,
        "latency_us": latency_us,
        "detail": detail,
        "event_id": None,
        "source": source,
        "ts": now_micros(),
    }
