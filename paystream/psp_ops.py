"""What ``paystream psp status|outage|dlq`` read and write (docs/psp-resilience.md).

* ``status``: each PSP's circuit breaker (``paystream.psp-breakers.v1``), the executors'
  calls over the breaker window summed (``paystream.psp-stats.v1``: successes, failures,
  refused token requests, p50/p99 latency from the added histograms), and the orders at it
  (``paystream.payments-state.v1``: payments whose current attempt is at the PSP,
  ``processing``, ``pending`` or ``unknown``; a scan of the compacted changelog).
* ``outage``: the simulator's admin outage of one PSP.
* ``dlq``: the dead letters (``paystream.psp-deadletter.v1``, compacted by id) and their
  replay: the request goes back to the executor as it was (same kind, attempt and token,
  with a fresh retry budget and its history kept), and the dead letter is written again
  with ``replayed_at``.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer

from base.config import Settings, kafka_client_config
from base.kafka import scan
from base.topics import TopicNames
from connectors.psp.config import PspConfig, load_psps, psps_path
from connectors.psp.stats import add, percentile_us
from schemas import now_micros
from schemas.codec import Codec
from schemas.errors import DecodeError
from streams.payments import model as pm
from streams.payments.statuses import AT_PSP
from streams.payments_state import decode_state

US_PER_S = 1_000_000
# A stats record older than this many windows is an executor that stopped: not counted.
STALE_WINDOWS = 2


def iso(ts_us: int | None) -> str | None:
    if ts_us is None:
        return None
    return datetime.fromtimestamp(ts_us / US_PER_S, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _records(settings: Settings, topic: str, schema: str) -> Iterable[tuple[str, Any]]:
    """(key, record or None for a tombstone) of ``topic`` in log order, ``schema`` only."""
    codec = Codec.default()
    for msg in scan(settings, topic):
        key = (msg.key() or b"").decode(errors="replace")
        value = msg.value()
        if value is None:
            yield key, None
            continue
        try:
            name, record = codec.decode(value)
        except DecodeError:
            continue
        if name == schema:
            yield key, record


def psps(settings: Settings) -> tuple[PspConfig, ...]:
    return load_psps(psps_path(settings.home))


def breakers(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each PSP's breaker: the latest record whose seq is at least the one held (the
    executors' rule)."""
    out: dict[str, dict[str, Any]] = {}
    topic = TopicNames(settings.topic_prefix).psp_breakers
    for _, r in _records(settings, topic, "PspBreakerChanged"):
        if r is not None and r["seq"] >= out.get(r["psp"], {}).get("seq", 0):
            out[r["psp"]] = r
    return out


def in_flight(settings: Settings) -> dict[str, Counter[str]]:
    """Orders whose current attempt is at a PSP, by PSP and status."""
    latest: dict[str, bytes] = {}
    for msg in scan(settings, TopicNames(settings.topic_prefix).payments_state):
        key = (msg.key() or b"").decode(errors="replace")
        value = msg.value()
        if key.startswith(pm.IDEM):
            continue
        if value is None:
            latest.pop(key, None)
        else:
            latest[key] = value
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for value in latest.values():
        try:
            state = decode_state(value)
        except (ValueError, KeyError, TypeError, IndexError):
            continue
        if isinstance(state, pm.PaymentState) and state.status in AT_PSP and state.attempt:
            counts[state.attempt.psp][state.status.value] += 1
    return counts


def status(settings: Settings, now_us: int | None = None) -> dict[str, Any]:
    now_us = now_us or now_micros()
    configured = psps(settings)
    states = breakers(settings)
    stats: dict[str, dict[str, Any]] = {}
    topic = TopicNames(settings.topic_prefix).psp_stats
    for key, r in _records(settings, topic, "PspStats"):
        if r is None:
            stats.pop(key, None)
        else:
            stats[key] = r
    flights = in_flight(settings)
    window_s = max((r["window_s"] for r in stats.values()), default=0)
    rows = []
    for p in configured:
        fresh = [
            r
            for r in stats.values()
            if r["psp"] == p.name and now_us - r["ts"] <= STALE_WINDOWS * r["window_s"] * US_PER_S
        ]
        buckets: list[int] = []
        for r in fresh:
            buckets = add(buckets, r["latency_buckets"])
        b = states.get(p.name)
        p50, p99 = percentile_us(buckets, 0.5), percentile_us(buckets, 0.99)
        counts = flights.get(p.name, Counter())
        rows.append(
            {
                "psp": p.name,
                "breaker": {
                    "state": b["state"] if b else "closed",
                    "since": iso(b["since"]) if b else None,
                    "seq": b["seq"] if b else 0,
                    "reason": b["reason"] if b else None,
                },
                "successes": sum(r["successes"] for r in fresh),
                "failures": sum(r["failures"] for r in fresh),
                "rejected": sum(r["rejected"] for r in fresh),
                "latency_ms": {
                    "p50": None if p50 is None else round(p50 / 1000, 1),
                    "p99": None if p99 is None else round(p99 / 1000, 1),
                },
                "calls_in_progress": sum(r["in_flight"] for r in fresh),
                "in_flight": {
                    "processing": counts["processing"],
                    "pending": counts["pending"],
                    "unknown": counts["unknown"],
                    "total": sum(counts.values()),
                },
                "executors": len(fresh),
            }
        )
    return {"window_s": window_s, "psps": rows}


# --- dead letters --------------------------------------------------------------------------


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    """Every dead letter (the latest record of each id), oldest first."""
    latest: dict[str, dict[str, Any]] = {}
    topic = TopicNames(settings.topic_prefix).psp_deadletter
    for key, r in _records(settings, topic, "PspDeadLetter"):
        if r is None:
            latest.pop(key, None)
        else:
            latest[key] = r
    return sorted(latest.values(), key=lambda r: (r["dead_at"], r["dead_letter_id"]))


def dead_letter_view(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["dead_letter_id"],
        "request_id": r["request_id"],
        "payment_id": r["payment_id"],
        "payment_order_id": r["payment_order_id"],
        "attempt": r["attempt"],
        "kind": r["kind"],
        "psp": r["psp"],
        "token": r["token"],
        "tries": r["tries"],
        "reason": r["reason"],
        "first_tried_at": iso(r["first_tried_at"]),
        "dead_at": iso(r["dead_at"]),
        "replayed_at": iso(r["replayed_at"]),
        "history": [{**h, "at": iso(h["at"])} for h in r["history"]],
    }


class UnknownDeadLetter(LookupError):
    pass


def replay(settings: Settings, ids: list[str], every: bool) -> list[dict[str, Any]]:
    """Send dead letters back to the executor (``ids``, or ``every`` one not replayed yet);
    the replayed dead letters, as written again. ``UnknownDeadLetter`` names an unknown id."""
    by_id = {r["dead_letter_id"]: r for r in dead_letters(settings)}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise UnknownDeadLetter(", ".join(missing))
    chosen = [by_id[i] for i in ids] if ids else []
    if every:
        chosen += [r for r in by_id.values() if r["replayed_at"] is None and r not in chosen]
    if not chosen:
        return []
    codec = Codec.default()
    topics = TopicNames(settings.topic_prefix)
    producer = Producer(
        {
            **kafka_client_config(settings),
            "client.id": "paystream-psp-dlq",
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
        }
    )
    now = now_micros()
    done = []
    for r in chosen:
        _, request = codec.decode(r["request"])
        again = {**request, "tries": 0, "first_tried_at": None, "not_before": None}
        producer.produce(
            topics.psp_requests,
            codec.encode("PspRequest", again),
            r["payment_order_id"].encode(),
        )
        replayed = {**r, "replayed_at": now}
        producer.produce(
            topics.psp_deadletter,
            codec.encode("PspDeadLetter", replayed),
            r["dead_letter_id"].encode(),
        )
        done.append(replayed)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} records not acknowledged by the broker in 30 s")
    return done


# --- the simulator's outage ----------------------------------------------------------------


def outage(settings: Settings, psp: str, seconds: float) -> dict[str, Any]:
    """Every call of ``psp`` fails (503, Retry-After) for ``seconds`` (0 ends it): the
    simulator's admin endpoint. ``LookupError`` for a PSP that is not the simulator's."""
    import httpx

    by_name = {p.name: p for p in psps(settings)}
    p = by_name.get(psp)
    if p is None:
        raise LookupError(f"no PSP {psp!r} in psps.toml ({', '.join(by_name)})")
    if p.connector != "simulator":
        raise LookupError(f"{psp} is not a simulated PSP (connector {p.connector!r})")
    r = httpx.post(f"{p.base_url}/v1/admin/outage", json={"seconds": seconds}, timeout=10)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return {
        "psp": psp,
        "outage_s": body.get("outage_s", seconds),
        "until": iso(now_micros() + round(seconds * US_PER_S)),
        "at": iso(int(time.time() * US_PER_S)),
    }
