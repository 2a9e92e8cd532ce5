"""decide(state, message) -> events: the users' rules, as a pure function.

Uniqueness is decided where the name lives: a username at ``@username/<name>``, an email at
``@email/<address>``, each in one partition with one writer, so the first sign-up in the log
that asks for a name gets it, whatever API process sent it. A sign-up holds its username, then
its email, then creates the user; if the email is taken it gives the username back. Steps
between keys go through the processor (in the same transaction when one worker owns both).
"""

from __future__ import annotations

from typing import TypeVar

from streams.ledger.errors import InvariantViolation

from .model import (
    CreateTransfer,
    Event,
    Message,
    NameHold,
    NameKind,
    NameReleased,
    NameReserved,
    NameTaken,
    Refusal,
    ReserveTransferKey,
    Revoked,
    RevokeSession,
    SessionRevoked,
    SignUpRefused,
    SignUpStep,
    SignUpWasRefused,
    Stage,
    State,
    TransferCreated,
    TransferKey,
    TransferKeyReserved,
    User,
    UserCreated,
    WalletTransfer,
    account_of,
)

T = TypeVar("T")


def decide(state: State | None, msg: Message) -> list[Event]:
    match msg:
        case SignUpStep():
            return _signup(state, msg)
        case RevokeSession():
            if state is not None:
                return []  # revoked already: a retry
            return [SessionRevoked(Revoked(msg.jti, msg.user_id, msg.expires_at))]
        case ReserveTransferKey():
            return _reserve_key(_of(TransferKey, state, msg.key), msg)
        case CreateTransfer():
            return _create_transfer(_of(WalletTransfer, state, msg.key), msg)


def _of(kind: type[T], state: State | None, key: str) -> T | None:
    if state is not None and not isinstance(state, kind):
        raise InvariantViolation(f"{key}: holds a {type(state).__name__}, not a {kind.__name__}")
    return state


# --- sign-up ---


def _signup(state: State | None, step: SignUpStep) -> list[Event]:
    match step.stage:
        case Stage.reserve_username:
            return _reserve(_of(NameHold, state, step.key), step, NameKind.username)
        case Stage.reserve_email:
            return _reserve(_of(NameHold, state, step.key), step, NameKind.email)
        case Stage.release_username:
            hold = _of(NameHold, state, step.key)
            if hold is None or hold.user_id != step.signup.user_id:
                return []  # not held by this sign-up (any more): nothing to give back
            return [NameReleased(NameHold(hold.kind, hold.name, None, step.signup.ts))]
        case Stage.create_user:
            if state is not None:
                return []  # created already (a redo), or refused: either way decided
            s = step.signup
            user = User(
                s.user_id, s.username, s.email, s.password_hash, account_of(s.user_id),
                s.currency, s.ts,
            )  # fmt: skip
            return [UserCreated(user)]
        case Stage.refuse:
            if state is not None:
                return []
            if step.reason is None:
                raise InvariantViolation(f"sign-up {step.signup.user_id} refused without a reason")
            return [
                SignUpWasRefused(SignUpRefused(step.signup.user_id, step.reason, step.signup.ts))
            ]


def _reserve(hold: NameHold | None, step: SignUpStep, kind: NameKind) -> list[Event]:
    s = step.signup
    if hold is not None and hold.user_id == s.user_id:
        return []  # this sign-up holds it already: a redo
    if hold is None or hold.user_id is None:
        name = s.username if kind is NameKind.username else s.email
        nxt = Stage.reserve_email if kind is NameKind.username else Stage.create_user
        return [NameReserved(NameHold(kind, name, s.user_id, s.ts), SignUpStep(nxt, s))]
    if kind is NameKind.username:
        return [NameTaken((SignUpStep(Stage.refuse, s, Refusal.username_taken),))]
    return [
        NameTaken(
            (
                SignUpStep(Stage.release_username, s),
                SignUpStep(Stage.refuse, s, Refusal.email_taken),
            )
        )
    ]


# --- transfers ---


def _reserve_key(state: TransferKey | None, msg: ReserveTransferKey) -> list[Event]:
    if state is not None:
        # Taken: by this request (a retry) or another body (the API answers 422).
        return []
    key = TransferKey(msg.scope, msg.idempotency_key, msg.digest, msg.order.transfer_id, msg.ts)
    return [TransferKeyReserved(key, msg.order)]


def _create_transfer(state: WalletTransfer | None, msg: CreateTransfer) -> list[Event]:
    if state is not None:
        return []  # created already: a redo (its ledger command has a deterministic id)
    if msg.order.from_account == msg.order.to_account:
        raise InvariantViolation(f"transfer {msg.order.transfer_id} to its own account")
    t = WalletTransfer(msg.order, msg.scope, msg.idempotency_key, msg.digest, msg.ts)
    return [TransferCreated(t)]
