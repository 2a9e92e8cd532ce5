"""The scheduled-payment routes through ASGI, with the real core behind a fake log: a fake
scheduler applies each command with decide/evolve to an in-memory store the fake view reads.
The real broker, scheduler and server: tests/integration/test_schedules.py."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from base.config import Limits, Settings
from paystream.api.app import create_app
from paystream.api.schedule_service import ScheduleService
from schemas.codec import Codec
from streams.scheduler import wire
from streams.schedules import decide, evolve_all
from streams.schedules import model as sm
from tests.api_fakes import FakeView, FakeWorker

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATH = "/payments/scheduled-payment/v1"
NOW = 1_790_000_000 * sm.US
BODY = {
    "user_id": "user-1",
    "type": "pay_in",
    "from_acct": "card_4242424242424242",
    "to_acct": "acct-1",
    "amount": "10.50",
    "currency": "USD",
    "payment_option": "card",
    "rrule": "FREQ=MONTHLY;BYMONTHDAY=1;COUNT=12",
    "start_at": "2027-01-01T09:00:00",
    "timezone": "Europe/Berlin",
}


class FakeStore:
    """The schedules' view over a dict, woken as the real one is."""

    def __init__(self) -> None:
        self.states: dict[str, sm.ScheduleState] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def get(self, schedule_id: str) -> sm.ScheduleState | None:
        return self.states.get(schedule_id)

    def by_key(self, scope: str, key: str) -> sm.ScheduleState | None:
        found = [s for s in self.states.values() if (s.scope, s.idempotency_key) == (scope, key)]
        return found[0] if found else None

    def page(self, *, user_id: Any, type: Any, status: Any, after: Any, limit: int) -> Any:
        ids = sorted(
            sid for sid, s in self.states.items()
            if (user_id is None or s.definition.user_id == user_id)
            and (type is None or s.definition.type.value == type)
            and (status is None or s.status.value == status)
            and (after is None or sid > after)
        )  # fmt: skip
        more = len(ids) > limit
        page = [self.states[i] for i in ids[:limit]]
        return page, (ids[limit - 1] if more else None)

    def watch(self, keys: list[str]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in keys:
            self._waiters[k].add(fut)
        return fut

    def unwatch(self, keys: list[str], fut: asyncio.Future[None]) -> None:
        for k in keys:
            self._waiters[k].discard(fut)

    def apply(self, sid: str, m: sm.Message) -> None:
        events = decide(self.states.get(sid), m, sm.Policy())
        new = evolve_all(self.states.get(sid), events)
        if new is not None:
            self.states[sid] = new
        for fut in self._waiters.pop(sid, set()):
            if not fut.done():
                fut.set_result(None)


class FakeScheduler:
    """The sink: the scheduler that owns every schedule, applying commands after ``delay_s``
    (None: never, as with no scheduler running)."""

    def __init__(self, store: FakeStore, delay_s: float | None = 0.0) -> None:
        self.store, self.delay_s = store, delay_s
        self.sent: list[dict[str, Any]] = []
        self.codec = Codec.default()

    async def send(self, topic: str, partition: int, key: str, value: bytes) -> None:
        schema, record = self.codec.decode(value)
        self.sent.append(record)
        if self.delay_s is not None:
            m = wire.to_message(schema, record, NOW + len(self.sent))
            asyncio.get_running_loop().call_later(self.delay_s, self.store.apply, key, m)


@asynccontextmanager
async def _client(
    tmp_path: Path, delay_s: float | None = 0.0
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeStore, FakeScheduler]]:
    settings = Settings(
        home=tmp_path, bootstrap="127.0.0.1:1", api_token=TOKEN,
        limits=Limits(api_admission_timeout_s=1.0),
    )  # fmt: skip
    view = FakeView()
    app = create_app(settings, view=view, sink=FakeWorker(view))
    store = FakeStore()
    scheduler = FakeScheduler(store, delay_s)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as client,
    ):
        app.state.schedules = ScheduleService(
            store, scheduler, "commands", 4, 1.0, 100, lambda pid: None
        )
        yield client, store, scheduler


def _run(tmp_path: Path, scenario: Any, delay_s: float | None = 0.0) -> None:
    async def main() -> None:
        async with _client(tmp_path, delay_s) as (c, store, scheduler):
            await scenario(c, store, scheduler)

    asyncio.run(main())


def _h(key: str = "k1") -> dict[str, str]:
    return {**AUTH, "Idempotency-Key": key}


def test_create_replay_reuse_and_conflict(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        r = await c.post(PATH, json=BODY, headers=_h())
        assert r.status_code == 201, r.text
        got = r.json()
        assert got["status"] == "active" and got["schedule_id"].startswith("s-")
        assert got["next_run_at"] == "2027-01-01T08:00:00Z"  # 09:00 CET
        assert got["start_at"] == "2027-01-01T09:00:00+01:00" and got["occurrences"] == []
        again = await c.post(PATH, json={**BODY, "timezone": "Europe/Berlin"}, headers=_h())
        assert (again.status_code, again.json()) == (201, got)
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(sch.sent) == 1
        reused = await c.post(PATH, json={**BODY, "amount": "11.00"}, headers=_h())
        assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
        sid = got["schedule_id"]
        other = await c.post(PATH, json={**BODY, "schedule_id": sid}, headers=_h("k2"))
        assert (other.status_code, other.json()["error"]) == (409, "schedule_exists")
        # The same key keeps its answer after its schedule changed.
        await c.put(f"{PATH}/{sid}", json={"amount": "12.00"}, headers=AUTH)
        replay = await c.post(PATH, json=BODY, headers=_h())
        assert replay.json()["amount"] == "10.50"

    _run(tmp_path, scenario)


def test_no_scheduler_answers_503_and_the_retry_gets_the_answer(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        r = await c.post(PATH, json=BODY, headers=_h())
        assert (r.status_code, r.json()["error"]) == (503, "not_applied_in_time")
        m = wire.to_message(wire.COMMAND_SCHEMA, sch.sent[0], NOW)
        store.apply(m.key, m)  # the scheduler comes back
        r = await c.post(PATH, json=BODY, headers=_h())
        assert r.status_code == 201 and r.headers["Idempotent-Replayed"] == "true"

    _run(tmp_path, scenario, delay_s=None)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rrule": "FREQ=SECONDLY"}, "rrule"),
        ({"rrule": "FREQ=MINUTELY;BYSECOND=1,2"}, "rrule"),
        ({"rrule": "FREQ=WEEKLY;UNTIL=20200101T000000Z"}, "rrule"),  # no occurrence
        ({"rrule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30"}, "rrule"),  # none, ever
        ({"rrule": "x" * 600}, "rrule"),
        ({"amount": "0.00"}, "amount"),
        ({"amount": "10.505"}, "amount"),
        ({"amount": "-1"}, "amount"),
        ({"currency": "ZZZ"}, "currency"),
        ({"from_acct": "a\nb"}, "from_acct"),
        ({"to_acct": ""}, "to_acct"),
        ({"timezone": "Europe/Nowhere"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"start_at": "soon"}, "start_at"),
        ({"start_at": "1999-01-01T00:00:00"}, "start_at"),
        ({"end_at": "2026-01-01T00:00:00"}, "end_at"),  # before the start
        ({"schedule_id": "bad id"}, "schedule_id"),
        ({"type": "refund"}, "type"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_an_invalid_field_is_400_naming_it(
    tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        r = await c.post(PATH, json={**BODY, **change}, headers=_h())
        assert r.status_code == 400, r.text
        assert (r.json()["error"], r.json()["field"]) == ("invalid_field", field)
        assert sch.sent == []

    _run(tmp_path, scenario)


def test_every_route_needs_the_token(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        bad = {"Authorization": "Bearer nope", "Idempotency-Key": "k"}
        for r in (
            await c.post(PATH, json=BODY, headers=bad),
            await c.get(PATH, headers=bad),
            await c.get(f"{PATH}/s1", headers=bad),
            await c.put(f"{PATH}/s1", json={"amount": "1.00"}, headers=bad),
            await c.delete(f"{PATH}/s1", headers=bad),
            await c.post(f"{PATH}/s1/backfill", json={"from": "x", "to": "y"}, headers=bad),
        ):
            assert (r.status_code, r.json()["error"]) == (401, "unauthorized")

    _run(tmp_path, scenario)


def test_list_filters_and_pages(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        for i in range(5):
            body = {**BODY, "schedule_id": f"s{i}", "user_id": f"u{i % 2}"}
            if i == 4:
                body = {**body, "type": "pay_out", "from_acct": "acct-1", "to_acct": "card_1"}
            assert (await c.post(PATH, json=body, headers=_h(f"k{i}"))).status_code == 201
        r = await c.get(PATH, params={"limit": 2}, headers=AUTH)
        page = r.json()
        assert [s["schedule_id"] for s in page["schedules"]] == ["s0", "s1"]
        assert page["next_after"] == "s1"
        r = await c.get(PATH, params={"limit": 2, "after": "s1"}, headers=AUTH)
        assert [s["schedule_id"] for s in r.json()["schedules"]] == ["s2", "s3"]
        r = await c.get(PATH, params={"user_id": "u0"}, headers=AUTH)
        assert [s["schedule_id"] for s in r.json()["schedules"]] == ["s0", "s2", "s4"]
        r = await c.get(PATH, params={"user_id": "u0", "type": "pay_out"}, headers=AUTH)
        assert [s["schedule_id"] for s in r.json()["schedules"]] == ["s4"]
        for bad in ({"limit": 0}, {"limit": 501}, {"after": "a b"}, {"type": "x"}):
            r = await c.get(PATH, params=bad, headers=AUTH)
            assert r.status_code == 400, bad

    _run(tmp_path, scenario)


def test_show_update_pause_resume_delete_backfill(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        # Its start 2 hours before the fake scheduler's clock (NOW: 2026-09-21T14:13:20Z).
        start = "2026-09-21T12:00:00Z"
        body = {**BODY, "schedule_id": "s1", "rrule": "FREQ=HOURLY", "start_at": start}
        assert (await c.post(PATH, json=body, headers=_h())).status_code == 201
        assert (await c.get(f"{PATH}/nope", headers=AUTH)).status_code == 404
        one = (await c.get(f"{PATH}/s1", headers=AUTH)).json()
        assert one["status"] == "active" and one["occurrences"] == []
        r = await c.put(f"{PATH}/s1", json={}, headers=AUTH)
        assert (r.status_code, r.json()["field"]) == (400, "body")
        r = await c.put(f"{PATH}/s1", json={"amount": "1.234"}, headers=AUTH)
        assert (r.status_code, r.json()["field"]) == (400, "amount")
        r = await c.put(f"{PATH}/s1", json={"rrule": "FREQ=SECONDLY"}, headers=AUTH)
        assert (r.status_code, r.json()["field"]) == (400, "rrule")
        r = await c.put(f"{PATH}/s1", json={"status": "paused"}, headers=AUTH)
        assert (r.status_code, r.json()["status"], r.json()["next_run_at"]) == (200, "paused", None)
        r = await c.put(f"{PATH}/s1", json={"status": "active", "amount": "2.00"}, headers=AUTH)
        assert (r.json()["status"], r.json()["amount"]) == ("active", "2.00")
        r = await c.post(
            f"{PATH}/s1/backfill", json={"from": start, "to": "2099-01-01T00:00:00Z"},
            headers=AUTH,
        )  # fmt: skip
        assert (r.status_code, r.json()["field"]) == (400, "to")
        r = await c.post(
            f"{PATH}/s1/backfill", json={"from": "2026-09-22T00:00:00Z", "to": start},
            headers=AUTH,
        )  # fmt: skip
        assert (r.status_code, r.json()["field"]) == (400, "from")
        window = {"from": start, "to": "2026-09-21T13:00:00Z"}
        r = await c.post(f"{PATH}/s1/backfill", json=window, headers=AUTH)
        assert r.status_code == 202 and r.json()["backfill"]["next"] == start, r.text
        r = await c.post(f"{PATH}/s1/backfill", json=window, headers=AUTH)
        assert (r.status_code, r.json()["error"]) == (409, "backfill_in_progress")
        r = await c.delete(f"{PATH}/s1", headers=AUTH)
        assert (r.status_code, r.json()["status"]) == (200, "deleted")
        assert r.json()["backfill"] is None
        r = await c.put(f"{PATH}/s1", json={"status": "active"}, headers=AUTH)
        assert (r.status_code, r.json()["error"]) == (409, "schedule_deleted")

    _run(tmp_path, scenario)


def test_the_openapi_document_has_the_routes(tmp_path: Path) -> None:
    async def scenario(c: httpx.AsyncClient, store: FakeStore, sch: FakeScheduler) -> None:
        doc = (await c.get("/openapi.json")).json()
        assert {PATH, f"{PATH}/{{schedule_id}}", f"{PATH}/{{schedule_id}}/backfill"} <= set(
            doc["paths"]
        )
        assert set(doc["paths"][f"{PATH}/{{schedule_id}}"]) == {"get", "put", "delete"}

    _run(tmp_path, scenario)
