"""What the scheduled-payment routes do (docs/schedules.md, "The API").

Every change is a ``ScheduleCommand`` for the scheduler that owns the schedule, produced to
``paystream.schedule-commands.v1``; the route then waits (bounded) until the store shows its
outcome: the schedule created with this request's key and body, or the command's result in
the schedule's recent commands. Answers come from the store, never from this process's
memory, so they are the same after a restart and from every API process.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from schemas.codec import Codec
from streams.ledger.money import CURRENCY_EXPONENTS, AmountError, parse_amount
from streams.partitioner import partition_for
from streams.payments.model import PaymentOption, PaymentType
from streams.scheduler import wire
from streams.schedules import model as sm
from streams.schedules import rules
from streams.schedules.errors import RuleError
from streams.schedules.views import admission_view, schedule_view

from .admission import Sink
from .auth import Principal
from .errors import ApiError, NotDelivered
from .schedule_models import BackfillBody, ScheduleBody, ScheduleUpdate


class View(Protocol):
    """What the service needs of its view (``SchedulesView``; tests may give a fake)."""

    def get(self, schedule_id: str) -> sm.ScheduleState | None: ...

    def by_key(self, scope: str, key: str) -> sm.ScheduleState | None: ...

    def page(
        self,
        *,
        user_id: str | None,
        type: str | None,
        status: str | None,
        after: str | None,
        limit: int,
    ) -> tuple[list[sm.ScheduleState], str | None]: ...

    def watch(self, keys: list[str]) -> asyncio.Future[None]: ...

    def unwatch(self, keys: list[str], fut: asyncio.Future[None]) -> None: ...


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def _invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", message, field)


def digest(body: ScheduleBody) -> str:
    """The body's canonical digest: sorted, compact JSON of its fields (defaults included)."""
    text = json.dumps(
        body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def derived_id(scope: str, key: str) -> str:
    """A schedule id from the Idempotency-Key, when the client gives none."""
    return "s-" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:24]


def check_amount(amount: str, currency: str) -> None:
    if currency not in CURRENCY_EXPONENTS:
        raise _invalid("currency", f"currency {currency} is not supported by the ledger")
    try:
        parse_amount(amount, currency)
    except AmountError as exc:
        raise _invalid("amount", f"amount is not a valid {currency} amount: {exc}") from None


def check_series(d: sm.Definition) -> None:
    """The rule compiles and has an occurrence at or after its start (RuleError names it)."""
    rule = rules.compile_definition(d)
    first = rules.seek("check", rule, 0)
    if first is None:
        raise RuleError("rrule", "rrule has no occurrence at or after start_at")


def definition_of(body: ScheduleBody) -> sm.Definition:
    """The body as the core's definition, every field judged (ApiError 400 naming it)."""
    check_amount(body.amount, body.currency)
    try:
        d = sm.Definition(
            user_id=body.user_id,
            type=PaymentType(body.type),
            from_acct=body.from_acct,
            to_acct=body.to_acct,
            amount=body.amount,
            currency=body.currency,
            payment_option=PaymentOption(body.payment_option),
            rrule=rules.normalise(body.rrule),
            start_local=rules.parse_start(body.start_at, body.timezone),
            timezone=body.timezone,
            end_at=None if body.end_at is None else rules.parse_end(body.end_at, body.timezone),
        )
        check_series(d)
    except RuleError as exc:
        raise _invalid(exc.field, exc.message) from None
    return d


class ScheduleService:
    def __init__(
        self,
        view: View,
        sink: Sink,
        topic: str,
        partitions: int,
        timeout_s: float,
        in_flight_max: int,
        payment_status: Callable[[str], str | None],
    ) -> None:
        self.view = view
        self.sink = sink
        self.topic = topic
        self.partitions = partitions
        self.timeout_s = timeout_s
        self.in_flight_max = in_flight_max
        self.payment_status = payment_status
        self.codec = Codec.default()
        self._in_progress: set[tuple[str, str]] = set()

    # --- reads ---

    def visible(self, who: Principal, schedule_id: str) -> sm.ScheduleState:
        s = self.view.get(schedule_id) if sm.SCHEDULE_ID.match(schedule_id) else None
        if s is None or not who.may_act_for(s.definition.user_id):
            raise ApiError(404, "schedule_not_found", "no such schedule")
        return s

    def show(self, s: sm.ScheduleState) -> dict[str, Any]:
        return schedule_view(s, self.payment_status)

    # --- create ---

    async def create(self, who: Principal, key: str, body: ScheduleBody) -> Answer:
        d = await asyncio.to_thread(definition_of, body)
        scope = who.scope
        sid = body.schedule_id or derived_id(scope, key)
        dg = digest(body)
        known = self.view.by_key(scope, key) or self.view.get(sid)
        if known is not None:
            return self._created(known, scope, key, dg, d, replayed=True)
        if (scope, key) in self._in_progress:
            raise ApiError(409, "request_in_progress", "a request with this key is being admitted")
        if len(self._in_progress) >= self.in_flight_max:
            raise ApiError(503, "overloaded", "too many requests in flight; retry")
        self._in_progress.add((scope, key))
        try:
            command = wire.create_command(sid, str(uuid.uuid4()), scope, key, dg, d)
            await self._send(sid, command)
            s = await self._wait(sid, lambda s: s is not None)
        finally:
            self._in_progress.discard((scope, key))
        if s is None:
            raise _not_in_time()
        return self._created(s, scope, key, dg, d, replayed=False)

    def _created(
        self, s: sm.ScheduleState, scope: str, key: str, dg: str, d: sm.Definition, replayed: bool
    ) -> Answer:
        if (s.scope, s.idempotency_key) == (scope, key):
            if s.digest != dg:
                raise ApiError(
                    422,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another request body",
                )
            return Answer(201, admission_view(s, d), replayed)
        raise ApiError(
            409,
            "schedule_exists",
            f"schedule {s.schedule_id} was created with another Idempotency-Key",
        )

    # --- changes ---

    async def update(self, who: Principal, schedule_id: str, body: ScheduleUpdate) -> Answer:
        s = self.visible(who, schedule_id)
        fields = body.model_fields_set
        if not fields:
            raise _invalid("body", "give at least one of amount, rrule, start_at, end_at, status")
        d = s.definition
        try:
            if body.amount is not None:
                check_amount(body.amount, d.currency)
            rrule = None if body.rrule is None else rules.normalise(body.rrule)
            start = None if body.start_at is None else rules.parse_start(body.start_at, d.timezone)
            end = None if body.end_at is None else rules.parse_end(body.end_at, d.timezone)
            new = sm.Definition(
                d.user_id, d.type, d.from_acct, d.to_acct, body.amount or d.amount, d.currency,
                d.payment_option, rrule or d.rrule, start or d.start_local, d.timezone,
                end if "end_at" in fields else d.end_at,
            )  # fmt: skip
            if (new.rrule, new.start_local, new.end_at) != (d.rrule, d.start_local, d.end_at):
                await asyncio.to_thread(check_series, new)
        except RuleError as exc:
            raise _invalid(exc.field, exc.message) from None
        command = wire.update_command(
            schedule_id,
            str(uuid.uuid4()),
            amount=body.amount,
            rrule=rrule,
            start_local=start,
            end_at=end,
            clear_end="end_at" in fields and body.end_at is None,
            status=None if body.status is None else sm.ScheduleStatus(body.status),
        )
        return await self._command(schedule_id, command, 200)

    async def delete(self, who: Principal, schedule_id: str) -> Answer:
        self.visible(who, schedule_id)
        return await self._command(
            schedule_id, wire.delete_command(schedule_id, str(uuid.uuid4())), 200
        )

    async def backfill(self, who: Principal, schedule_id: str, body: BackfillBody) -> Answer:
        s = self.visible(who, schedule_id)
        tz = s.definition.timezone
        try:
            frm = rules.parse_end(body.from_, tz)
        except RuleError:
            raise _invalid("from", "from must be ISO 8601") from None
        try:
            to = rules.parse_end(body.to, tz)
        except RuleError:
            raise _invalid("to", "to must be ISO 8601") from None
        if frm > to:
            raise _invalid("from", "from must not be after to")
        if to > time.time_ns() // 1000:
            raise _invalid("to", "to must not be in the future")
        command = wire.backfill_command(schedule_id, str(uuid.uuid4()), frm, to)
        return await self._command(schedule_id, command, 202)

    async def _command(self, schedule_id: str, command: dict[str, Any], ok: int) -> Answer:
        cid = command["command_id"]
        await self._send(schedule_id, command)
        s = await self._wait(
            schedule_id, lambda s: s is not None and s.command_result(cid) is not None
        )
        if s is None:
            raise _not_in_time()
        result = s.command_result(cid)
        if result == sm.APPLIED:
            return Answer(ok, self.show(s))
        if result in (sm.REFUSED_BACKFILL_RANGE, sm.REFUSED_BACKFILL_TOO_LARGE, sm.REFUSED_RULE):
            field = "rrule" if result == sm.REFUSED_RULE else "from"
            raise ApiError(400, str(result), _REFUSALS.get(str(result), str(result)), field)
        raise ApiError(409, str(result), _REFUSALS.get(str(result), str(result)))

    # --- the log ---

    async def _send(self, schedule_id: str, command: dict[str, Any]) -> None:
        value = self.codec.encode(wire.COMMAND_SCHEMA, command)
        try:
            await self.sink.send(
                self.topic, partition_for(schedule_id, self.partitions), schedule_id, value
            )
        except NotDelivered as exc:
            raise ApiError(503, "not_delivered", f"the broker did not take it: {exc}") from None

    async def _wait(
        self, schedule_id: str, done: Callable[[sm.ScheduleState | None], bool]
    ) -> sm.ScheduleState | None:
        """The schedule once ``done`` says so, or None after the admission timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        while True:
            fut = self.view.watch([schedule_id])
            try:
                s = self.view.get(schedule_id)  # read only after watching
                if done(s):
                    return s
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    return None
            finally:
                self.view.unwatch([schedule_id], fut)


_REFUSALS = {
    sm.REFUSED_DELETED: "the schedule is deleted",
    sm.REFUSED_TRANSITION: "the schedule cannot go to that status (a completed schedule has "
    "no occurrence to resume; give it a later end or a new rule)",
    sm.REFUSED_RULE: "the new rule has no usable occurrence",
    sm.REFUSED_BACKFILL_RANGE: "the range must not be empty or in the future",
    sm.REFUSED_BACKFILL_TOO_LARGE: "the range holds too many occurrences, or is too far from "
    "start_at to search",
    sm.REFUSED_BACKFILL_RUNNING: "a backfill of this schedule is still running",
}


def _not_in_time() -> ApiError:
    return ApiError(
        503,
        "not_applied_in_time",
        "the request is in the log but the scheduler did not apply it in time; "
        "GET the schedule (or retry a POST with the same Idempotency-Key) for its outcome",
    )
