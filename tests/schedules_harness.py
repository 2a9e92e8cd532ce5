"""Scheduled payments through the real stack (tests/stack.py: ``payments_stack`` with a
scheduler): accounts, the API's client, waits, and the model of what must be paid."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dateutil.rrule import rrulestr

from base.config import Settings
from paystream import queries
from paystream.api.client import PaymentsClient
from paystream.api.errors import ApiError
from paystream.api.schedule_client import SchedulesClient
from paystream.stack import Stack
from producers.commands import parse_command
from producers.producer import CommandProducer
from streams.schedules.model import US, parse_payment_id

OK_CARD = "card_4242424242424242"
DECLINED_CARD = "card_4000000000000002"
TERMINAL = ("succeeded", "failed", "rejected")


def now_us() -> int:
    return time.time_ns() // 1000


def iso(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / US, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_accounts(stack: Stack, accounts: dict[str, str], timeout_s: float = 120) -> None:
    """account -> user, opened in USD, then waited for."""
    s = stack.resolved
    with CommandProducer(s, client_id="test") as p:
        for acct, user in accounts.items():
            p.send(
                parse_command(
                    {"type": "open_account", "command_id": f"open-{acct}", "account": acct,
                     "user": user, "currency": "USD"}
                )
            )  # fmt: skip
        p.flush(60)
    if not queries.wait(s, timeout_s=timeout_s):
        raise TimeoutError(f"accounts not opened:\n{stack.logs()}")


def schedule_body(
    user: str,
    account: str,
    rrule: str,
    start_us: int,
    *,
    instrument: str = OK_CARD,
    amount: str = "1.00",
    schedule_id: str | None = None,
) -> dict[str, Any]:
    body = {
        "user_id": user, "type": "pay_in", "from_acct": instrument, "to_acct": account,
        "amount": amount, "currency": "USD", "payment_option": "card", "rrule": rrule,
        "start_at": iso(start_us),
    }  # fmt: skip
    if schedule_id:
        body["schedule_id"] = schedule_id
    return body


def create(
    client: SchedulesClient, body: dict[str, Any], key: str, deadline_s: float = 120
) -> dict[str, Any]:
    """POST, retried with the same key while the scheduler is away (503)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            return client.create(body, key)[0]
        except ApiError as exc:
            if exc.status != 503 or time.monotonic() > end:
                raise
            time.sleep(1)


def expected(rrule: str, start_us: int, until_us: int) -> list[int]:
    """The model: dateutil's occurrences from start (UTC) through ``until_us``."""
    start = datetime.fromtimestamp(start_us / US, UTC)
    out = []
    for t in rrulestr(rrule, dtstart=start):
        at = int(t.timestamp()) * US
        if at > until_us:
            break
        out.append(at)
    return out


@dataclass
class Payment:
    payment_id: str
    status: str
    amount: str
    created_at_us: int


def payments_of(settings: Settings, schedule_id: str, occurrences: list[int]) -> dict[int, Payment]:
    """The payment of each occurrence, if there is one (GET /payments/payment/v1/{id})."""
    from streams.schedules.model import payment_id

    out: dict[int, Payment] = {}
    with PaymentsClient.from_settings(settings) as api:
        for at in occurrences:
            pid = payment_id(schedule_id, at)
            try:
                p = api.get_payment(pid)
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            created = int(
                datetime.fromisoformat(p["created_at"].replace("Z", "+00:00")).timestamp() * US
            )
            out[at] = Payment(pid, p["status"], p["amount"], created)
    return out


def wait_until(
    what: str, check: Callable[[], bool], timeout_s: float, logs: Callable[[], str]
) -> None:
    end = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not after {timeout_s} s\n{logs()}")
        time.sleep(0.5)


def balance(settings: Settings, account: str) -> Decimal | None:
    view = queries.account(settings, account)
    return None if view is None else Decimal(view["balance"])


def sched_payment_ids(settings: Settings) -> list[str]:
    """Every scheduled payment's id in the payments' log (each RequestPayment created)."""
    from base.topics import TopicNames
    from schemas.codec import Codec

    codec = Codec.default()
    out = []
    for m in queries.scan(settings, TopicNames(settings.topic_prefix).payment_events):
        key = m.key() or b""
        if not key.startswith(b"sched-"):
            continue
        schema, r = codec.decode(m.value() or b"")
        if schema == "PaymentStatusChanged" and r["version"] == 1:
            out.append(r["payment_id"])
    return out


__all__ = ["parse_payment_id"]
