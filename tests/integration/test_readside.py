"""The faust read side against the real write side: converges, survives kill -9, reads committed.

One test, because each faust start costs seconds: the write side runs the phased workload
while two read-side workers (subprocesses, as in production) share the partitions and fold
it; one is killed -9 in the middle, the other once caught up, and every view is compared
with the write side's own state and event topics, asking each key of either worker (faust
routes the request to the key's owner).
"""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest

from base.config import Settings
from base.topics import TopicNames
from paystream import queries
from paystream.stack import Layout, readside_spec
from paystream.workload import Workload
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.readside import projections as pj
from tests.stack import LedgerStack, stack_for

pytestmark = pytest.mark.integration


class ReadSideProc:
    """A read-side worker of the stack (``paystream readside``), with its web API."""

    def __init__(self, settings: Settings, port: int, name: str) -> None:
        self.settings = settings
        self.port = port
        self.name = name
        self.stack = stack_for(settings, Layout(workers=0, warehouse=False, detector=False))
        self.sup = self.stack.sup

    def start(self) -> None:
        self.stack.start(readside_spec(self.settings, self.name, self.port), wait=False)

    def kill(self) -> None:
        self.sup.kill(self.name, signal.SIGKILL)

    def stop(self) -> None:
        self.sup.stop(self.name)

    def log(self) -> str:
        path = self.sup.log_path(self.name)
        return "\n".join(path.read_text().splitlines()[-40:]) if path.exists() else ""

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def wait_until(self, check: Callable[[], Any], timeout_s: float, what: str) -> None:
        """Poll ``check`` (falsy = done; else what is still wrong) until done or timeout."""
        deadline = time.monotonic() + timeout_s
        wrong: Any = "never checked"
        while time.monotonic() < deadline:
            try:
                wrong = check()
            except (OSError, json.JSONDecodeError) as exc:  # not up yet
                wrong = repr(exc)
            if not wrong:
                return
            time.sleep(0.5)
        raise AssertionError(
            f"{what} not reached in {timeout_s}s: {str(wrong)[:2000]}\n{self.log()}"
        )


def expected(stack: LedgerStack) -> dict[str, Any]:
    """What the read side must show, from the write side's state and its event topics."""
    settings = stack.settings
    names = TopicNames(settings.topic_prefix)
    codec = Codec.default()
    transfers: dict[str, str] = {}
    for m in queries.scan(settings, names.transfers):
        t = codec.decode(m.value())[1]
        transfers[t["transfer_id"]] = t["status"]  # log order: the last status is the final one
    outcomes: dict[str, tuple[str, str | None]] = {}
    reused: dict[str, set[str]] = defaultdict(set)
    for o in stack.outcomes():
        if pj.is_reuse(o):
            reused[o["command_id"]].add(o["event_id"])
        else:
            outcomes.setdefault(o["command_id"], (o["status"], o["reason"]))
    history: dict[str, list[str]] = defaultdict(list)
    for m in queries.scan(settings, names.ledger):
        p = codec.decode(m.value())[1]
        if not pj.is_system_account(p["account"]):
            history[p["account"]].append(p["event_id"])
    return {
        "balances": stack.balances(),
        "transfers": transfers,
        "outcomes": outcomes,
        "reused": reused,
        "history": history,
    }


def diff_views(workers: list[ReadSideProc], want: dict[str, Any]) -> list[str]:
    """Every difference between the API and ``want`` (empty when converged)."""
    got: dict[str, dict[str, Any]] = {}
    for rs in workers:  # each lists the accounts it holds; together, all of them, once
        status, rows = rs.get("/accounts")
        if status != 200:
            return [f"{rs.name} /accounts: HTTP {status}"]
        for r in rows:
            if r["account"] in got:
                return [f"{r['account']} listed by two workers"]
            got[r["account"]] = {
                k: r[k] for k in ("account", "user", "currency", "balance", "status")
            }
    if got != want["balances"]:
        bad = [a for a in set(got) | set(want["balances"]) if got.get(a) != want["balances"].get(a)]
        return [
            f"accounts differ ({len(bad)}), e.g. {a}: {got.get(a)} != {want['balances'].get(a)}"
            for a in sorted(bad)[:3]
        ]
    problems: list[str] = []
    for i, (tid, st) in enumerate(want["transfers"].items()):
        status, t = workers[i % len(workers)].get(f"/transfers/{tid}")
        if status != 200 or t["status"] != st:
            problems.append(f"transfer {tid}: {status} {t} != {st}")
    for i, (cid, (st, reason)) in enumerate(want["outcomes"].items()):
        status, o = workers[i % len(workers)].get(f"/commands/{cid}")
        if status != 200 or (o["status"], o["reason"]) != (st, reason):
            problems.append(f"command {cid}: {status} {o} != {(st, reason)}")
        elif {r["event_id"] for r in o["reused"]} != want["reused"].get(cid, set()):
            problems.append(f"command {cid}: reuses {o['reused']} != {want['reused'].get(cid)}")
    for i, (account, b) in enumerate(want["balances"].items()):
        status, one = workers[i % len(workers)].get(f"/accounts/{account}")
        if status != 200 or {k: one[k] for k in b} != b:
            problems.append(f"account {account}: {status} {one} != {b}")
    return problems[:5]


def test_read_side_converges_survives_kill_9_and_skips_aborted_records(
    settings: Settings, free_port_base: Callable[[int], int]
) -> None:
    started = time.monotonic()
    timings: dict[str, float] = {}
    stack = LedgerStack(settings, workers=2)
    base = free_port_base(2)
    workers = [ReadSideProc(settings, base + i, f"readside-{i + 1}") for i in range(2)]
    first, second = workers
    stack.start()
    for rs in workers:
        rs.start()
    try:
        _produce_aborted_ghost(settings)
        work = Workload(accounts=40, transfers=600, seed=5, prefix="r")
        for name, commands in work.phases:
            assert stack.send(commands) == 0
            if name.startswith("transfers"):
                # Mid-stream crash: the restarted worker replays its uncommitted tail.
                first.kill()
                first.start()
            # Phases are ordered on the write side; the read side's convergence is checked
            # below, with the views' differences when it fails (this wait would only time out).
            stack.wait(downstream=False)
        timings["write_side_done"] = time.monotonic() - started
        want = expected(stack)
        assert len(want["balances"]) == 40 and want["transfers"] and want["reused"]

        first.wait_until(lambda: diff_views(workers, want), 90, "convergence")
        timings["converged"] = time.monotonic() - started
        _check_api(workers, want)

        # kill -9 once caught up, restart: the views are the same once it has caught up again.
        second.kill()
        t0 = time.monotonic()
        second.start()
        second.wait_until(lambda: second.get("/health")[0] != 200, 60, "restart")
        second.wait_until(lambda: diff_views(workers, want), 60, "reconvergence")
        timings["restart_to_converged"] = time.monotonic() - t0
        for rs in workers:
            status, ghost = rs.get("/accounts/ghost")
            assert status == 404, ghost
    finally:
        for rs in workers:
            rs.stop()
        stack.stop()
    timings["total"] = time.monotonic() - started
    print("read side timings (s):", {k: round(v, 1) for k, v in timings.items()})


def _check_api(workers: list[ReadSideProc], want: dict[str, Any]) -> None:
    rs = workers[0]
    status, doc = rs.get("/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.0")
    assert set(doc["paths"]) == {
        "/accounts",
        "/accounts/{id}",
        "/accounts/{id}/transfers",
        "/transfers/{id}",
        "/commands",
        "/commands/{id}",
        "/openapi.json",
        "/health",
    }
    owned: list[tuple[str, int]] = []
    for w in workers:
        status, health = w.get("/health")
        assert status == 200 and health["status"] == "ok" and health["skipped"] == 0
        owned += [(p["topic"], p["partition"]) for p in health["partitions"]]
    # Co-partitioned: together the workers own each source partition exactly once.
    assert sorted(owned) == sorted(
        (t, p)
        for t in ("ledger", "accounts", "transfers", "outcomes")
        for p in range(rs.settings.partitions)
    )

    account, b = next(iter(want["balances"].items()))
    status, one = rs.get(f"/accounts/{account}")
    assert status == 200 and {k: one[k] for k in b} == b
    # The account's postings, newest first, as in the ledger log.
    busiest = max(want["history"], key=lambda a: len(want["history"][a]))
    status, recent = rs.get(f"/accounts/{busiest}/transfers?limit=500")
    assert status == 200
    assert [p["event_id"] for p in recent["postings"]] == list(reversed(want["history"][busiest]))[
        : pj.HISTORY_MAX
    ]
    status, recent = rs.get(f"/accounts/{busiest}/transfers")
    assert len(recent["postings"]) == min(20, len(want["history"][busiest]))
    assert [p["seq"] for p in recent["postings"]] == sorted(
        (p["seq"] for p in recent["postings"]), reverse=True
    )
    assert rs.get(f"/accounts/{busiest}/transfers?limit=0")[0] == 400
    assert rs.get(f"/accounts/{busiest}/transfers?limit=501")[0] == 400
    for path, error in (
        ("/accounts/nobody", "account_not_found"),
        ("/accounts/nobody/transfers", "account_not_found"),
        ("/transfers/nothing", "transfer_not_found"),
        ("/commands/nothing", "command_not_found"),
    ):
        status, body = rs.get(path)
        assert (status, body["error"]) == (404, error), path


def _produce_aborted_ghost(settings: Settings) -> None:
    """An aborted transaction opening and funding "ghost": a read_committed reader never sees it."""
    from confluent_kafka import Producer

    names = TopicNames(settings.topic_prefix)
    codec = Codec.default()
    now = int(time.time() * 1e6)
    opened = {
        "event_id": "ghost/g1/opened",
        "command_id": "g1",
        "account": "ghost",
        "kind": "opened",
        "user": "ghost-user",
        "currency": "USD",
        "related": None,
        "relation_kind": None,
        "reason": None,
        "ts": now,
    }
    posting = {
        "event_id": "ghost/g2/1/c",
        "entry_id": "ghost/g2/1",
        "command_id": "g2",
        "transfer_id": None,
        "account": "ghost",
        "counterparty": "@world/USD",
        "currency": "USD",
        "amount": "1000000.00",
        "balance_after": "1000000.00",
        "account_seq": 1,
        "kind": "deposit",
        "ts": now,
    }
    p = Producer(
        {
            "bootstrap.servers": settings.bootstrap,
            "transactional.id": f"{settings.topic_prefix}ghost",
        }
    )
    p.init_transactions(30)
    p.begin_transaction()
    part = partition_for("ghost", settings.partitions)
    p.produce(names.accounts, codec.encode("AccountEvent", opened), b"ghost", partition=part)
    p.produce(names.ledger, codec.encode("LedgerPosting", posting), b"ghost", partition=part)
    p.flush(30)
    p.abort_transaction(30)
