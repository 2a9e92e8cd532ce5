"""Scheduled payments through the real stack: the API's contract (CRUD, validation, the
Idempotency-Key, pagination), a MINUTELY schedule firing in real time, a start in the past
caught up within the window and skipped beyond it, failures pausing a schedule, a backfill,
the CLI, the warehouse tables, and the account's balance against the model."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import httpx
import pytest

from base.config import Settings, api_token
from paystream import schedules_demo
from paystream.api.errors import ApiError
from paystream.api.schedule_client import SchedulesClient
from streams.schedules.model import US
from tests.schedules_harness import (
    DECLINED_CARD,
    balance,
    create,
    expected,
    iso,
    now_us,
    open_accounts,
    payments_of,
    sched_payment_ids,
    schedule_body,
    wait_until,
)
from tests.stack import cli, payments_stack

pytestmark = pytest.mark.integration

MIN = 60 * US
HOUR = 3600 * US
USER = "user-s"
ACCT = "acct-s"


def test_scheduled_payments_through_the_stack(settings: Settings) -> None:
    stack = payments_stack(settings, warehouse=True, schedulers=1)
    stack.up()
    try:
        s = stack.resolved
        open_accounts(stack, {ACCT: USER})
        with SchedulesClient.from_settings(s) as client:
            _contract(s, client, stack.logs)
        # --- `paystream demo`'s scheduled-payments part against this stack (risk included) ---
        demo = schedules_demo.run(s, 7)
        assert demo["verified"], demo
        assert demo["minutely"]["fired"] == schedules_demo.FIRINGS
        assert demo["balance"] == demo["balance_model"] == "2.00"
        names = {x["name"]: x for x in demo["schedules"]}
        assert names["minutely"]["status"] == "completed"  # COUNT=2: both fired, no more
        assert names["weekly pay-out (paused)"]["status"] == "paused"
    finally:
        stack.stop()


def _contract(s: Settings, client: SchedulesClient, logs: object) -> None:
    assert callable(logs)
    t0 = now_us()
    # --- 400 naming the field ---
    for field, change in [
        ("rrule", {"rrule": "FREQ=SECONDLY"}),
        ("rrule", {"rrule": "FREQ=DAILY;BYHOUR=25"}),
        ("amount", {"amount": "0"}),
        ("amount", {"amount": "1.001"}),
        ("from_acct", {"from_acct": "card\x01"}),
        ("timezone", {"timezone": "Mars/Olympus"}),
        ("start_at", {"start_at": "yesterday"}),
        ("currency", {"currency": "XXX"}),
    ]:
        with pytest.raises(ApiError) as err:
            client.create({**schedule_body(USER, ACCT, "FREQ=DAILY", t0), **change}, f"bad-{field}")
        assert (err.value.status, err.value.field) == (400, field), (change, err.value)
    http = httpx.Client(base_url=f"http://127.0.0.1:{s.api_port}", timeout=30)
    body = schedule_body(USER, ACCT, "FREQ=DAILY", t0)
    r = http.post(
        "/payments/scheduled-payment/v1", json=body, headers={"Authorization": "Bearer x"}
    )
    assert r.status_code == 401
    r = http.post(
        "/payments/scheduled-payment/v1",
        json=body,
        headers={"Authorization": f"Bearer {api_token(s)}"},
    )
    assert (r.status_code, r.json()["field"]) == (400, "Idempotency-Key")

    # --- MINUTELY, its start 65 s ago: two occurrences caught up at once, then one a minute ---
    start = (t0 // US) * US - 65 * US
    minutely = create(client, schedule_body(USER, ACCT, "FREQ=MINUTELY", start), "k-minutely")
    sid = minutely["schedule_id"]
    assert minutely["status"] == "active" and minutely["next_run_at"] == iso(start)
    again, replayed = client.create(schedule_body(USER, ACCT, "FREQ=MINUTELY", start), "k-minutely")
    assert replayed and again == minutely
    with pytest.raises(ApiError) as err:
        client.create(
            schedule_body(USER, ACCT, "FREQ=MINUTELY", start, amount="9.00"), "k-minutely"
        )
    assert (err.value.status, err.value.code) == (422, "idempotency_key_reused")
    with pytest.raises(ApiError) as err:
        client.create(schedule_body(USER, ACCT, "FREQ=DAILY", start, schedule_id=sid), "k-other")
    assert (err.value.status, err.value.code) == (409, "schedule_exists")
    # A PUT takes effect from the next occurrence not submitted yet: the first caught up (in
    # flight from the creation on) keeps 1.00, the one after it may have either.
    updated = client.update(sid, {"amount": "2.00"})
    assert updated["amount"] == "2.00" and updated["version"] > 1

    # --- HOURLY from 30 h ago: 24 paid at once, the 6 older than the 24 h window skipped ---
    hourly_start = (t0 // US) * US - 30 * HOUR + 30 * MIN
    hourly = create(client, schedule_body(USER, ACCT, "FREQ=HOURLY", hourly_start), "k-hourly")
    hid = hourly["schedule_id"]
    assert hourly["next_run_at"] == iso(hourly_start + 6 * HOUR)

    # --- three failed payments in a row pause a schedule, saying why ---
    failing = create(
        client,
        schedule_body(
            USER, ACCT, "FREQ=MINUTELY", (t0 // US) * US - 170 * US, instrument=DECLINED_CARD
        ),
        "k-failing",
    )
    fid = failing["schedule_id"]

    # --- paused and deleted schedules pay nothing ---
    soon = (t0 // US) * US + 40 * US
    paused = create(client, schedule_body(USER, ACCT, "FREQ=MINUTELY", soon), "k-paused")
    deleted = create(client, schedule_body(USER, ACCT, "FREQ=MINUTELY", soon), "k-deleted")
    got = client.update(paused["schedule_id"], {"status": "paused"})
    assert got["status"] == "paused" and got["next_run_at"] is None
    assert client.delete(deleted["schedule_id"])["status"] == "deleted"
    with pytest.raises(ApiError) as err:
        client.update(deleted["schedule_id"], {"amount": "3.00"})
    assert (err.value.status, err.value.code) == (409, "schedule_deleted")

    # --- list: by user and type, a page at a time ---
    page = client.list(user_id=USER, limit=2)
    assert len(page["schedules"]) == 2 and page["next_after"]
    seen = [x["schedule_id"] for x in page["schedules"]]
    while page["next_after"]:
        page = client.list(user_id=USER, limit=2, after=page["next_after"])
        seen += [x["schedule_id"] for x in page["schedules"]]
    assert sorted(seen) == seen and set(seen) == {
        sid,
        hid,
        fid,
        paused["schedule_id"],
        deleted["schedule_id"],
    }
    assert client.list(user_id=USER, type="pay_out")["schedules"] == []
    assert client.list(user_id="nobody")["schedules"] == []

    wait_until(
        "the failing schedule paused",
        lambda: client.get(fid)["status"] == "paused",
        120,
        logs,
    )
    f = client.get(fid)
    assert "3 failed payments in a row" in f["status_reason"]
    assert [o["payment_status"] for o in f["occurrences"]] == ["failed"] * 3

    # --- the MINUTELY one fires in real time, within 5 s of its due time ---
    nxt = start + 2 * MIN
    wait_until(
        "the next minutely occurrence",
        lambda: any(o["occurrence_at"] == iso(nxt) and o["payment_status"] == "succeeded"
                    for o in client.get(sid)["occurrences"]),
        nxt / US - time.time() + 60,
        logs,
    )  # fmt: skip
    m = client.get(sid)
    late = {o["occurrence_at"]: _s(o["submitted_at"]) - _s(o["due_at"]) for o in m["occurrences"]}
    assert late[iso(nxt)] <= 5.0, late
    pays = payments_of(s, sid, expected("FREQ=MINUTELY", start, nxt))
    assert set(pays) == {start, start + MIN, nxt}
    assert all(p.created_at_us >= at for at, p in pays.items())  # none early
    assert (pays[start].amount, pays[nxt].amount) == ("1.00", "2.00")

    # --- the hourly one: 24 paid, 6 skipped (recorded: the warehouse, below); backfilled ---
    hourly_all = expected("FREQ=HOURLY", hourly_start, now_us())
    wait_until(
        "24 hourly payments",
        lambda: len(payments_of(s, hid, hourly_all)) == 24,
        120,
        logs,
    )
    assert set(payments_of(s, hid, hourly_all)) == set(hourly_all[6:])
    got = client.backfill(hid, iso(hourly_start), iso(hourly_start + 5 * HOUR))
    assert got["backfill"] is not None
    wait_until(
        "the backfill",
        lambda: len(payments_of(s, hid, hourly_all)) == 30 and client.get(hid)["backfill"] is None,
        120,
        logs,
    )

    # --- paused and deleted paid nothing; every scheduled payment exists once ---
    assert payments_of(s, paused["schedule_id"], expected("FREQ=MINUTELY", soon, now_us())) == {}
    assert payments_of(s, deleted["schedule_id"], expected("FREQ=MINUTELY", soon, now_us())) == {}
    ids = sched_payment_ids(s)
    assert len(ids) == len(set(ids))

    # --- the balance is the model's: every succeeded pay-in, once ---
    wait_until(
        "payments terminal",
        lambda: all(
            p.status in ("succeeded", "failed", "rejected")
            for p in payments_of(s, hid, hourly_all).values()
        ),
        120,
        logs,
    )
    model = Decimal("1.00") * 30 + sum(
        (Decimal(p.amount) for p in payments_of(s, sid, expected("FREQ=MINUTELY", start, now_us())).values()
         if p.status == "succeeded"),
        Decimal(0),
    )  # fmt: skip
    wait_until("the balance", lambda: balance(s, ACCT) == model, 60, logs)

    # --- the CLI, through the same API ---
    out = cli(s, "schedule", "show", sid, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["schedule_id"] == sid
    out = cli(s, "schedule", "list", "--user", USER, "--all", "--json")
    assert out.returncode == 0 and len(json.loads(out.stdout)["schedules"]) == 5
    out = cli(s, "schedule", "pause", sid)
    assert out.returncode == 0 and "paused" in out.stdout
    out = cli(s, "schedule", "show", "no-such-schedule")
    assert out.returncode == 1 and "schedule_not_found" in out.stderr
    out = cli(s, "status", "--json")
    assert any(
        p["name"] == "scheduler-1" and p["alive"] for p in json.loads(out.stdout)["processes"]
    )

    # --- the warehouse: a snapshot per schedule, a row per occurrence event ---
    import clickhouse_connect

    from tests.stack import LedgerStack  # noqa: F401  (the warehouse client below)

    wh = clickhouse_connect.get_client(host="127.0.0.1", port=s.warehouse_port)

    def rows() -> tuple[int, int]:
        a = wh.query(f"SELECT count() FROM scheduled_payments FINAL WHERE user_id = '{USER}'")
        b = wh.query(
            f"SELECT count() FROM schedule_occurrences FINAL WHERE schedule_id = '{hid}' "
            "AND status = 'succeeded'"
        )
        return int(a.result_rows[0][0]), int(b.result_rows[0][0])

    wait_until("the warehouse", lambda: rows() == (5, 30), 120, logs)
    skipped = wh.query(
        "SELECT occurrence_at, skipped_through, skipped_count, reason FROM schedule_occurrences "
        f"FINAL WHERE schedule_id = '{hid}' AND status = 'skipped'"
    ).result_rows
    assert len(skipped) == 1
    first, through, count, reason = skipped[0]
    assert (count, reason) == (6, "outside_catchup_window")
    assert int(first.timestamp()) * US == hourly_start
    assert int(through.timestamp()) * US == hourly_start + 5 * HOUR
    assert len(client.get(hid)["occurrences"]) == 20  # the last 20
    status = wh.query(f"SELECT status FROM scheduled_payments FINAL WHERE schedule_id = '{fid}'")
    assert status.result_rows[0][0] == "paused"


def _s(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
