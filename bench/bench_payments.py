"""Payments benchmarks (issue 11): API admission, end-to-end pay-ins, and the seed's mix.

* ``admission``: ``POST /payments/payment/v1`` from many concurrent clients for a while:
  admissions per second and the client's p50/p99 (target 2,000/s, p99 50 ms).
* ``e2e``: pay-ins through ``cardco`` with 20 ms of simulated PSP latency, offered at a fixed
  rate: the rate sustained and submit -> succeeded p50/p99 (target 500/s, p99 1 s), timed
  from the payment events (``paystream.payment-events.v1``), not by polling.
* ``mix``: the seed's traffic, two reads (``GET`` a payment) per write, offered at 10x its
  50 TPS (500 requests/s) for a while: p50/p99 per kind (target p99 100 ms).

Every figure comes from the real processes (``paystream`` verbs started by the stack
builder) on a private broker; the load generator is asyncio + httpx in this process.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
import uuid
from typing import Any

import aiohttp
import httpx
from common import emit, namespace, private_broker

from base.config import api_token
from base.kafka import reader
from base.topics import TopicNames
from ops.ports import free_port_base
from paystream.stack import Layout, Stack
from producers.commands import parse_command
from producers.producer import CommandProducer
from schemas.codec import Codec

PATH = "/payments/payment/v1"


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 1)


def _stack(cluster: Any, psp_latency_ms: int, ledger: bool) -> Stack:
    s = namespace(cluster, partitions=12)
    base = free_port_base(7)
    s = s.with_(api_port=base, psp_sim_port=base + 3, warehouse_port=base + 1, log_level="WARNING")
    layout = Layout(
        workers=1 if ledger else 0,
        warehouse=False,
        readside=False,
        detector=False,
        payment_workers=1,
        executor=ledger,
        api=True,
        psp_sim=ledger,
    )
    st = Stack(s, layout)
    st.up()
    if ledger and psp_latency_ms:
        httpx.post(
            f"http://127.0.0.1:{s.psp_sim_port}/v1/admin/latency", json={"ms": psp_latency_ms}
        )
    return st


# Pay-ins end to end are spread over this many accounts, each its own user: the ledger holds
# at most 64 pay-ins in flight per account (streams.ledger.model), and the risk engine's
# built-in rules send a user's 200th payment in an hour to review (streams/risk/defaults.py).
# Either would make the benchmark measure a rule, not the path.
ACCOUNTS = 200


def _body(pid: str, account: str, user: str = "bench-user") -> dict[str, str]:
    return {
        "payment_id": pid, "user_id": user, "type": "pay_in",
        "from_acct": "card_4242424242424242", "to_acct": account, "amount": "1.00",
        "currency": "USD", "payment_option": "card",
    }  # fmt: skip


async def _post(http: aiohttp.ClientSession, body: dict[str, str]) -> float:
    t0 = time.perf_counter()
    async with http.post(PATH, json=body, headers={"Idempotency-Key": body["payment_id"]}) as r:
        text = await r.text()
        if r.status != 201:
            raise RuntimeError(f"{r.status} {text[:200]}")
    return (time.perf_counter() - t0) * 1000


def _client(st: Stack, connections: int) -> aiohttp.ClientSession:
    # aiohttp, not httpx: httpcore's pool scans cost ~7 ms of CPU per request at 64
    # connections (measured in the executor), which would make the load generator the limit.
    s = st.resolved
    return aiohttp.ClientSession(
        base_url=f"http://127.0.0.1:{s.api_port}",
        headers={"Authorization": f"Bearer {api_token(s)}"},
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=30),
    )


def admission(cluster: Any, seconds: float, concurrency: int) -> dict[str, Any]:
    st = _stack(cluster, 0, ledger=False)
    try:

        async def run() -> tuple[list[float], float]:
            lat: list[float] = []
            stop = time.perf_counter() + seconds
            async with _client(st, concurrency) as http:
                await _post(http, _body(f"warm-{uuid.uuid4().hex}", "a"))

                async def worker() -> None:
                    while time.perf_counter() < stop:
                        lat.append(await _post(http, _body(f"adm-{uuid.uuid4().hex}", "a")))

                t0 = time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(concurrency)))
                return lat, time.perf_counter() - t0

        lat, took = asyncio.run(run())
        return {
            "name": "payments_admission",
            "concurrency": concurrency,
            "admissions": len(lat),
            "admissions_per_s": round(len(lat) / took),
            "p50_ms": _pct(lat, 0.5),
            "p99_ms": _pct(lat, 0.99),
            "target": "2000/s, p99 50 ms",
        }
    finally:
        st.stop()


class _Succeeded(threading.Thread):
    """Watches payment events: when each payment reached ``succeeded`` (wall clock)."""

    def __init__(self, st: Stack) -> None:
        super().__init__(daemon=True)
        self.s = st.resolved
        self.done: dict[str, float] = {}
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
                    self.done.setdefault(r["payment_id"], time.perf_counter())
        c.close()


def e2e(cluster: Any, rate: int, seconds: float, psp_latency_ms: int) -> dict[str, Any]:
    st = _stack(cluster, psp_latency_ms, ledger=True)
    s = st.resolved
    try:
        with CommandProducer(s, client_id="bench") as p:
            for a in range(ACCOUNTS):
                p.send(parse_command({"type": "open_account", "command_id": f"o{a}", "account": f"bench-{a}", "user": f"bench-user-{a}", "currency": "USD"}))  # fmt: skip
            p.flush(30)
        time.sleep(2)
        watcher = _Succeeded(st)
        watcher.start()
        sent: dict[str, float] = {}

        async def run() -> None:
            async with _client(st, 256) as http:
                t0 = time.perf_counter()
                tasks = []
                for i in range(int(rate * seconds)):
                    due = t0 + i / rate
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    pid = f"e2e-{i}"
                    sent[pid] = time.perf_counter()
                    a = i % ACCOUNTS
                    body = _body(pid, f"bench-{a}", f"bench-user-{a}")
                    tasks.append(asyncio.create_task(_post(http, body)))
                await asyncio.gather(*tasks)

        started = time.perf_counter()
        asyncio.run(run())
        deadline = time.perf_counter() + 120
        while len(watcher.done) < len(sent) and time.perf_counter() < deadline:
            time.sleep(0.2)
        watcher.stop.set()
        took = max(watcher.done.values(), default=started) - started
        lat = [(watcher.done[k] - t) * 1000 for k, t in sent.items() if k in watcher.done]
        return {
            "name": "payments_e2e",
            "psp_latency_ms": psp_latency_ms,
            "offered_per_s": rate,
            "payments": len(sent),
            "succeeded": len(lat),
            "succeeded_per_s": round(len(lat) / took) if took > 0 else 0,
            "p50_ms": _pct(lat, 0.5),
            "p99_ms": _pct(lat, 0.99),
            "target": "500/s, p99 1000 ms",
        }
    finally:
        st.stop()


def mix(cluster: Any, rate: int, seconds: float) -> dict[str, Any]:
    """The seed's mix under locust (a real load tool): ``rate`` requests/s offered by
    ``rate / USER_RPS`` users, each pacing itself; percentiles from locust's own CSV."""
    import csv
    import os
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    user_rps = 2.0
    users = max(1, round(rate / user_rps))
    st = _stack(cluster, 0, ledger=False)
    s = st.resolved
    out = Path(tempfile.mkdtemp(prefix="paystream-locust-")) / "mix"
    try:
        env = {
            **os.environ,
            "PAYSTREAM_LOCUST_TOKEN": api_token(s),
            "PAYSTREAM_LOCUST_USER_RPS": str(user_rps),
        }
        subprocess.run(
            [
                sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile_payments.py")),
                "--headless", "--host", f"http://127.0.0.1:{s.api_port}", "-u", str(users),
                "-r", str(users), "-t", f"{int(seconds)}s", "--csv", str(out), "--only-summary",
                "--loglevel", "WARNING",
            ],
            env=env, check=False, capture_output=True, timeout=seconds + 120,
        )  # fmt: skip
        with open(f"{out}_stats.csv") as f:
            rows = {r["Name"]: r for r in csv.DictReader(f)}

        def num(name: str, col: str) -> float:
            v = rows.get(name, {}).get(col) or "nan"
            return float(v)

        return {
            "name": "payments_mix",
            "tool": "locust",
            "offered_per_s": rate,
            "users": users,
            "seconds": seconds,
            "achieved_per_s": round(num("Aggregated", "Requests/s")),
            "writes": int(num("POST payment", "Request Count")),
            "reads": int(num("GET payment", "Request Count")),
            "failures": int(num("Aggregated", "Failure Count")),
            "write_p50_ms": num("POST payment", "50%"),
            "write_p99_ms": num("POST payment", "99%"),
            "read_p50_ms": num("GET payment", "50%"),
            "read_p99_ms": num("GET payment", "99%"),
            "p99_ms": num("Aggregated", "99%"),
            "target": "500 requests/s (2 reads per write), p99 100 ms",
        }
    finally:
        st.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["admission", "e2e", "mix"])
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--rate", type=int, default=500)
    ap.add_argument("--psp-latency-ms", type=int, default=20)
    a = ap.parse_args()
    with private_broker() as cluster:
        if a.only in (None, "admission"):
            emit(admission(cluster, a.seconds, a.concurrency))
        if a.only in (None, "e2e"):
            emit(e2e(cluster, a.rate, a.seconds, a.psp_latency_ms))
        if a.only in (None, "mix"):
            emit(mix(cluster, a.rate, a.seconds))


if __name__ == "__main__":
    main()
