"""PSP resilience benchmarks (issue 13), through the real processes on a private broker: the
payment API, a ledger worker, a payments worker, two PSP executors and the PSP simulator
(20 ms of latency on every PSP), card pay-ins offered at a fixed rate while ``cardco`` goes
out and comes back (``--cycles`` times: healthy, out, recovering).

* ``fallback_succeeded_per_s``: card payments that succeeded (through ``backupcard``) per
  second while cardco was out, counted from their ``succeeded`` events (target 200/s).
* ``fallback_added_ms``: for each payment whose first attempt failed at cardco and fell back,
  the time that first attempt cost (the second attempt's start minus the first's, log times);
  and the p99 submit -> succeeded of the payments sent while cardco was out minus that of the
  payments sent while it was healthy (target p99 200 ms).
* ``breaker_open_after_s`` / ``breaker_closed_after_s``: from the outage's start to cardco's
  breaker open, and from its end to closed (the ``since`` of the breakers' records; targets
  5 s and 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from typing import Any

import httpx
from bench_payments import ACCOUNTS, _body, _client, _pct, _post
from common import emit, namespace, private_broker

from base.kafka import reader
from base.topics import TopicNames
from ops.ports import free_port_base
from paystream.stack import Layout, Stack, psp_sim_ports
from producers.commands import parse_command
from producers.producer import CommandProducer
from schemas.codec import Codec

US = 1_000_000


def _stack(cluster: Any, psp_latency_ms: int) -> Stack:
    s = namespace(cluster, partitions=12)
    base = free_port_base(7)
    s = s.with_(api_port=base, psp_sim_port=base + 3, warehouse_port=base + 1, log_level="WARNING")
    layout = Layout(
        workers=1,
        warehouse=False,
        readside=False,
        detector=False,
        payment_workers=1,
        executor=True,
        executors=2,
        api=True,
        psp_sim=True,
    )
    st = Stack(s, layout)
    st.up()
    for port in psp_sim_ports(s).values():
        httpx.post(f"http://127.0.0.1:{port}/v1/admin/latency", json={"ms": psp_latency_ms})
    return st


class _Events(threading.Thread):
    """Payment events as they come: when each payment succeeded (wall clock) and on which
    PSP, and each attempt's start (log time)."""

    def __init__(self, st: Stack) -> None:
        super().__init__(daemon=True)
        self.s = st.resolved
        self.done: dict[str, tuple[float, str]] = {}
        self.attempts: dict[str, dict[int, int]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import TopicPartition

        topic = TopicNames(self.s.topic_prefix).payment_events
        c = reader(self.s)
        c.assign([TopicPartition(topic, p, 0) for p in range(self.s.partitions)])
        codec = Codec.default()
        while not self.stop.is_set():
            first = c.poll(0.05)  # consume() would wait out its timeout: up to 50 ms late
            for m in [] if first is None else [first, *c.consume(1000, timeout=0)]:
                if m.error() is not None:
                    continue
                name, r = codec.decode(m.value() or b"")
                if name == "PaymentStatusChanged" and r["status"] == "succeeded":
                    self.done.setdefault(r["payment_id"], (time.perf_counter(), r["psp"]))
                elif name == "PaymentAttempt":
                    self.attempts.setdefault(r["payment_id"], {})[r["attempt"]] = r["started_at"]
        c.close()


def _breaker_records(st: Stack) -> list[dict[str, Any]]:
    from base.kafka import scan

    s = st.resolved
    codec = Codec.default()
    out = []
    for m in scan(s, TopicNames(s.topic_prefix).psp_breakers):
        name, r = codec.decode(m.value() or b"")
        if name == "PspBreakerChanged" and r["psp"] == "cardco":
            out.append(r)
    return sorted(out, key=lambda r: (r["since"], r["seq"]))


def run(cluster: Any, rate: int, cycles: int, healthy_s: float, out_s: float, recover_s: float,
        psp_latency_ms: int) -> dict[str, Any]:  # fmt: skip
    st = _stack(cluster, psp_latency_ms)
    s = st.resolved
    cardco = f"http://127.0.0.1:{psp_sim_ports(s)['cardco']}/v1/admin/outage"
    try:
        with CommandProducer(s, client_id="bench") as p:
            for a in range(ACCOUNTS):
                p.send(parse_command({"type": "open_account", "command_id": f"o{a}", "account": f"bench-{a}", "user": f"bench-user-{a}", "currency": "USD"}))  # fmt: skip
            p.flush(30)
        time.sleep(3)
        events = _Events(st)
        events.start()
        sent: dict[str, tuple[float, str]] = {}  # payment -> (submitted, phase)
        outages: list[tuple[float, float]] = []  # wall-clock (start, end) of each outage
        phases: list[tuple[float, str]] = []  # (perf_counter start, phase)
        cycle_s = healthy_s + out_s + recover_s

        async def load() -> None:
            async with _client(st, 256) as http, httpx.AsyncClient(timeout=10) as admin:
                t0 = time.perf_counter()
                tasks = []
                n = int(rate * cycle_s * cycles)
                phase, outage_started = "healthy", 0.0
                for i in range(n):
                    due = t0 + i / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    at = (due - t0) % cycle_s
                    want = "healthy" if at < healthy_s else "out" if at < healthy_s + out_s else "recovering"  # fmt: skip
                    if want != phase:
                        phases.append((time.perf_counter(), want))
                        if want == "out":
                            outage_started = time.time()
                            (await admin.post(cardco, json={"seconds": out_s + 60})).raise_for_status()  # fmt: skip
                        elif want == "recovering":
                            (await admin.post(cardco, json={"seconds": 0})).raise_for_status()
                            outages.append((outage_started, time.time()))
                        phase = want
                    pid = f"res-{i}"
                    sent[pid] = (time.perf_counter(), phase)
                    body = _body(pid, f"bench-{i % ACCOUNTS}", f"bench-user-{i % ACCOUNTS}")
                    tasks.append(asyncio.create_task(_post(http, body)))
                await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run(load())
        deadline = time.perf_counter() + 180
        while len(events.done) < len(sent) and time.perf_counter() < deadline:
            time.sleep(0.5)
        time.sleep(1.0)
        events.stop.set()
        breakers = _breaker_records(st)
    finally:
        st.stop()

    def lat(phase: str) -> list[float]:
        return [(events.done[k][0] - t) * 1000 for k, (t, ph) in sent.items()
                if ph == phase and k in events.done]  # fmt: skip

    # Succeeded per second while cardco was out (after its first second: the fallback's rate,
    # not the queue of the moment it went out), from the succeeded events' times.
    out_windows = []
    starts = [t for t, ph in phases if ph == "out"]
    ends = [t for t, ph in phases if ph == "recovering"]
    for a, b in zip(starts, ends, strict=False):
        out_windows.append((a + 1.0, b))
    in_window = [
        (t, psp) for t, psp in events.done.values()
        if any(a <= t < b for a, b in out_windows)
    ]  # fmt: skip
    window_s = sum(b - a for a, b in out_windows)
    via = {p: sum(1 for _, x in in_window if x == p) for p in {x for _, x in in_window}}
    fell_back = [(a[2] - a[1]) / 1000 for a in events.attempts.values() if 1 in a and 2 in a]
    healthy, out = lat("healthy"), lat("out")
    opens, closes = [], []
    for start, end in outages:
        o = next((r["since"] / US for r in breakers if r["state"] == "open" and r["since"] / US >= start), None)  # fmt: skip
        c = next((r["since"] / US for r in breakers if r["state"] == "closed" and r["since"] / US >= end), None)  # fmt: skip
        opens.append(None if o is None else round(o - start, 2))
        closes.append(None if c is None else round(c - end, 2))
    return {
        "name": "psp_resilience",
        "offered_per_s": rate,
        "psp_latency_ms": psp_latency_ms,
        "cycles": cycles,
        "phase_s": {"healthy": healthy_s, "out": out_s, "recovering": recover_s},
        "payments": len(sent),
        "succeeded": len(events.done),
        "fallback_succeeded_per_s": round(len(in_window) / window_s) if window_s else None,
        "succeeded_while_out_via": via,
        "fallbacks": len(fell_back),
        "fallback_added_ms": {"p50": _pct(fell_back, 0.5), "p99": _pct(fell_back, 0.99)},
        "submit_to_succeeded_ms": {
            "healthy": {"p50": _pct(healthy, 0.5), "p99": _pct(healthy, 0.99)},
            "out": {"p50": _pct(out, 0.5), "p99": _pct(out, 0.99)},
        },
        "p99_added_while_out_ms": round(_pct(out, 0.99) - _pct(healthy, 0.99), 1),
        "breaker_open_after_s": opens,
        "breaker_closed_after_s": closes,
        "target": "200/s through the fallback; p99 added 200 ms; open 5 s; closed 30 s",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=250)
    ap.add_argument("--cycles", type=int, default=2)
    ap.add_argument("--healthy-s", type=float, default=8)
    ap.add_argument("--out-s", type=float, default=15)
    ap.add_argument("--recover-s", type=float, default=12)
    ap.add_argument("--psp-latency-ms", type=int, default=20)
    a = ap.parse_args()
    with private_broker() as cluster:
        emit(run(cluster, a.rate, a.cycles, a.healthy_s, a.out_s, a.recover_s, a.psp_latency_ms))


if __name__ == "__main__":
    main()
