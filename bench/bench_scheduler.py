#!/usr/bin/env python
"""The scheduler (docs/schedules.md): 100,000 active schedules, and 10,000 falling due in one
minute.

A real ``paystream scheduler`` process on a private broker; schedules are created by writing
the API's own ``ScheduleCommand`` records (the payment API's admission is measured by its own
benchmark); due payments go to a stand-in payment API in this process (aiohttp, answering 201
after ``--api-latency-ms``), which is all the scheduler talks to.

Figures: schedules created per second (commands decided and stored), the scheduler's RSS with
100,000 schedules, its restart time from the store topic (rebuild, and start to ready), and
the submit lateness (the API's answer after the occurrence's due time, as the scheduler
records it; and the request's arrival at the API) when 10,000 fall due in the same minute:
spread by the HOURLY jitter (bound 60 s here), and all at the same second (MINUTELY, no
jitter).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from common import emit, namespace, private_broker

from base.config import Settings
from base.topics import TopicNames
from ops.ports import free_port_base
from paystream import queries
from paystream.stack import Layout, Stack, scheduler_name, scheduler_spec
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.processor import group_of
from streams.scheduler import wire
from streams.schedules import model as sm
from streams.schedules import rules

US = sm.US
NAME = scheduler_name(1)


class FakeApi:
    """POST /payments/payment/v1: 201 after ``latency_ms``; notes each request's arrival."""

    def __init__(self, port: int, latency_ms: float) -> None:
        self.port, self.latency_s = port, latency_ms / 1000
        self.arrivals: dict[str, float] = {}  # payment id -> first arrival (epoch s)
        self.requests = 0
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        from aiohttp import web

        async def pay(request: web.Request) -> web.Response:
            body = await request.json()
            self.requests += 1
            self.arrivals.setdefault(body["payment_id"], time.time())
            await asyncio.sleep(self.latency_s)
            return web.json_response({"payment_id": body["payment_id"]}, status=201)

        async def health(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        app = web.Application()
        app.add_routes([web.post("/payments/payment/v1", pay), web.get("/health", health)])
        runner = web.AppRunner(app, access_log=None)
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(runner.setup())
        self._loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self._loop.run_forever()


def _definition(rrule: str, start: datetime, i: int) -> sm.Definition:
    return sm.Definition(
        f"user-{i % 1000}", sm.PaymentType.pay_in, "card_4242424242424242", f"acct-{i}", "1.00",
        "USD", sm.PaymentOption.card, rrule, start.strftime(rules.LOCAL_FORMAT), "UTC",
    )  # fmt: skip


def create_schedules(settings: Settings, defs: list[tuple[str, sm.Definition]]) -> None:
    """The API's create records, straight to paystream.schedule-commands.v1."""
    from confluent_kafka import Producer

    codec = Codec.default()
    topic = TopicNames(settings.topic_prefix).schedule_commands
    p = Producer(
        {"bootstrap.servers": settings.bootstrap, "linger.ms": 20, "compression.type": "lz4",
         "queue.buffering.max.messages": 500_000}
    )  # fmt: skip
    for sid, d in defs:
        record = wire.create_command(sid, str(uuid.uuid4()), "service", sid, "bench", d)
        value = codec.encode(wire.COMMAND_SCHEMA, record)
        while True:
            try:
                p.produce(topic, value, sid.encode(), partition_for(sid, settings.partitions))
                break
            except BufferError:
                p.poll(0.05)
    if p.flush(120):
        raise RuntimeError("schedule commands not delivered")


def wait_caught_up(settings: Settings, timeout_s: float) -> float:
    """Until the schedulers' group committed every schedule command; the seconds it took."""
    n = TopicNames(settings.topic_prefix)
    group = settings.topic_prefix + group_of("scheduler")
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    probe = queries.reader(settings)
    try:
        targets = queries._ends(probe, n.schedule_commands)
    finally:
        probe.close()
    while not queries.caught_up(settings, group, [n.schedule_commands], targets):
        if time.monotonic() > deadline:
            raise TimeoutError("the scheduler did not catch up")
        time.sleep(0.5)
    return time.perf_counter() - started


def rss_mb(stack: Stack) -> float:
    pid = next(p["pid"] for p in stack.sup.list() if p["name"] == NAME and p["alive"])
    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


_REBUILT = re.compile(r"(\d+) schedules rebuilt from \S+ in ([\d.]+) s")


def restart(stack: Stack, timeout_s: float = 600) -> dict[str, Any]:
    """kill -9, start again: the rebuild's own time (its log line) and start to ready."""
    log = stack.sup.log_path(NAME)
    before = log.read_text(errors="replace").count("schedules rebuilt")
    stack.kill(NAME)
    started = time.perf_counter()
    stack.start(NAME, wait=False)
    deadline = time.monotonic() + timeout_s
    while True:
        text = log.read_text(errors="replace")
        found = _REBUILT.findall(text)
        if len(found) > before:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"no rebuild:\n{stack.log_tail(NAME)}")
        time.sleep(0.1)
    count, rebuild_s = found[-1]
    return {
        "schedules_rebuilt": int(count),
        "rebuild_s": float(rebuild_s),
        "restart_to_ready_s": round(time.perf_counter() - started, 2),
    }


def lateness(
    settings: Settings, ids: set[str], api: FakeApi, want: int, timeout_s: float
) -> dict[str, Any]:
    """Wait for ``want`` submissions of ``ids``; their lateness, as the scheduler recorded it
    (the API's answer after due) and as the API saw it (the request's arrival after due)."""
    codec = Codec.default()
    topic = TopicNames(settings.topic_prefix).schedule_events
    deadline = time.monotonic() + timeout_s
    while sum(1 for pid in list(api.arrivals) if pid.split("-")[1] in ids) < want:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    time.sleep(5)  # the last answers recorded
    answered: dict[str, float] = {}
    arrival: list[float] = []
    due_of: dict[tuple[str, int], int] = {}
    for m in queries.scan(settings, topic):
        schema, r = codec.decode(m.value() or b"")
        if (
            schema != wire.OCCURRENCE_SCHEMA
            or r["schedule_id"] not in ids
            or r["status"] != "submitted"
        ):
            continue
        late = (r["submitted_at"] - r["due_at"]) / US
        answered.setdefault(r["payment_id"], late)
        due_of[(r["schedule_id"], r["occurrence_at"])] = r["due_at"]
    last = 0.0
    for pid, t in api.arrivals.items():
        parsed = sm.parse_payment_id(pid)
        if parsed and parsed in due_of:
            arrival.append(t - due_of[parsed] / US)
            last = max(last, t)
    span = last - min(due_of.values()) / US if arrival else 0.0
    return {
        "submitted": len(answered),
        # occurrences submitted over the time from the first due one to the last arrival
        "fired_per_s": round(len(arrival) / span, 1) if span > 0 else None,
        "late_s": _percentiles(list(answered.values())),
        "arrival_late_s": _percentiles(arrival),
        "early": sum(1 for x in arrival if x < 0),
    }


def _percentiles(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    xs = sorted(xs)
    q = statistics.quantiles(xs, n=100, method="inclusive") if len(xs) > 1 else [xs[0]] * 99
    return {
        "p50": round(q[49], 3),
        "p90": round(q[89], 3),
        "p99": round(q[98], 3),
        "max": round(xs[-1], 3),
    }


def minute_after(seconds: float) -> datetime:
    t = datetime.now(UTC) + timedelta(seconds=seconds)
    return t.replace(second=0, microsecond=0) + timedelta(minutes=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--schedules", type=int, default=100_000)
    ap.add_argument("--due", type=int, default=10_000)
    ap.add_argument("--api-latency-ms", type=float, default=10.0)
    ap.add_argument("--quick", action="store_true", help="10,000 schedules, 1,000 due")
    a = ap.parse_args()
    if a.quick:
        a.schedules, a.due = 10_000, 1_000
    rng = random.Random(7)
    with private_broker() as cluster:
        port = free_port_base(1)
        api = FakeApi(port, a.api_latency_ms)
        settings = namespace(cluster, partitions=12).with_(
            api_port=port, api_token="bench", schedule_jitter_s=60.0, log_level="INFO"
        )
        stack = Stack(
            settings,
            Layout(workers=0, warehouse=False, readside=False, detector=False, schedulers=1),
        )
        stack.start(scheduler_spec(1), wait=False)
        try:
            # 1. Many active schedules: daily, due tomorrow (none falls due during the run).
            tomorrow = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
            defs = [
                (
                    f"d{i:06d}",
                    _definition(
                        "FREQ=DAILY", tomorrow + timedelta(seconds=rng.randrange(86_400)), i
                    ),
                )
                for i in range(a.schedules)
            ]
            t = time.perf_counter()
            create_schedules(settings, defs)
            produced_s = time.perf_counter() - t
            decided_s = produced_s + wait_caught_up(settings, 1800)
            emit({
                "name": "scheduler_create",
                "schedules": a.schedules,
                "seconds": round(decided_s, 1),
                "creates_per_s": round(a.schedules / decided_s),
                "scheduler_rss_mb": rss_mb(stack),
            })  # fmt: skip
            r = restart(stack)
            emit({
                "name": "scheduler_restart",
                "schedules": a.schedules,
                **r,
                "scheduler_rss_mb_after_restart": rss_mb(stack),
            })  # fmt: skip
            # 2. 10,000 HOURLY at the same minute's start, spread by the jitter (60 s here).
            for label, rrule in (("spread", "FREQ=HOURLY"), ("burst", "FREQ=MINUTELY;COUNT=1")):
                at = minute_after(30 + a.due / 1000)
                ids = {f"{label}{i:06d}" for i in range(a.due)}
                defs = [(sid, _definition(rrule, at, i)) for i, sid in enumerate(sorted(ids))]
                create_schedules(settings, defs)
                wait_caught_up(settings, 600)
                cpu0 = psutil.Process(
                    next(p["pid"] for p in stack.sup.list() if p["name"] == NAME)
                ).cpu_times()
                wait_s = (at - datetime.now(UTC)).total_seconds() + 60 + 5
                result = lateness(settings, ids, api, a.due, max(wait_s, 0) + 300)
                cpu1 = psutil.Process(
                    next(p["pid"] for p in stack.sup.list() if p["name"] == NAME)
                ).cpu_times()
                emit({
                    "name": f"scheduler_due_{label}",
                    "due_in_one_minute": a.due,
                    "rule": rrule,
                    "jitter_s": 60.0 if label == "spread" else 0.0,
                    "active_schedules": a.schedules + (a.due if label == "burst" else 0),
                    **result,
                    "scheduler_cpu_s": round(cpu1.user + cpu1.system - cpu0.user - cpu0.system, 1),
                    "target_p99_late_s": 5.0,
                })  # fmt: skip
        finally:
            stack.sup.stop_all()


if __name__ == "__main__":
    main()
