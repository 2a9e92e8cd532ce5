"""Scheduled payments under fire: two schedulers (one consumer group, each owning the
schedules of its partitions) killed with -9 again and again, each kill just before an
occurrence falls due, with one long downtime that every MINUTELY schedule misses an
occurrence in; then the survivors checked against the model, in real time.

Every expected occurrence is a payment exactly once, none early; schedules whose first
occurrences were in the past are caught up within the 24 h window and skipped beyond it;
paused and deleted schedules pay nothing; three failures in a row pause a schedule; each
account's balance is the model's. The evidence: each kill's downtime held due occurrences,
and they were paid after it.

``pytest -m chaos tests/chaos/test_schedules_chaos.py -s``; PAYSTREAM_CHAOS_SEED picks the
kills, PAYSTREAM_CHAOS_SCHEDULE_S how long they go on (default 240 s).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from base.config import Settings
from paystream.api.schedule_client import SchedulesClient
from paystream.stack import Stack, scheduler_name
from streams.schedules.model import US
from tests.schedules_harness import (
    DECLINED_CARD,
    balance,
    create,
    expected,
    now_us,
    open_accounts,
    payments_of,
    sched_payment_ids,
    schedule_body,
    wait_until,
)
from tests.stack import payments_stack

pytestmark = [pytest.mark.chaos, pytest.mark.slow]

SEED = int(os.environ.get("PAYSTREAM_CHAOS_SEED", "20261130"))
CHAOS_S = float(os.environ.get("PAYSTREAM_CHAOS_SCHEDULE_S", "240"))
SCHEDULERS = (scheduler_name(1), scheduler_name(2))
MIN = 60 * US
HOUR = 3600 * US
ACCOUNTS = {f"acct-c{i}": f"user-c{i}" for i in range(3)}


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    st = payments_stack(settings.with_(api_token="chaos-token"), warehouse=False, schedulers=2)
    st.up()
    try:
        yield st
    finally:
        st.stop()


@dataclass
class Minutely:
    schedule_id: str
    start: int
    amount: str
    account: str


@dataclass
class Kill:
    at: float
    back: float
    victims: tuple[str, ...]
    due: int = 0  # occurrences due while it was down


def test_kills_of_the_scheduler_pay_every_occurrence_exactly_once(stack: Stack) -> None:
    rng = random.Random(SEED)
    s = stack.resolved
    open_accounts(stack, ACCOUNTS)
    accounts = list(ACCOUNTS)
    client = SchedulesClient.from_settings(s)
    t0 = (now_us() // US) * US

    def body(acct: str, rrule: str, start: int, **kw: str) -> dict[str, str]:
        return schedule_body(ACCOUNTS[acct], acct, rrule, start, **kw)  # type: ignore[arg-type]

    # Six MINUTELY schedules, 10 s apart: something falls due every 10 s.
    minutely = []
    for i in range(6):
        acct = accounts[i % 3]
        start = t0 + 30 * US + i * 10 * US
        amount = f"{i + 1}.00"
        got = create(client, body(acct, "FREQ=MINUTELY", start, amount=amount), f"m{i}")
        minutely.append(Minutely(got["schedule_id"], start, amount, acct))
    # Starts in the past: an hourly one from 30 h ago (6 beyond the window), a minutely one
    # from 5 minutes ago (caught up at once).
    past_h_start = t0 - 30 * HOUR + 40 * MIN
    past_h = create(client, body(accounts[0], "FREQ=HOURLY", past_h_start, amount="0.50"), "ph")
    past_m_start = t0 - 5 * MIN + 5 * US
    past_m = create(client, body(accounts[1], "FREQ=MINUTELY", past_m_start, amount="0.25"), "pm")
    minutely.append(Minutely(past_m["schedule_id"], past_m_start, "0.25", accounts[1]))
    paused = create(client, body(accounts[2], "FREQ=MINUTELY", t0 + 20 * US), "paused")
    deleted = create(client, body(accounts[2], "FREQ=MINUTELY", t0 + 20 * US), "deleted")
    client.update(paused["schedule_id"], {"status": "paused"})
    client.delete(deleted["schedule_id"])
    failing = create(
        client, body(accounts[2], "FREQ=MINUTELY", t0 - 150 * US, instrument=DECLINED_CARD), "f"
    )

    # --- the kills: each just before a MINUTELY occurrence falls due ---
    dues = sorted(
        {at for m in minutely for at in expected("FREQ=MINUTELY", m.start, t0 + 2 * HOUR)}
    )
    kills: list[Kill] = []
    long_done = False
    end_chaos = time.time() + CHAOS_S
    while time.time() < end_chaos:
        upcoming = [d for d in dues if d / US > time.time() + 2 + rng.uniform(3, 20)]
        target = upcoming[0] / US
        time.sleep(max(0.0, target - 1.0 - time.time()))
        victims = rng.choice([SCHEDULERS[:1], SCHEDULERS[1:], SCHEDULERS])
        long = not long_done and time.time() > end_chaos - CHAOS_S / 2
        down_s = 75.0 if long else rng.uniform(2.0, 6.0)
        at = time.time()
        for v in victims:
            stack.kill(v)
        time.sleep(down_s)
        stack.start(*victims, wait=False)
        kills.append(Kill(at, time.time(), victims))
        long_done = long_done or long
    stack.start(*SCHEDULERS)
    chaos_over = now_us()

    # Everything due is caught up (the long downtime's included).
    def due_paid() -> bool:
        for m in minutely:
            want = expected("FREQ=MINUTELY", m.start, chaos_over)
            if len(payments_of(s, m.schedule_id, want)) != len(want):
                return False
        return True

    wait_until("every occurrence due paid", due_paid, 120, stack.logs)
    # Stop them (the history stays), let every payment settle, then check.
    stopped: dict[str, int] = {}
    for m in minutely:
        client.delete(m.schedule_id)
        stopped[m.schedule_id] = now_us()
    client.delete(past_h["schedule_id"])
    time.sleep(3)

    problems: list[str] = []
    model: dict[str, Decimal] = {a: Decimal(0) for a in accounts}
    for m in minutely:
        all_ = expected("FREQ=MINUTELY", m.start, stopped[m.schedule_id] + 5 * US)
        got = payments_of(s, m.schedule_id, all_)
        must = {at for at in all_ if at < stopped[m.schedule_id] - 2 * US}
        if not must <= set(got):
            problems.append(f"{m.schedule_id}: unpaid {sorted(must - set(got))[:5]}")
        if set(got) - set(all_):
            problems.append(f"{m.schedule_id}: paid outside the rule {set(got) - set(all_)}")
        for at, p in got.items():
            if p.created_at_us < at:
                problems.append(f"{p.payment_id}: created {p.created_at_us - at} µs early")
            if p.amount != m.amount:
                problems.append(f"{p.payment_id}: amount {p.amount}")
        model[m.account] += Decimal(m.amount) * len(got)
        for k in kills:
            k.due += sum(1 for at in all_ if k.at < at / US < k.back)
    hourly = expected("FREQ=HOURLY", past_h_start, now_us())
    got_h = payments_of(s, past_h["schedule_id"], hourly)
    if set(got_h) != set(hourly[6:]):
        problems.append(f"hourly: paid {len(got_h)}, want the {len(hourly) - 6} in the window")
    model[accounts[0]] += Decimal("0.50") * len(got_h)
    for gone in (paused, deleted):
        if payments_of(s, gone["schedule_id"], expected("FREQ=MINUTELY", t0 + 20 * US, now_us())):
            problems.append(f"{gone['schedule_id']} ({gone['status']}) paid")
    f = client.get(failing["schedule_id"])
    if f["status"] != "paused" or "3 failed payments in a row" not in (f["status_reason"] or ""):
        problems.append(f"failing: {f['status']} {f['status_reason']}")
    ids = sched_payment_ids(s)
    if len(ids) != len(set(ids)):
        problems.append(f"payments created twice: {[i for i in ids if ids.count(i) > 1][:5]}")
    assert not problems, "\n".join(problems) + "\n" + stack.logs(40)

    wait_until(
        "balances equal the model",
        lambda: all(balance(s, a) == model[a] for a in accounts),
        120,
        lambda: f"{ {a: balance(s, a) for a in accounts} } != {model}\n{stack.logs(20)}",
    )
    hit = [k for k in kills if k.due]
    caught_up = sum(k.due for k in kills)
    print(
        f"\n{len(kills)} kills of {', '.join(SCHEDULERS)} over {CHAOS_S:.0f} s "
        f"({sum(len(k.victims) for k in kills)} processes); {len(hit)} with occurrences due "
        f"while down ({caught_up} occurrences, all paid after); payments {len(ids)}, "
        f"balances {model}"
    )
    assert len(kills) >= 4
    assert len(hit) >= len(kills) * 0.8, [(k.at, k.back, k.due) for k in kills]
    assert max(k.due for k in kills) >= len(minutely)  # the long downtime missed every one
    client.close()
