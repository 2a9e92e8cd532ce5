"""Scheduled payments' records (schemas/Schedule*.avsc) <-> the pure core (streams.schedules).

The only place that knows both: the API builds its commands here, the scheduler decodes them
and encodes its state and events here, the API's view decodes the state here.
"""

from __future__ import annotations

from typing import Any

from schemas.codec import Codec
from streams.agent import TS_MAX, BadInput
from streams.payments.model import PaymentOption, PaymentType
from streams.schedules import model as sm

CREATE, UPDATE, DELETE, BACKFILL = "create", "update", "delete", "backfill"
COMMAND_SCHEMA = "ScheduleCommand"
SETTLED_SCHEMA = "ScheduledPaymentSettled"
STATE_SCHEMA = "ScheduleState"
CHANGED_SCHEMA = "ScheduleChanged"
OCCURRENCE_SCHEMA = "ScheduleOccurrence"
# Strings a record may carry (ids, accounts, amounts, rules, reasons): generous bounds.
_CHARS_MAX = 1024


# --- commands (the API writes them) ---


def _definition_fields(d: sm.Definition) -> dict[str, Any]:
    return {
        "user_id": d.user_id,
        "type": d.type.value,
        "from_acct": d.from_acct,
        "to_acct": d.to_acct,
        "amount": d.amount,
        "currency": d.currency,
        "payment_option": d.payment_option.value,
        "rrule": d.rrule,
        "start_local": d.start_local,
        "timezone": d.timezone,
        "end_at": d.end_at,
    }


def create_command(
    schedule_id: str,
    command_id: str,
    scope: str,
    idempotency_key: str,
    digest: str,
    definition: sm.Definition,
) -> dict[str, Any]:
    return {
        "kind": CREATE,
        "schedule_id": schedule_id,
        "command_id": command_id,
        "scope": scope,
        "idempotency_key": idempotency_key,
        "digest": digest,
        **_definition_fields(definition),
    }


def update_command(
    schedule_id: str,
    command_id: str,
    *,
    amount: str | None = None,
    rrule: str | None = None,
    start_local: str | None = None,
    end_at: int | None = None,
    clear_end: bool = False,
    status: sm.ScheduleStatus | None = None,
) -> dict[str, Any]:
    return {
        "kind": UPDATE,
        "schedule_id": schedule_id,
        "command_id": command_id,
        "amount": amount,
        "rrule": rrule,
        "start_local": start_local,
        "end_at": end_at,
        "clear_end": clear_end,
        "status": None if status is None else status.value,
    }


def delete_command(schedule_id: str, command_id: str) -> dict[str, Any]:
    return {"kind": DELETE, "schedule_id": schedule_id, "command_id": command_id}


def backfill_command(schedule_id: str, command_id: str, from_at: int, to_at: int) -> dict[str, Any]:
    return {
        "kind": BACKFILL,
        "schedule_id": schedule_id,
        "command_id": command_id,
        "from_at": from_at,
        "to_at": to_at,
    }


def settled_record(m: sm.Settled) -> dict[str, Any]:
    return {
        "schedule_id": m.schedule_id,
        "occurrence_at": m.at,
        "payment_id": sm.payment_id(m.schedule_id, m.at),
        "status": m.status.value,
        "reason": m.reason,
        "ts": m.ts,
    }


# --- records in ---


def _str(r: dict[str, Any], name: str, chars_max: int = _CHARS_MAX) -> str:
    v = r.get(name)
    if not isinstance(v, str) or not v or len(v) > chars_max:
        raise BadInput("bad_field", f"{name} must be a string of 1..{chars_max} characters")
    return v


def _opt_str(r: dict[str, Any], name: str) -> str | None:
    v = r.get(name)
    if v is None:
        return None
    return _str(r, name)


def _time(v: Any, name: str) -> int:
    if type(v) is not int or not 0 <= v <= TS_MAX:
        raise BadInput("bad_timestamp", f"{name} {v!r} is out of range")
    return v


def _opt_time(r: dict[str, Any], name: str) -> int | None:
    v = r.get(name)
    return None if v is None else _time(v, name)


def _schedule_id(r: dict[str, Any]) -> str:
    s = _str(r, "schedule_id", sm.SCHEDULE_ID_CHARS_MAX)
    if not sm.SCHEDULE_ID.match(s):
        raise BadInput("bad_field", "schedule_id must match [A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")
    return s


def _definition(r: dict[str, Any]) -> sm.Definition:
    try:
        ptype = PaymentType(_str(r, "type"))
        option = PaymentOption(_str(r, "payment_option"))
    except ValueError as exc:
        raise BadInput("bad_field", str(exc)[:200]) from None
    return sm.Definition(
        user_id=_str(r, "user_id"),
        type=ptype,
        from_acct=_str(r, "from_acct"),
        to_acct=_str(r, "to_acct"),
        amount=_str(r, "amount"),
        currency=_str(r, "currency"),
        payment_option=option,
        rrule=_str(r, "rrule"),
        start_local=_str(r, "start_local"),
        timezone=_str(r, "timezone"),
        end_at=_opt_time(r, "end_at"),
    )


def to_message(schema: str, r: dict[str, Any], log_ts: int) -> sm.Message:
    """A record of paystream.schedule-commands.v1 as a message of the core (BadInput if it
    cannot be one). ``log_ts`` (its time in the log) is the decision's "now"."""
    if schema == SETTLED_SCHEMA:
        try:
            status = sm.OccurrenceStatus(_str(r, "status"))
        except ValueError:
            raise BadInput("bad_field", "status must be succeeded, failed or rejected") from None
        return sm.Settled(
            _schedule_id(r),
            _time(r.get("occurrence_at"), "occurrence_at"),
            status,
            _opt_str(r, "reason"),
            _time(r.get("ts"), "ts") or log_ts,
        )
    if schema != COMMAND_SCHEMA:
        raise BadInput("not_a_schedule_command", f"{schema} is not a schedule command")
    kind = r.get("kind")
    schedule_id, command_id = _schedule_id(r), _str(r, "command_id")
    ts = _time(r.get("ts", 0), "ts") or log_ts
    if kind == CREATE:
        return sm.Create(
            schedule_id,
            _definition(r),
            _str(r, "scope"),
            _str(r, "idempotency_key"),
            _str(r, "digest"),
            command_id,
            ts,
        )
    if kind == UPDATE:
        wanted = _opt_str(r, "status")
        if wanted not in (None, "paused", "active"):
            raise BadInput("bad_field", "status must be paused or active")
        return sm.Update(
            schedule_id,
            command_id,
            ts,
            amount=_opt_str(r, "amount"),
            rrule=_opt_str(r, "rrule"),
            start_local=_opt_str(r, "start_local"),
            end_at=_opt_time(r, "end_at"),
            clear_end=r.get("clear_end") is True,
            status=None if wanted is None else sm.ScheduleStatus(wanted),
        )
    if kind == DELETE:
        return sm.Delete(schedule_id, command_id, ts)
    if kind == BACKFILL:
        return sm.RequestBackfill(
            schedule_id,
            command_id,
            ts,
            _time(r.get("from_at"), "from_at"),
            _time(r.get("to_at"), "to_at"),
        )
    raise BadInput(
        "bad_field", f"kind {str(kind)[:32]!r} is not create, update, delete or backfill"
    )


def settled_of_payment(r: dict[str, Any], log_ts: int) -> sm.Settled | None:
    """A PaymentStatusChanged record of a scheduled payment that reached a terminal status,
    as the core's ``Settled``; None for any other."""
    if r.get("is_complete") is not True:
        return None
    parsed = sm.parse_payment_id(str(r.get("payment_id", "")))
    if parsed is None:
        return None
    try:
        status = sm.OccurrenceStatus(str(r.get("status")))
    except ValueError:
        return None
    if status not in sm.SETTLED:
        return None
    reason = r.get("reason")
    ts = r.get("ts")
    return sm.Settled(
        parsed[0],
        parsed[1],
        status,
        reason if isinstance(reason, str) else None,
        ts if type(ts) is int and ts > 0 else log_ts,
    )


# --- the state (paystream.schedules.v1) ---


def _cursor_record(c: sm.Cursor) -> dict[str, Any]:
    return {"at": c.at, "local": c.local, "index": c.index, "due_at": c.due_at}


def _cursor(r: dict[str, Any]) -> sm.Cursor:
    return sm.Cursor(r["at"], r["local"], r["index"], r["due_at"])


def state_record(s: sm.ScheduleState) -> dict[str, Any]:
    b = s.backfill
    return {
        "schedule_id": s.schedule_id,
        "version": s.version,
        "status": s.status.value,
        "status_reason": s.status_reason,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "scope": s.scope,
        "idempotency_key": s.idempotency_key,
        "digest": s.digest,
        "first_run_at": s.first_run_at,
        "definition": _definition_fields(s.definition),
        "next": None if s.next is None else _cursor_record(s.next),
        "not_before": s.not_before,
        "last_at": s.last_at,
        "failures_in_row": s.failures_in_row,
        "recent": [
            {
                "at": o.at,
                "status": o.status.value,
                "reason": o.reason,
                "due_at": o.due_at,
                "submitted_at": o.submitted_at,
                "backfill": o.backfill,
                "skipped_through": o.skipped_through,
                "skipped_count": o.skipped_count,
            }
            for o in s.recent
        ],
        "backfill": None
        if b is None
        else {
            "command_id": b.command_id,
            "from_at": b.from_at,
            "to_at": b.to_at,
            "cursor": _cursor_record(b.cursor),
        },
        "commands": [{"command_id": c, "result": res} for c, res in s.commands],
    }


def state_of(r: dict[str, Any]) -> sm.ScheduleState:
    d = r["definition"]
    b = r["backfill"]
    return sm.ScheduleState(
        schedule_id=r["schedule_id"],
        definition=sm.Definition(
            d["user_id"],
            PaymentType(d["type"]),
            d["from_acct"],
            d["to_acct"],
            d["amount"],
            d["currency"],
            PaymentOption(d["payment_option"]),
            d["rrule"],
            d["start_local"],
            d["timezone"],
            d["end_at"],
        ),
        status=sm.ScheduleStatus(r["status"]),
        status_reason=r["status_reason"],
        version=r["version"],
        created_at=r["created_at"],
        updated_at=r["updated_at"],
        scope=r["scope"],
        idempotency_key=r["idempotency_key"],
        digest=r["digest"],
        first_run_at=r["first_run_at"],
        next=None if r["next"] is None else _cursor(r["next"]),
        not_before=r["not_before"],
        last_at=r["last_at"],
        failures_in_row=r["failures_in_row"],
        recent=tuple(
            sm.Occurrence(
                o["at"],
                sm.OccurrenceStatus(o["status"]),
                o["reason"],
                o["due_at"],
                o["submitted_at"],
                o["backfill"],
                o["skipped_through"],
                o["skipped_count"],
            )
            for o in r["recent"]
        ),
        backfill=None
        if b is None
        else sm.Backfill(b["command_id"], b["from_at"], b["to_at"], _cursor(b["cursor"])),
        commands=tuple((c["command_id"], c["result"]) for c in r["commands"]),
    )


def encode_state(s: sm.ScheduleState, codec: Codec | None = None) -> bytes:
    return (codec or Codec.default()).encode(STATE_SCHEMA, state_record(s))


def decode_state(data: bytes, codec: Codec | None = None) -> sm.ScheduleState:
    schema, record = (codec or Codec.default()).decode(data)
    if schema != STATE_SCHEMA:
        raise BadInput("not_a_schedule", f"{schema} is not a schedule's state")
    return state_of(record)


# --- events (paystream.schedule-events.v1) ---


def changed_record(s: sm.ScheduleState) -> dict[str, Any]:
    live = s.status is sm.ScheduleStatus.active and s.next is not None
    return {
        "event_id": f"{s.schedule_id}/v{s.version}",
        "schedule_id": s.schedule_id,
        "version": s.version,
        **_definition_fields(s.definition),
        "status": s.status.value,
        "status_reason": s.status_reason,
        "next_run_at": s.next.at if live and s.next is not None else None,
        "last_run_at": s.last_at,
        "failures_in_row": s.failures_in_row,
        "created_at": s.created_at,
        "ts": s.updated_at,
    }


def occurrence_records(schedule_id: str, events: list[sm.Event]) -> list[dict[str, Any]]:
    """One ScheduleOccurrence per occurrence event (submitted, refused, skipped, settled)."""
    out: list[dict[str, Any]] = []
    for e in events:
        if isinstance(e, sm.OccurrencesSkipped):
            out.append(
                _occurrence(
                    schedule_id, e.first_at, sm.OccurrenceStatus.skipped, e.reason, e.ts,
                    skipped_through=e.last_at, skipped_count=e.count,
                )
            )  # fmt: skip
        elif isinstance(e, sm.OccurrenceSubmitted):
            status = sm.OccurrenceStatus.submitted if e.ok else sm.OccurrenceStatus.submit_failed
            out.append(
                _occurrence(
                    schedule_id, e.at, status, e.code, e.ts, due_at=e.due_at,
                    submitted_at=e.submitted_at, backfill=e.backfill,
                )
            )  # fmt: skip
        elif isinstance(e, sm.OccurrenceSettled):
            out.append(_occurrence(schedule_id, e.at, e.status, e.reason, e.ts, version=2))
    return out


def _occurrence(
    schedule_id: str,
    at: int,
    status: sm.OccurrenceStatus,
    reason: str | None,
    ts: int,
    *,
    due_at: int | None = None,
    submitted_at: int | None = None,
    backfill: bool = False,
    skipped_through: int | None = None,
    skipped_count: int = 1,
    version: int = 1,
) -> dict[str, Any]:
    return {
        "event_id": f"{schedule_id}/{at}/{status.value}{'/backfill' if backfill else ''}",
        "schedule_id": schedule_id,
        "occurrence_at": at,
        "payment_id": sm.payment_id(schedule_id, at),
        "status": status.value,
        "reason": reason,
        "due_at": due_at,
        "submitted_at": submitted_at,
        "backfill": backfill,
        "skipped_through": skipped_through,
        "skipped_count": skipped_count,
        "version": version,
        "ts": ts,
    }
