"""The users as an agent of the exactly-once processor: Avro records <-> the pure core.

The only place that knows both the ``UserRequest`` record (schemas/UserRequest.avsc) and the
domain types of ``streams.users``; docs/wallet.md describes the flows. Its state changelog is
``paystream.users.v1``: the users, who holds each username and email, revoked sessions, and
wallet transfers, one compacted record per key.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from streams.agent import TS_MAX, BadInput, Out
from streams.users import decide, evolve_all
from streams.users import model as um

ID_CHARS_MAX = 128
HASH_CHARS_MAX = 512
IDEMPOTENCY_KEY_CHARS_MAX = 255
_NULLS = (
    "user_id", "username", "email", "password_hash", "currency", "reason", "jti",
    "expires_at", "scope", "idempotency_key", "digest", "transfer_id", "to_user",
    "from_account", "to_account", "amount",
)  # fmt: skip


class UsersAgent:
    """Users, their names and sessions, and wallet transfers (docs/wallet.md)."""

    name = "users"
    input_topics: tuple[str, ...] = ("user_requests",)
    step_topic = "user_requests"
    changelog_topic = "users"

    def decode(self, topic: str, schema: str, record: dict[str, Any], ts_us: int) -> um.Message:
        if schema != "UserRequest":
            raise BadInput("not_a_user_request", f"{schema} is not a users message")
        return to_message(record, ts_us)

    def decode_step(self, record: dict[str, Any]) -> um.Message:
        return to_message(record, 0)

    def decide(self, state: um.State | None, message: um.Message) -> list[um.Event]:
        return decide(state, message)

    def evolve(self, state: um.State | None, events: list[um.Event]) -> um.State | None:
        return evolve_all(state, events)

    def direct_step(self, event: um.Event) -> um.Message | None:
        if isinstance(event, um.NameReserved):
            return event.step
        if isinstance(event, um.TransferKeyReserved):
            k = event.key_state
            return um.CreateTransfer(k.scope, k.idempotency_key, k.digest, event.order, k.ts)
        return None

    def records(self, event: um.Event, direct: bool) -> Iterable[Out]:
        return to_records(event, direct)

    def encode_state(self, state: um.State) -> bytes:
        return encode_state(state)

    def decode_state(self, data: bytes) -> um.State:
        return decode_state(data)


# --- records in ---


def _str(r: dict[str, Any], name: str, chars_max: int = ID_CHARS_MAX) -> str:
    v = r.get(name)
    if not isinstance(v, str) or not v or len(v) > chars_max:
        raise BadInput("bad_field", f"{name} must be a string of 1..{chars_max} characters")
    return v


def _ts(v: Any, fallback: int) -> int:
    if type(v) is not int or not 0 <= v <= TS_MAX:
        raise BadInput("bad_timestamp", f"ts {v!r} is out of range")
    return v or fallback


def to_message(r: dict[str, Any], log_ts: int) -> um.Message:
    stage = r.get("stage")
    ts = _ts(r.get("ts", 0), log_ts)
    if stage == "revoke":
        expires = r.get("expires_at")
        if type(expires) is not int or not 0 <= expires <= TS_MAX:
            raise BadInput("bad_field", "expires_at must be a timestamp")
        return um.RevokeSession(_str(r, "jti"), _str(r, "user_id"), expires, ts)
    if stage in ("reserve_key", "create_transfer"):
        order = um.TransferOrder(
            _str(r, "transfer_id"),
            _str(r, "user_id"),
            _str(r, "to_user"),
            _str(r, "from_account"),
            _str(r, "to_account"),
            _str(r, "amount", 64),
        )
        fields = (
            _str(r, "scope", ID_CHARS_MAX + 5),
            _str(r, "idempotency_key", IDEMPOTENCY_KEY_CHARS_MAX),
            _str(r, "digest"),
            order,
            ts,
        )
        return (
            um.ReserveTransferKey(*fields) if stage == "reserve_key" else um.CreateTransfer(*fields)
        )
    try:
        s = um.Stage(str(stage))
    except ValueError:
        raise BadInput("bad_field", f"unknown stage {str(stage)[:32]!r}") from None
    reason = r.get("reason")
    try:
        refusal = None if reason is None else um.Refusal(reason)
    except ValueError:
        raise BadInput("bad_field", f"unknown refusal {str(reason)[:32]!r}") from None
    if s is um.Stage.refuse and refusal is None:
        raise BadInput("bad_field", "a refusal needs its reason")
    signup = um.SignUp(
        _str(r, "user_id"),
        _str(r, "username"),
        _str(r, "email", 254),
        _str(r, "password_hash", HASH_CHARS_MAX),
        _str(r, "currency", 3),
        ts,
    )
    return um.SignUpStep(s, signup, refusal)


# --- records out ---


def request_record(stage: str, ts: int = 0, **fields: Any) -> dict[str, Any]:
    """A UserRequest record: ``stage``, the given fields, null for the others."""
    record: dict[str, Any] = dict.fromkeys(_NULLS)
    unknown = set(fields) - set(_NULLS)
    if unknown:
        raise ValueError(f"not UserRequest fields: {sorted(unknown)}")
    record.update(fields)
    return {"stage": stage, **record, "ts": ts}


def signup_record(step: um.SignUpStep) -> dict[str, Any]:
    s = step.signup
    return request_record(
        step.stage.value,
        s.ts,
        user_id=s.user_id,
        username=s.username,
        email=s.email,
        password_hash=s.password_hash,
        currency=s.currency,
        reason=None if step.reason is None else step.reason.value,
    )


def transfer_record(
    stage: str, scope: str, key: str, digest: str, order: um.TransferOrder, ts: int
) -> dict[str, Any]:
    return request_record(
        stage,
        ts,
        user_id=order.from_user,
        scope=scope,
        idempotency_key=key,
        digest=digest,
        transfer_id=order.transfer_id,
        to_user=order.to_user,
        from_account=order.from_account,
        to_account=order.to_account,
        amount=order.amount,
    )


def open_account_command_id(user_id: str) -> str:
    return f"{user_id}/open"


def to_records(event: um.Event, direct: bool = False) -> Iterator[Out]:
    match event:
        case um.NameReserved():
            if not direct:
                step = event.step
                yield Out("user_requests", "UserRequest", step.key, signup_record(step))
        case um.NameTaken():
            for step in event.steps:
                yield Out("user_requests", "UserRequest", step.key, signup_record(step))
        case um.UserCreated():
            u = event.user
            yield Out(
                "commands",
                "OpenAccount",
                u.account,
                {
                    "command_id": open_account_command_id(u.user_id),
                    "account": u.account,
                    "user": u.user_id,
                    "currency": u.currency,
                },
            )
        case um.TransferKeyReserved():
            if not direct:
                k = event.key_state
                yield Out(
                    "user_requests",
                    "UserRequest",
                    event.order.transfer_id,
                    transfer_record(
                        "create_transfer", k.scope, k.idempotency_key, k.digest, event.order, k.ts
                    ),
                )
        case um.TransferCreated():
            o = event.transfer.order
            yield Out(
                "commands",
                "Transfer",
                o.from_account,
                {
                    "command_id": o.transfer_id,
                    "from": o.from_account,
                    "to": o.to_account,
                    "amount": o.amount,
                },
            )
        case _:
            # NameReleased, SignUpWasRefused, SessionRevoked: the state says it all.
            return


# --- state <-> changelog bytes (compact JSON) ---


def encode_state(state: um.State) -> bytes:
    v: list[Any]
    match state:
        case um.NameHold():
            v = ["n", state.kind.value, state.name, state.user_id, state.ts]
        case um.User():
            v = [
                "u", state.user_id, state.username, state.email, state.password_hash,
                state.account, state.currency, state.created_at,
            ]  # fmt: skip
        case um.SignUpRefused():
            v = ["x", state.user_id, state.reason.value, state.ts]
        case um.Revoked():
            v = ["r", state.jti, state.user_id, state.expires_at]
        case um.TransferKey():
            v = ["k", state.scope, state.idempotency_key, state.digest, state.transfer_id, state.ts]
        case um.WalletTransfer():
            o = state.order
            v = [
                "t", o.transfer_id, o.from_user, o.to_user, o.from_account, o.to_account,
                o.amount, state.scope, state.idempotency_key, state.digest, state.created_at,
            ]  # fmt: skip
    return json.dumps(v, separators=(",", ":")).encode()


def decode_state(data: bytes) -> um.State:
    v = json.loads(data)
    match v[0]:
        case "n":
            return um.NameHold(um.NameKind(v[1]), v[2], v[3], v[4])
        case "u":
            return um.User(*v[1:8])
        case "x":
            return um.SignUpRefused(v[1], um.Refusal(v[2]), v[3])
        case "r":
            return um.Revoked(v[1], v[2], v[3])
        case "k":
            return um.TransferKey(*v[1:6])
        case "t":
            return um.WalletTransfer(um.TransferOrder(*v[1:7]), v[7], v[8], v[9], v[10])
    raise ValueError(f"unknown users state tag {str(v[0])[:8]!r}")
