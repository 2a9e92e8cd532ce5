"""One PSP's rules: tokens (phase one), execution at most once (phase two), async completion.

Pure of HTTP: the server maps ApiError and Execution to responses. Every state change is one
sqlite transaction, committed before the caller answers anyone.
"""

from __future__ import annotations

import json
import random
import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from pspsim.clock import iso, now
from pspsim.config import LIMITS, Limits
from pspsim.errors import ApiError, bad_request
from pspsim.instruments import Behavior, Outcome, classify
from pspsim.money import AmountError, format_minor, parse_amount
from pspsim.psps import PspSpec
from pspsim.store import ChargeRow, EventRow, Store, TokenRow
from pspsim.webhooks import event_body, new_event_id

DIRECTIONS = ("pay_in", "pay_out")
# Parameters that make two token requests "the same" (idempotency on merchant_reference).
PARAMS = ("direction", "amount_minor", "currency", "payment_option", "instrument", "webhook_url")
HTTP_STATUS = {"succeeded": 200, "declined": 402, "pending": 202}
_REF_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class Execution:
    http_status: int
    body: dict[str, object]
    # DROP or HANG: what the server does after the charge is committed (None: answer).
    then: Behavior | None = None


def _string(
    body: dict[str, object], name: str, max_chars: int, *, optional: bool = False
) -> str | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if value is None:
        raise bad_request("missing_field", f"{name} is required", name)
    if not isinstance(value, str) or not value:
        raise bad_request("invalid_field", f"{name} must be a non-empty string", name)
    if len(value) > max_chars or any(ord(c) < 32 for c in value):
        raise bad_request("invalid_field", f"{name} is too long or has control characters", name)
    return value


def new_psp_reference() -> str:
    return "".join(secrets.choice(_REF_ALPHABET) for _ in range(16))


class PspEngine:
    def __init__(
        self,
        spec: PspSpec,
        store: Store,
        *,
        default_webhook_url: str | None = None,
        seed: int | None = None,
        on_event: Callable[[], None] = lambda: None,
        limits: Limits = LIMITS,
    ) -> None:
        self.spec = spec
        self.store = store
        self.default_webhook_url = default_webhook_url
        self.seed = seed
        self.on_event = on_event
        self.limits = limits

    @property
    def name(self) -> str:
        return self.spec.name

    # --- phase one ------------------------------------------------------------------------

    def create_token(self, body: object) -> tuple[int, dict[str, object]]:
        """201 and the new token, 200 and the same body for a repeat, or an ApiError."""
        if not isinstance(body, dict):
            raise bad_request("invalid_body", "the body must be a JSON object")
        lim = self.limits
        reference = _string(body, "merchant_reference", lim.merchant_reference_max_chars)
        direction = _string(body, "direction", lim.enum_field_max_chars)
        if direction not in DIRECTIONS:
            raise bad_request("invalid_field", "direction must be pay_in or pay_out", "direction")
        currency = _string(body, "currency", lim.enum_field_max_chars)
        if currency not in self.spec.currencies:
            raise bad_request(
                "unsupported_currency", f"{self.name} does not take {currency}", "currency"
            )
        option = _string(body, "payment_option", lim.enum_field_max_chars)
        if option not in self.spec.payment_options:
            raise bad_request(
                "unsupported_payment_option",
                f"{self.name} does not take {option}",
                "payment_option",
            )
        if "amount" not in body:
            raise bad_request("invalid_amount", "amount is required", "amount")
        try:
            amount_minor = parse_amount(body["amount"], currency)
        except AmountError as e:
            raise bad_request("invalid_amount", str(e), "amount") from None
        instrument = _string(body, "instrument", lim.instrument_max_chars)
        webhook_url = _string(body, "webhook_url", lim.webhook_url_max_chars, optional=True)
        if webhook_url is not None and not webhook_url.startswith(("http://", "https://")):
            raise bad_request("invalid_field", "webhook_url must be an http(s) URL", "webhook_url")
        assert reference and currency and option and instrument

        wanted = {
            "direction": direction,
            "amount_minor": amount_minor,
            "currency": currency,
            "payment_option": option,
            "instrument": instrument,
            "webhook_url": webhook_url,
        }
        with self.store.tx():
            existing = self.store.token_by_reference(self.name, reference)
            if existing is not None:
                differ = [p for p in PARAMS if getattr(existing, p) != wanted[p]]
                if differ:
                    names = ["amount" if p == "amount_minor" else p for p in differ]
                    raise ApiError(
                        409,
                        "idempotency_mismatch",
                        f"merchant_reference {reference!r} was used with other parameters"
                        f" ({', '.join(names)})",
                        names[0],
                    )
                return 200, json.loads(existing.created_body)
            token = "tok_" + secrets.token_hex(12)
            created: dict[str, object] = {
                "token": token,
                "merchant_reference": reference,
                "status": "created",
                "direction": direction,
                "amount": format_minor(amount_minor, currency),
                "currency": currency,
                "payment_option": option,
                "instrument": instrument,
                "webhook_url": webhook_url,
            }
            self.store.insert_token(
                TokenRow(
                    token=token,
                    psp=self.name,
                    merchant_reference=reference,
                    direction=direction,
                    amount_minor=amount_minor,
                    currency=currency,
                    payment_option=option,
                    instrument=instrument,
                    webhook_url=webhook_url,
                    created_body=json.dumps(created),
                    status="created",
                    code=None,
                    psp_reference=None,
                    executions=0,
                    charged=False,
                    created_at=iso(now()),
                    executed_at=None,
                    completed_at=None,
                    complete_due=None,
                )
            )
        return 201, created

    # --- reading --------------------------------------------------------------------------

    def get(self, token: str) -> TokenRow:
        t = self.store.token(self.name, token)
        if t is None:
            raise ApiError(404, "token_not_found", f"no token {token!r} at {self.name}", "token")
        return t

    def get_by_reference(self, reference: str) -> TokenRow:
        t = self.store.token_by_reference(self.name, reference)
        if t is None:
            raise ApiError(
                404,
                "token_not_found",
                f"no token for {reference!r} at {self.name}",
                "merchant_reference",
            )
        return t

    @staticmethod
    def view(t: TokenRow) -> dict[str, object]:
        return {
            "token": t.token,
            "merchant_reference": t.merchant_reference,
            "direction": t.direction,
            "amount": format_minor(t.amount_minor, t.currency),
            "currency": t.currency,
            "payment_option": t.payment_option,
            "instrument": t.instrument,
            "webhook_url": t.webhook_url,
            "status": t.status,
            "code": t.code,
            "psp_reference": t.psp_reference,
            "executions": t.executions,
            "charged": t.charged,
            "created_at": t.created_at,
            "executed_at": t.executed_at,
            "completed_at": t.completed_at,
        }

    @staticmethod
    def result(t: TokenRow, *, already_executed: bool) -> dict[str, object]:
        return {
            "token": t.token,
            "merchant_reference": t.merchant_reference,
            "status": t.status,
            "code": t.code,
            "psp_reference": t.psp_reference,
            "amount": format_minor(t.amount_minor, t.currency),
            "currency": t.currency,
            "direction": t.direction,
            "already_executed": already_executed,
        }

    # --- phase two ------------------------------------------------------------------------

    def execute(self, token: str) -> Execution:
        with self.store.tx():
            t = self.get(token)
            t = replace(t, executions=t.executions + 1)
            self.store.update_token(t.token, executions=t.executions)
            if t.status != "created":
                # Executed before: answer the original (or current, if async) result, move nothing.
                return Execution(HTTP_STATUS[t.status], self.result(t, already_executed=True))
            outcome = classify(t.instrument, t.payment_option)
            if outcome.behavior is Behavior.FLAKY and t.executions <= self.limits.flaky_failures:
                return Execution(
                    500,
                    ApiError(
                        500,
                        "internal_error",
                        f"simulated PSP failure {t.executions} of {self.limits.flaky_failures}",
                    ).body(),
                )
            t = self._decide(t, outcome)
        then = outcome.behavior if outcome.behavior in (Behavior.DROP, Behavior.HANG) else None
        return Execution(HTTP_STATUS[t.status], self.result(t, already_executed=False), then)

    def _decide(self, t: TokenRow, outcome: Outcome) -> TokenRow:
        """The first real execution, inside execute's transaction."""
        at = now()
        t = replace(t, executed_at=iso(at), psp_reference=new_psp_reference())
        declined_now = outcome.behavior is Behavior.DECLINE and not (
            outcome.at_completion and self.spec.asynchronous
        )
        if declined_now:
            t = replace(t, status="declined", code=outcome.code, completed_at=t.executed_at)
        elif self.spec.asynchronous:
            t = replace(t, status="pending", complete_due=at.timestamp() + self._delay_s(t))
        else:
            t = replace(t, status="succeeded", charged=True, completed_at=t.executed_at)
            self._charge(t)
        self.store.update_token(
            t.token,
            status=t.status,
            code=t.code,
            psp_reference=t.psp_reference,
            executed_at=t.executed_at,
            completed_at=t.completed_at,
            complete_due=t.complete_due,
            charged=t.charged,
        )
        if self.spec.asynchronous:
            self._event(t, f"payment.{t.status}")
        return t

    def _delay_s(self, t: TokenRow) -> float:
        # Seeded per payment, not per call order, so a rerun with the same seed and references
        # gets the same delays whatever the interleaving.
        rng = (
            random.Random(f"{self.seed}/{self.name}/{t.merchant_reference}")
            if self.seed is not None
            else random.Random()
        )
        return rng.uniform(self.limits.async_delay_min_s, self.limits.async_delay_max_s)

    def _charge(self, t: TokenRow) -> None:
        assert t.psp_reference and t.completed_at
        self.store.insert_charge(
            ChargeRow(
                id=0,
                psp=self.name,
                token=t.token,
                merchant_reference=t.merchant_reference,
                psp_reference=t.psp_reference,
                direction=t.direction,
                payment_option=t.payment_option,
                amount_minor=t.amount_minor,
                currency=t.currency,
                commission_minor=self.spec.commission.of(t.amount_minor),
                charged_at=t.completed_at,
            )
        )

    def _event(self, t: TokenRow, event_type: str) -> None:
        ts = iso(now())
        url = t.webhook_url or self.default_webhook_url
        self.store.insert_event(
            EventRow(
                event_id=new_event_id(),
                psp=self.name,
                token=t.token,
                type=event_type,
                body=event_body(event_type, ts, t),
                url=url,
                created_at=ts,
                state="pending" if url else "no_url",
                attempts=0,
                next_attempt=time.time() if url else None,
            )
        )
        if url:
            self.on_event()

    # --- asynchronous completion ----------------------------------------------------------

    def complete_due(self, now_s: float | None = None) -> list[TokenRow]:
        """Complete every pending payment whose time has come (also those overdue after a
        restart); one transaction each."""
        done = []
        for due in self.store.due_completions(self.name, time.time() if now_s is None else now_s):
            with self.store.tx():
                t = self.store.token(self.name, due.token)
                if t is None or t.status != "pending":
                    continue
                outcome = classify(t.instrument, t.payment_option)
                completed_at = iso(now())
                if outcome.behavior is Behavior.DECLINE:
                    t = replace(t, status="declined", code=outcome.code, completed_at=completed_at)
                else:
                    t = replace(t, status="succeeded", charged=True, completed_at=completed_at)
                    self._charge(t)
                t = replace(t, complete_due=None)
                self.store.update_token(
                    t.token,
                    status=t.status,
                    code=t.code,
                    charged=t.charged,
                    completed_at=t.completed_at,
                    complete_due=None,
                )
                self._event(t, f"payment.{t.status}")
            done.append(t)
        return done

    def stats(self) -> dict[str, object]:
        return self.store.stats(self.name)
