"""The executor's records: ``PspRequest`` in (validated), ``PspResult``, retried requests and
``PspDeadLetter`` out (built).

Schemas: ``schemas/PspRequest.avsc``, ``PspResult.avsc``, ``PspDeadLetter.avsc``.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from connectors.psp.errors import BadRequest, PspCallError
from schemas import now_micros

REQUEST_SCHEMA: Final = "PspRequest"
RESULT_SCHEMA: Final = "PspResult"
DEAD_LETTER_SCHEMA: Final = "PspDeadLetter"

RequestKind = Literal["create_token", "execute", "status", "resolve"]
REQUEST_KINDS: Final[tuple[RequestKind, ...]] = ("create_token", "execute", "status", "resolve")
# PspResult.kind and .source values the executor writes.
ResultKind = Literal["token_created", "token_failed", "answered"]
Source = Literal["executor", "poll", "janitor"]
# PspResult.status values the executor writes ("unknown": no definitive answer).
ResultStatus = Literal["succeeded", "declined", "pending", "unknown"]
# The executor's own code for a token request refused by an open circuit breaker.
CIRCUIT_OPEN: Final = "circuit_open"
# A status answer's code when the token was never executed (no money moved).
NOT_EXECUTED: Final = "not_executed"


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
    check: int = 0
    fallback: bool = False
    not_before: int | None = None
    tries: int = 0
    first_tried_at: int | None = None
    history: tuple[dict[str, Any], ...] = ()
    record: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def source(self) -> Source:
        """Who asks, as the results say: the order's own calls, the poller or the janitor."""
        if self.kind == "status":
            return "poll"
        if self.kind == "resolve":
            return "janitor"
        return "executor"

    def describe(self) -> str:
        """How a log line names it: payment, order, attempt, PSP."""
        check = f" check={self.check}" if self.check else ""
        return (
            f"payment={self.payment_id} order={self.payment_order_id} attempt={self.attempt} "
            f"psp={self.psp}{check}"
        )

    def retried(
        self, failure: dict[str, Any], not_before_us: int, now_us: int, history_max: int
    ) -> dict[str, Any]:
        """This request's record for its next call: one more try, the failure in its history."""
        history = [*self.history, failure][-history_max:]
        return {
            **self.record,
            "tries": self.tries + 1,
            "first_tried_at": self.first_tried_at or now_us,
            "not_before": not_before_us,
            "history": history,
        }


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
    for name in ("request_id", "payment_id", "payment_order_id"):
        if not record[name]:
            raise BadRequest("invalid_field", f"{name} is empty")
    if record["attempt"] < 1:
        raise BadRequest("invalid_field", f"attempt must be 1 or more, got {record['attempt']}")
    check, tries = record.get("check", 0), record.get("tries", 0)
    if check < 0 or tries < 0:
        raise BadRequest("invalid_field", f"check and tries must be 0 or more: {check}, {tries}")
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
        check=check,
        fallback=record.get("fallback", False),
        not_before=record.get("not_before"),
        tries=tries,
        first_tried_at=record.get("first_tried_at"),
        history=tuple(record.get("history") or ()),
        record=record,
    )


def failure_entry(exc: PspCallError, executor: str, at_us: int, detail_max: int) -> dict[str, Any]:
    """One failed call, as a request's history keeps it."""
    return {
        "at": at_us,
        "executor": executor,
        "code": exc.code,
        "http_status": exc.http_status,
        "retryable": exc.retryable,
        "sent": exc.sent,
        "latency_us": exc.latency_us,
        "detail": exc.detail[:detail_max],
    }


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
        "check": request.check,
        "ts": now_micros(),
    }


def dead_letter_record(
    request: PspRequest,
    encoded: bytes,
    history: list[dict[str, Any]],
    *,
    tries: int,
    reason: str,
    now_us: int,
) -> dict[str, Any]:
    """A ``PspDeadLetter``: the request as it was last retried, with every failed call."""
    first = request.first_tried_at or now_us
    return {
        "dead_letter_id": f"{request.request_id}@{first}",
        "request_id": request.request_id,
        "payment_id": request.payment_id,
        "payment_order_id": request.payment_order_id,
        "attempt": request.attempt,
        "kind": request.kind,
        "psp": request.psp,
        "token": request.token,
        "reason": reason,
        "tries": tries,
        "first_tried_at": first,
        "dead_at": now_us,
        "replayed_at": None,
        "request": encoded,
        "history": history,
    }
