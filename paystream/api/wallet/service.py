"""The wallet's work behind the routes: sign-up, log-in and -out, a transfer's admission, and
the views of an account and a transfer. Decisions are the users workers' (``streams.users``):
this process asks them through ``paystream.user-requests.v1`` and reads their answers from its
``UsersView``; money is the ledger's, read from the read side."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from base.config import Settings
from base.topics import TopicNames
from paystream.api.errors import ApiError, NotDelivered
from schemas.codec import Codec
from streams.ledger.money import CURRENCY_EXPONENTS, format_amount
from streams.partitioner import partition_for
from streams.users import model as um
from streams.users_agent import request_record, signup_record, transfer_record

from . import errors, passwords
from .lockout import Lockout
from .models import SignUpBody, TransferBody
from .readside import ReadSide
from .sessions import Claims, Issued, Sessions
from .users_view import UsersView

log = logging.getLogger(__name__)


class Sink(Protocol):
    async def send(self, topic: str, partition: int, key: str, value: bytes) -> None: ...


def iso(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1e6, UTC).isoformat().replace("+00:00", "Z")


def transfer_id_for(scope: str, key: str) -> str:
    return um.TRANSFER_ID_PREFIX + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()[:32]


def digest(body: TransferBody) -> str:
    raw = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


class Wallet:
    def __init__(
        self,
        settings: Settings,
        view: UsersView,
        sink: Sink,
        sessions: Sessions,
        readside: ReadSide,
        codec: Codec | None = None,
    ) -> None:
        limits = settings.limits
        self.limits = limits
        self.view = view
        self.sink = sink
        self.sessions = sessions
        self.readside = readside
        self.topic = TopicNames(settings.topic_prefix).user_requests
        self.codec = codec or Codec.default()
        self.timeout_s = limits.api_admission_timeout_s
        self.lockout = Lockout(
            limits.wallet_login_failures_max,
            limits.wallet_login_window_s,
            limits.wallet_login_keys_max,
        )
        self._hashing = asyncio.Semaphore(limits.wallet_hashes_in_flight_max)
        self._in_progress: set[tuple[str, str]] = set()

    async def _send(self, key: str, record: dict[str, Any]) -> None:
        value = self.codec.encode("UserRequest", record)
        try:
            await self.sink.send(self.topic, partition_for(key, self.view.partitions), key, value)
        except NotDelivered as exc:
            raise ApiError(503, "not_delivered", f"the broker did not take it: {exc}") from None

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(passwords.hash_password, password)

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(passwords.verify, password_hash, password)

    # --- sign-up ---

    async def sign_up(self, body: SignUpBody) -> dict[str, str]:
        username, email = body.username.lower(), body.email.lower()
        if body.currency not in CURRENCY_EXPONENTS:
            raise errors.invalid("currency", f"currency {body.currency} is not supported")
        weak = passwords.weakness(
            body.password,
            self.limits.wallet_password_chars_min,
            self.limits.wallet_password_chars_max,
        )
        if weak is not None:
            raise errors.invalid("password", weak)
        # Known taken already: say so without hashing (the log decides the rest).
        if self.view.user_named(username) is not None:
            raise _refused(um.Refusal.username_taken)
        holder = self.view.holder(um.NameKind.email, email)
        if holder is not None and self.view.user(holder) is not None:
            raise _refused(um.Refusal.email_taken)
        user_id = um.USER_ID_PREFIX + uuid.uuid4().hex
        signup = um.SignUp(
            user_id, username, email, await self._hash(body.password), body.currency, 0
        )
        step = um.SignUpStep(um.Stage.reserve_username, signup)
        await self._send(step.key, signup_record(step))

        def decision() -> um.User | um.SignUpRefused | None:
            # The user and its names change in one transaction, but reach this view through
            # their own partitions: answer once log-in would find the user by name too.
            user = self.view.user(user_id)
            if user is not None and self.view.holder(um.NameKind.username, username) == user_id:
                return user
            return self.view.refused(user_id)

        decided: um.User | um.SignUpRefused | None = await self.view.settled(
            [user_id, um.username_key(username)], decision, self.timeout_s
        )
        if decided is None:
            raise errors.unavailable("the sign-up was not decided in time; try again")
        if isinstance(decided, um.SignUpRefused):
            log.info("sign-up %s refused: %s", user_id, decided.reason.value)
            raise _refused(decided.reason)
        log.info("user %s signed up as %s, account %s", user_id, username, decided.account)
        return {"user_id": user_id, "username": decided.username, "account": decided.account}

    # --- sessions ---

    async def log_in(self, username: str, password: str, client: str) -> Issued:
        name = username.lower()
        keys = [f"user:{name}", f"addr:{client}"]
        wait = self.lockout.retry_after_s(keys, time.monotonic())
        if wait is not None:
            raise errors.locked_out(wait)
        user = self.view.user_named(name)
        ok = await self._verify(None if user is None else user.password_hash, password)
        if not ok or user is None:
            self.lockout.failed(keys, time.monotonic())
            log.info("log-in refused for a username from %s", client)
            raise errors.login_failed()
        self.lockout.succeeded(keys[0])
        issued = self.sessions.issue(user.user_id)
        log.info("user %s logged in (session %s)", user.user_id, issued.jti)
        return issued

    async def log_out(self, claims: Claims) -> None:
        if self.view.revoked(claims.jti):
            return
        record = request_record(
            "revoke",
            0,
            user_id=claims.user_id,
            jti=claims.jti,
            expires_at=claims.expires_at * 1_000_000,
        )
        key = um.revoked_key(claims.jti)
        await self._send(key, record)
        done = await self.view.settled(
            [key], lambda: True if self.view.revoked(claims.jti) else None, self.timeout_s
        )
        if done is None:
            raise errors.unavailable("the log-out was not recorded in time; try again")
        log.info("user %s logged out (session %s revoked)", claims.user_id, claims.jti)

    # --- transfers ---

    async def transfer(
        self, user: um.User, key: str, body: TransferBody
    ) -> tuple[int, dict[str, Any], bool]:
        """(status, body, replayed) for ``POST /v1/transfer`` with ``Idempotency-Key: key``."""
        scope = f"user:{user.user_id}"
        d = digest(body)
        known = self.view.transfer_key(scope, key)
        if known is not None:
            return (*self._answer(known, d), True)
        if (scope, key) in self._in_progress:
            raise ApiError(409, "request_in_progress", "a request with this key is being admitted")
        to = self.view.user_named(body.username.lower())
        if to is None:
            raise ApiError(404, "user_not_found", "no user has that username", "username")
        if to.user_id == user.user_id:
            raise errors.invalid("username", "a transfer goes to another user")
        order = um.TransferOrder(
            transfer_id_for(scope, key),
            user.user_id,
            to.user_id,
            user.account,
            to.account,
            body.amount,
        )
        self._in_progress.add((scope, key))
        try:
            await self._send(
                um.idem_key(scope, key), transfer_record("reserve_key", scope, key, d, order, 0)
            )
            known = await self.view.settled(
                [um.idem_key(scope, key), order.transfer_id],
                lambda: self._admitted(scope, key),
                self.timeout_s,
            )
        finally:
            self._in_progress.discard((scope, key))
        if known is None:
            raise ApiError(
                503,
                "not_admitted_in_time",
                "the transfer is in the log but was not admitted in time; "
                "retry with the same Idempotency-Key for its answer",
            )
        status, answer = self._answer(known, d)
        log.info(
            "transfer %s: %s -> %s, %s (%d)",
            order.transfer_id,
            user.user_id,
            to.user_id,
            body.amount,
            status,
        )
        return status, answer, False

    def _admitted(self, scope: str, key: str) -> um.TransferKey | None:
        known = self.view.transfer_key(scope, key)
        if known is None or self.view.transfer(known.transfer_id) is None:
            return None
        return known

    @staticmethod
    def _answer(known: um.TransferKey, d: str) -> tuple[int, dict[str, Any]]:
        if known.digest != d:
            return 422, {
                "error": "idempotency_key_reused",
                "message": "this Idempotency-Key was used with another request body",
            }
        return 201, {"transfer_id": known.transfer_id, "status": "pending"}

    async def transfer_view(self, user: um.User, transfer_id: str) -> dict[str, Any]:
        t = self.view.transfer(transfer_id)
        if t is None or user.user_id not in (t.order.from_user, t.order.to_user):
            raise ApiError(404, "transfer_not_found", "no such transfer of yours")
        o = t.order
        outcome, lifecycle = await asyncio.gather(
            self.readside.outcome(o.transfer_id), self.readside.get(f"/transfers/{o.transfer_id}")
        )
        status, reason = "pending", None
        if outcome is not None and outcome.get("status") == "rejected":
            status, reason = "rejected", outcome.get("reason")
        elif lifecycle is not None and lifecycle.get("status") in ("posted", "voided"):
            status, reason = lifecycle["status"], lifecycle.get("reason")
        sender = self.view.user(o.from_user)
        receiver = self.view.user(o.to_user)
        return {
            "transfer_id": o.transfer_id,
            "status": status,
            "reason": reason,
            "from_username": None if sender is None else sender.username,
            "to_username": None if receiver is None else receiver.username,
            "amount": o.amount,
            "currency": "" if sender is None else sender.currency,
            "created_at": iso(t.created_at),
        }

    # --- the account ---

    async def account_view(self, user: um.User) -> dict[str, Any]:
        limit = self.limits.wallet_transactions_max
        acct = await self.readside.account(user.account)
        postings = [] if acct is None else await self.readside.postings(user.account, limit)
        transfers = await self.readside.transfers(
            [p["transfer_id"] for p in postings if p.get("transfer_id")]
        )
        zero = format_amount(0, user.currency)
        status = "opening" if acct is None or acct.get("status") is None else str(acct["status"])
        balance = zero if acct is None else str(acct.get("balance") or zero)
        return {
            "user_id": user.user_id,
            "username": user.username,
            "account": user.account,
            "currency": user.currency,
            "balance": balance,
            "available": balance if status == "open" else zero,
            "status": status,
            "last_transactions": [self._transaction(user.account, p, transfers) for p in postings],
        }

    def _transaction(
        self, account: str, p: dict[str, Any], transfers: dict[str, dict[str, Any]]
    ) -> dict[str, Any]:
        tid = p.get("transfer_id")
        t = transfers.get(tid) if tid else None
        other: str | None = p.get("counterparty")
        status = "posted"
        if tid:
            status = "pending"
            if t is not None:
                other = t.get("to") if t.get("from") == account else t.get("from")
                status = str(t.get("status") or "pending")
        return {
            "at": iso(int(p["ts"])),
            "kind": p["kind"],
            "amount": p["amount"],
            "counterparty": self._who(other),
            "transfer_id": tid,
            "status": status,
        }

    def _who(self, account: str | None) -> str | None:
        """A wallet user's username for their account; any other account as it is."""
        if account is None or not account.startswith(um.ACCOUNT_PREFIX):
            return account
        user = self.view.user(account.removeprefix(um.ACCOUNT_PREFIX))
        return account if user is None or user.account != account else user.username


def _refused(reason: um.Refusal) -> ApiError:
    what = "username" if reason is um.Refusal.username_taken else "email"
    return ApiError(409, reason.value, f"that {what} is taken", what)
