"""The chaos soak (``make soak``, part of ``make chaos``): a seeded run under kill -9, verified.

One run, from nothing:

1. A private stack in a temporary home on free ports (embedded broker, ledger workers,
   warehouse, read side, detector), brought up by ``bootstrap.up`` as ``paystream up`` does.
2. The phased ``Workload`` (opens, deposits, blocks, relations, two transfer phases,
   withdrawals, unblocks) plus what the soak adds: exact duplicates and reused command ids
   among the transfers, malformed amounts, lines the producer refuses (dead letters),
   unrelations, and planted related chains and cycles in phases of their own (each hop one
   phase later, so their order in time is certain). Every phase is order independent; the
   soak waits for the ledger between phases, never for the slower downstream consumers.
3. Meanwhile a chaos thread runs a seeded schedule: ``kill -9`` of random processes (ledger
   workers, warehouse sink, read side, detector) and one broker restart; a killed process
   is started again after a seeded pause, and a process that exits on its own is restarted
   too (and reported). The supervisor does not restart anything by itself.
4. When the schedule is done and everything is drained (every consumer group caught up),
   the results are checked against an independent sequential model (``paystream.oracle``)
   and the detector's definition (``streams.detector.bruteforce``), and a one-screen
   verdict is printed and written as JSON.

``python -m paystream.soak --help`` for the knobs; exit status 0 only if every check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ops.ports import free_port_base
from paystream.oracle import Oracle
from paystream.workload import Workload

log = logging.getLogger(__name__)

Command = dict[str, Any]
RAW = "__raw__"  # a "command" that is a raw line for the producer to refuse
DEFAULT_SEED = 20261122
DEFAULT_TRANSFERS = 100_000
KINDS = ("worker", "warehouse", "readside", "detector")
# A command partition with pending commands the ledger has not moved for this long (the
# broker's restart not counted) has a worker alive but not working. A kill -9 and restart
# takes a few seconds; a group rebalance without the dead member ~10 s (session timeout).
STALL_S = 40.0
# Refusals decided at the destination: the money was held, then turned back (void).
TURNED_BACK = {"credit_account_not_found", "credit_account_blocked", "currency_mismatch"}


def _repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@dataclass
class SoakConfig:
    seed: int = DEFAULT_SEED
    transfers: int = DEFAULT_TRANSFERS
    accounts: int = 2000
    workers: int = 2
    partitions: int = 12
    kills: int = 24
    broker: str = "kill"  # kill (kill -9, then start) | stop (clean stop, then start) | none
    span_s: float | None = None  # length of the chaos schedule; default scales with transfers
    drain_timeout_s: float = 900.0
    home: Path | None = None
    keep: bool = False  # keep the home (it is always kept when a check fails)
    json_path: Path | None = None
    quiet: bool = False

    def schedule_span_s(self) -> float:
        # About as long as the write side needs under chaos (~700 transfers/s here), so that
        # the kills fall on the busy part of the run rather than on an idle stack.
        return self.span_s if self.span_s is not None else max(40.0, self.transfers / 700)


# --------------------------------------------------------------------------------------------
# The workload: the demo's phases plus duplicates, reuses, refusals and planted patterns
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    phases: list[tuple[str, list[Command]]]
    planted_alerts: dict[str, tuple[str, int]]  # closing command id -> (kind, hops)
    planted_quiet: list[str]  # closing command ids that must raise no alert

    def commands(self) -> Iterator[Command]:
        for _, cmds in self.phases:
            yield from cmds


def build_plan(cfg: SoakConfig) -> Plan:
    w = Workload(accounts=cfg.accounts, transfers=cfg.transfers, seed=cfg.seed, prefix="soak")
    rng = random.Random(cfg.seed ^ 0x50A4)
    n = 0

    def cid(tag: str) -> str:
        nonlocal n
        n += 1
        return f"soak-{tag}-{cfg.seed}-{n}"

    phases = [(name, list(cmds)) for name, cmds in w.phases]
    names = [w.name(i) for i in range(cfg.accounts)]
    for name, cmds in phases:
        if name != "transfers":
            continue
        # Exact duplicates and reused ids, right behind their original: same key, so the
        # same partition and order, well within the 32 ids an account remembers.
        plain = [i for i, c in enumerate(cmds) if c["type"] == "transfer"]
        dup_at = set(rng.sample(plain, min(200, len(plain) // 10)))
        reuse_at = set(rng.sample(sorted(set(plain) - dup_at), min(20, len(plain) // 50)))
        out: list[Command] = []
        for i, c in enumerate(cmds):
            out.append(c)
            if i in dup_at:
                out.append(dict(c))
            elif i in reuse_at:
                out.append({**c, "amount": "0.11" if c["amount"] != "0.11" else "0.12"})
        sources = [a for i, a in enumerate(names) if i % 2 == 0]
        dests = [a for i, a in enumerate(names) if i % 2 == 1]
        for bad in ("abc", "-0.05", "0", "1e2", "0.5.5", ""):
            out.append(
                {
                    "type": "transfer",
                    "command_id": cid("badtr"),
                    "from": rng.choice(sources),
                    "to": rng.choice(dests),
                    "amount": bad,
                }
            )
        # Refused by the producer (dead letters): never reach the ledger.
        for raw in (
            "this is not json",
            '["a", "list"]',
            '{"type": "transfer", "command_id": "soak-raw-1", "from": "soak-0"}',
            '{"type": "transfer", "command_id": "soak-raw-2", "from": "soak-0", '
            '"to": "soak-1", "amount": 5}',
            '{"type": "deposit", "command_id": "soak-raw-3", "account": "soak-0", '
            '"amount": "1.00", "color": "red"}',
            '{"type": "teleport", "command_id": "soak-raw-4", "account": "soak-0"}',
        ):
            out.append({RAW: raw})
        phases[phases.index((name, cmds))] = (name, out)
        break
    # Unrelations of some of the workload's relations, and of one that never existed.
    rel = next(cmds for name, cmds in phases if name == "blocks and relations")
    related = [c for c in rel if c["type"] == "relate_accounts" and "nobody" not in c["related"]]
    unrel: list[Command] = [
        {
            "type": "unrelate_accounts",
            "command_id": cid("unrel"),
            "account": c["account"],
            "related": c["related"],
        }
        for c in rng.sample(related, max(1, len(related) // 4))
    ]
    unrel.append(
        {
            "type": "unrelate_accounts",
            "command_id": cid("unrel"),
            "account": names[2],
            "related": names[3],
        }
    )
    unrel.append(
        {
            "type": "unrelate_accounts",
            "command_id": cid("unrel"),
            "account": names[2],
            "related": "soak-nobody",
        }
    )
    # After the first transfers, before the withdrawals: the second transfer phase sees them.
    at = next(i for i, (name, _) in enumerate(phases) if name == "withdrawals")
    phases.insert(at, ("unrelations", unrel))
    planted, alerts, quiet = _planted(cid)
    phases += planted
    return Plan(phases, alerts, quiet)


def _planted(
    cid: Callable[[str], str],
) -> tuple[list[tuple[str, list[Command]]], dict[str, tuple[str, int]], list[str]]:
    """Fresh accounts with chains and cycles, one hop per phase (so each hop is later)."""
    p = "soak-p-"
    groups = {
        "I": 4,  # I0..I3 with I0~I3: related_indirect, 3 hops
        "J": 5,  # J0..J4 with J0~K~J4: related_indirect, 4 hops, relation path through K
        "C": 3,  # cycle of 3
        "D": 4,  # cycle of 4
        "E": 5,  # cycle of 5: longer than max_hops, no alert
        "V": 6,  # V0..V5 with V0~V5: 5 hops, no alert
        "U": 3,  # U0~U2 unrelated between the hops: no alert
    }
    accts = [f"{p}{g}{i}" for g, k in groups.items() for i in range(k)]
    accts += [f"{p}K", f"{p}X", f"{p}Y", f"{p}W0", f"{p}W1"]

    def a(name: str) -> str:
        return p + name

    def tr(src: str, dst: str, amount: str = "1.00") -> Command:
        return {
            "type": "transfer",
            "command_id": cid("ptr"),
            "from": a(src),
            "to": a(dst),
            "amount": amount,
        }

    def relate(x: str, y: str, kind: str) -> Command:
        return {
            "type": "relate_accounts",
            "command_id": cid("prel"),
            "account": a(x),
            "related": a(y),
            "kind": kind,
        }

    def unrelate(x: str, y: str) -> Command:
        return {
            "type": "unrelate_accounts",
            "command_id": cid("punrel"),
            "account": a(x),
            "related": a(y),
        }

    opens = [
        {
            "type": "open_account",
            "command_id": cid("popen"),
            "account": acct,
            "user": f"user-{acct}",
            "currency": "USD",
        }
        for acct in accts
    ]
    opens.append(dict(opens[0]))  # exact duplicate
    opens.append({**opens[1], "command_id": cid("popen")})  # account_exists
    deposits = [
        {
            "type": "deposit",
            "command_id": cid("pdep"),
            "account": acct,
            "amount": "1.00" if acct.endswith("W1") else "100.00",
        }
        for acct in accts
    ]
    rels = [
        relate("I0", "I3", "family"),
        relate("J0", "K", "friend"),
        relate("K", "J4", "business"),
        relate("V0", "V5", "family"),
        relate("X", "Y", "family"),
        relate("U0", "U2", "friend"),
        relate("X", "X", "family"),  # accounts_must_be_different
        {**relate("X", "Y", "family"), "related": "soak-p-nobody"},  # related_account_not_found
    ]
    h1 = [
        tr("I0", "I1"),
        tr("J0", "J1"),
        tr("C0", "C1"),
        tr("D0", "D1"),
        tr("E0", "E1"),
        tr("V0", "V1"),
        tr("X", "Y"),  # related_direct
        tr("U0", "U1"),
        tr("W0", "W1"),
    ]
    h2 = [
        tr("I1", "I2"),
        tr("J1", "J2"),
        tr("C1", "C2"),
        tr("D1", "D2"),
        tr("E1", "E2"),
        tr("V1", "V2"),
        unrelate("X", "Y"),
        unrelate("U0", "U2"),
    ]
    h3 = [
        tr("I2", "I3"),  # related_indirect, 3 hops
        tr("J2", "J3"),
        tr("C2", "C0"),  # cycle, 3 hops
        tr("D2", "D3"),
        tr("E2", "E3"),
        tr("V2", "V3"),
        tr("X", "Y"),  # no longer related: no alert
        tr("U1", "U2"),  # no longer related: no alert
        tr("W1", "W0", "999.00"),  # insufficient funds: not posted, no cycle
    ]
    h4 = [
        tr("J3", "J4"),  # related_indirect, 4 hops
        tr("D3", "D0"),  # cycle, 4 hops
        tr("E3", "E4"),
        tr("V3", "V4"),
    ]
    h5 = [tr("E4", "E0"), tr("V4", "V5")]  # 5 hops: nothing
    alerts = {
        h1[6]["command_id"]: ("related_direct", 1),
        h3[0]["command_id"]: ("related_indirect", 3),
        h3[2]["command_id"]: ("cycle", 3),
        h4[0]["command_id"]: ("related_indirect", 4),
        h4[1]["command_id"]: ("cycle", 4),
    }
    quiet = [h3[6]["command_id"], h3[7]["command_id"], h3[8]["command_id"]]
    quiet += [c["command_id"] for c in h5]
    phases = [
        ("planted opens", opens),
        ("planted deposits", deposits),
        ("planted relations", rels),
        ("planted hop 1", h1),
        ("planted hop 2", h2),
        ("planted hop 3", h3),
        ("planted hop 4", h4),
        ("planted hop 5", h5),
    ]
    return phases, alerts, quiet


# --------------------------------------------------------------------------------------------
# The model: outcomes, balances and the events each command must leave behind
# --------------------------------------------------------------------------------------------


@dataclass
class Expected:
    oracle: Oracle
    commands: dict[str, Command]  # command id -> the first command sent with it
    reuses: Counter[str]  # command id -> reused submissions (exists_with_different_payload)
    duplicates: int  # exact repeats (no new outcome)
    raw_lines: int  # lines the producer must refuse
    by_type: Counter[str]

    def postings(self, command_id: str) -> int:
        c, r = self.commands[command_id], self.oracle.outcomes[command_id]
        if c["type"] in ("deposit", "withdraw"):
            return 2 if r == "accepted" else 0
        if c["type"] == "transfer":
            return 4 if r == "accepted" or self.turned_back(command_id) else 0
        return 0

    def turned_back(self, command_id: str) -> bool:
        c, r = self.commands[command_id], self.oracle.outcomes[command_id]
        return c["type"] == "transfer" and r in TURNED_BACK and not c["to"].startswith("@")

    def lifecycle(self, command_id: str) -> list[str]:
        if self.commands[command_id]["type"] != "transfer":
            return []
        if self.oracle.outcomes[command_id] == "accepted":
            return ["pending", "posted"]
        return ["pending", "voided"] if self.turned_back(command_id) else []

    def account_events(self, command_id: str) -> list[str]:
        if self.oracle.outcomes[command_id] != "accepted":
            return []
        kind = {
            "open_account": "opened",
            "block_account": "blocked",
            "unblock_account": "unblocked",
            "relate_accounts": "related",
            "unrelate_accounts": "unrelated",
        }.get(self.commands[command_id]["type"])
        return [kind] if kind else []


def model(plan: Plan) -> Expected:
    oracle = Oracle()
    commands: dict[str, Command] = {}
    reuses: Counter[str] = Counter()
    dups = raw = 0
    by_type: Counter[str] = Counter()
    for c in plan.commands():
        if RAW in c:
            raw += 1
            continue
        by_type[c["type"]] += 1
        r = oracle.apply(c)
        if r is None:
            dups += 1
        elif r == "exists_with_different_payload" and c["command_id"] in commands:
            reuses[c["command_id"]] += 1
        else:
            commands.setdefault(c["command_id"], c)
    return Expected(oracle, commands, reuses, dups, raw, by_type)


# --------------------------------------------------------------------------------------------
# The detector's definition, at scale
# --------------------------------------------------------------------------------------------


def definition_alerts(events: Sequence[Any], max_hops: int, window_us: int) -> list[Any]:
    """``bruteforce.detect`` with its scans indexed, for 100k transfers instead of 100.

    The same literal rules (``is_chain``, the canonical choice, ``_alert``), the same order of
    events; only the candidates for the next hop back come from an index of the earlier
    transfers by destination (bisected by ts) instead of a scan of all of them, and the
    relation components are recomputed only when a relation changes. Tested against
    ``bruteforce.detect`` on random histories (``tests/unit/test_soak_definition.py``).
    """
    from streams.detector import bruteforce as bf

    relations: dict[frozenset[str], str] = {}
    comps: dict[str, frozenset[str]] | None = {}
    into: dict[str, list[Any]] = defaultdict(list)  # to_account -> earlier transfers, ts order
    into_ts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    alerts: list[Any] = []

    def chains_ending(closing: Any) -> list[list[Any]]:
        found: list[list[Any]] = []
        floor = closing.ts - window_us

        def extend(chain: list[Any]) -> None:
            if bf.is_chain(chain, max_hops, window_us):
                found.append(chain)
            if len(chain) == max_hops:
                return
            head = chain[0]
            stamps = into_ts.get(head.from_account)
            if not stamps:
                return
            lo = bisect_left(stamps, floor)  # earlier than the window: never on a chain
            hi = bisect_left(stamps, head.ts)  # strictly before the chain's first transfer
            for t in into[head.from_account][lo:hi]:
                extend([t, *chain])

        extend([closing])
        return found

    for ev in events:
        if isinstance(ev, bf.Relate):
            if ev.a != ev.b:
                relations[frozenset((ev.a, ev.b))] = ev.kind
                comps = None
            continue
        if isinstance(ev, bf.Unrelate):
            if relations.pop(frozenset((ev.a, ev.b)), None) is not None:
                comps = None
            continue
        if ev.transfer_id in seen:
            continue
        seen.add(ev.transfer_id)
        if comps is None:
            comps = bf._components(relations)
        c = comps

        def related(x: str, y: str, c: dict[str, frozenset[str]] = c) -> bool:
            return x != y and x in c and y in c[x]

        alerts += bf.closing_alerts(ev, chains_ending(ev), related, relations)
        into[ev.to_account].append(ev)
        into_ts[ev.to_account].append(ev.ts)
    return alerts


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------


class Stack:
    """A private stack under ``home``: what ``paystream up`` runs, on ports of its own."""

    def __init__(self, home: Path, cfg: SoakConfig) -> None:
        from base.config import load_settings

        pick = random.Random()  # ports need not be seeded: only free
        taken: set[int] = set()
        broker = free_port_base(2, pick, taken)
        taken |= {broker, broker + 1}
        warehouse = free_port_base(1, pick, taken)
        taken.add(warehouse)
        readside = free_port_base(1, pick, taken)
        self.env = {
            "PAYSTREAM_HOME": str(home),
            "PAYSTREAM_BROKER_PORT": str(broker),
            "PAYSTREAM_WAREHOUSE_PORT": str(warehouse),
            "PAYSTREAM_READSIDE_PORT": str(readside),
            "PAYSTREAM_PARTITIONS": str(cfg.partitions),
            "PAYSTREAM_TOPIC_PREFIX": "",
            # Children exit when the soak does, whatever happens to it.
            "PAYSTREAM_EXIT_WITH_PARENT": "1",
        }
        unset = ("PAYSTREAM_BOOTSTRAP", "PAYSTREAM_CLICKHOUSE_DSN", "PAYSTREAM_BROKERS")
        self._saved = {k: os.environ.get(k) for k in [*self.env, *unset]}
        os.environ.update(self.env)  # bootstrap and the warehouse read ports from here
        for k in unset:  # the embedded broker and chDB of this home, whatever the caller uses
            os.environ.pop(k, None)
        self.home = home
        self.cfg = cfg
        self.settings = load_settings()
        self.readside_port = readside
        self.warehouse_port = warehouse
        self.broker_up = threading.Event()
        self.broker_up.set()
        self.broker_down: list[tuple[float, float]] = []  # (from, to), monotonic
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        self.stalls: dict[tuple[int, int], dict[str, Any]] = {}

    def restore_environment(self) -> None:
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def up(self) -> None:
        from paystream import bootstrap

        bootstrap.up(self.settings, workers=self.cfg.workers, brokers=1)
        self.resolved = bootstrap.resolved(self.settings)

    def down(self) -> None:
        from paystream import bootstrap

        bootstrap.down(self.settings)

    def supervisor(self) -> Any:
        from ops.procs import Supervisor

        return Supervisor(self.settings.home)

    def specs(self) -> dict[str, Any]:
        from paystream.bootstrap import StackConfig, process_specs

        stack = StackConfig(self.cfg.workers, 1)
        return {s.name: s for s in process_specs(self.settings, stack)}

    def start(self, name: str) -> None:
        from paystream.bootstrap import child_env

        spec = self.specs()[name]
        self.supervisor().start(
            spec.name,
            spec.role,
            [sys.executable, "-m", "paystream.cli", *spec.verb],
            env=child_env(self.settings),
        )

    def kill(self, name: str) -> bool:
        return bool(self.supervisor().kill(name, signal.SIGKILL))

    def alive(self, name: str) -> bool:
        return bool(self.supervisor().alive(name))

    def restart_broker(self, mode: str, down_s: float) -> float:
        """Stop (kill -9, or cleanly) and start the broker; returns seconds until it is back."""
        from paystream.bootstrap import cluster

        c = cluster(self.settings)
        assert c is not None
        t0 = time.monotonic()
        self.broker_up.clear()
        try:
            if mode == "kill":
                c.kill_node(1)
            else:
                c.stop()
            time.sleep(down_s)
            c.start(timeout_s=180)
        finally:
            self.broker_up.set()
            self.broker_down.append((t0, time.monotonic()))
        return time.monotonic() - t0

    def broker_down_between(self, a: float, b: float) -> float:
        return sum(max(0.0, min(y, b) - max(x, a)) for x, y in self.broker_down)

    def watch_stalls(self, group: str, topic: str, phase: str) -> None:
        """Note command partitions whose pending commands the ledger has not touched for
        STALL_S (the broker's restart not counted): a worker alive but not working."""
        from confluent_kafka import TopicPartition

        from paystream import queries

        ends = _ends(self, [topic])
        c = _consumer(self, **{"group.id": group})
        try:
            done = queries._committed(c, [TopicPartition(t, q) for (t, q) in ends])
        finally:
            c.close()
        now = time.monotonic()
        for tp, end in ends.items():
            at = max(done.get(tp, 0), 0)
            if at >= end:
                self._progress.pop(tp, None)
                continue
            seen = self._progress.get(tp)
            if seen is None or seen[0] != at:
                self._progress[tp] = (at, now)
                continue
            idle = now - seen[1] - self.broker_down_between(seen[1], now)
            if idle >= STALL_S:
                self.stalls[(tp[1], at)] = {
                    "phase": phase,
                    "partition": tp[1],
                    "offset": at,
                    "pending": end - at,
                    "idle_s": round(idle, 1),
                    "since": time.strftime(
                        "%H:%M:%S", time.localtime(time.time() - (now - seen[1]))
                    ),
                }

    def log_tail(self, name: str, lines: int = 6) -> list[str]:
        path: Path = self.supervisor().log_path(name)
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return text[-lines:]


def process_kind(name: str) -> str:
    return "worker" if name.startswith("ledger-") else name


# --------------------------------------------------------------------------------------------
# Chaos
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    at_s: float
    kind: str  # kill | broker
    victim: str  # process name, or "kafka-1"
    down_s: float


def schedule(cfg: SoakConfig) -> list[Action]:
    """The seeded chaos schedule: ``kills`` kill -9 at stratified random times, one broker
    restart in the middle, every process kind hit (workers about half the time)."""
    rng = random.Random(cfg.seed)
    span = cfg.schedule_span_s()
    n = cfg.kills
    others = max(0, n - (n + 1) // 2)
    kinds = ["worker"] * (n - others) + [KINDS[1 + i % 3] for i in range(others)]
    rng.shuffle(kinds)
    actions = []
    for k, kind in enumerate(kinds):
        at = span * (k + rng.random()) / n
        victim = f"ledger-{rng.randint(1, cfg.workers)}" if kind == "worker" else kind
        actions.append(Action(round(at, 2), "kill", victim, round(rng.uniform(0.2, 3.0), 2)))
    if cfg.broker != "none":
        at = span * rng.uniform(0.3, 0.7)
        actions.append(Action(round(at, 2), "broker", "kafka-1", round(rng.uniform(1.0, 4.0), 2)))
    return sorted(actions, key=lambda a: a.at_s)


class Chaos(threading.Thread):
    """Runs the schedule, restarts what it killed, and revives what died by itself."""

    def __init__(self, stack: Stack, actions: list[Action], say: Callable[[str], None]) -> None:
        super().__init__(name="chaos", daemon=True)
        self.stack = stack
        self.actions = list(actions)
        self.say = say
        self.kills: list[dict[str, Any]] = []
        self.broker_restarts: list[dict[str, Any]] = []
        self.self_exits: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.schedule_done = threading.Event()
        self._halt = threading.Event()
        self._pending: dict[str, float] = {}  # name -> monotonic time to start it again
        self._names = list(stack.specs())
        self.t0 = time.monotonic()
        # Downstream consumers' lag every 10 s: who keeps up, who is the tail.
        self.lag_samples: list[dict[str, Any]] = []
        self._next_sample = self.t0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        try:
            self._run()
        except Exception:  # surfaced in the verdict
            self.errors.append(traceback.format_exc())
            self.schedule_done.set()

    def _run(self) -> None:
        todo = list(self.actions)
        paused = 0.0  # the broker's restart does not count: the schedule resumes after it
        while not self._halt.is_set():
            now = time.monotonic()
            for name, when in list(self._pending.items()):
                if now >= when:
                    self.stack.start(name)
                    del self._pending[name]
            while todo and now - self.t0 - paused >= todo[0].at_s:
                a = todo.pop(0)
                if a.victim in self._pending:  # still down from the last kill: a bit later
                    todo.append(Action(a.at_s + 2.0, a.kind, a.victim, a.down_s))
                    todo.sort(key=lambda x: x.at_s)
                    continue
                paused += self._do(a)
                now = time.monotonic()
            if not todo and not self._pending:
                self.schedule_done.set()
            if self.stack.broker_up.is_set():
                self._revive(now)
                if now >= self._next_sample:
                    self._next_sample = now + 10.0
                    self.lag_samples.append({"at_s": round(now - self.t0, 1), **_lags(self.stack)})
            self._halt.wait(0.2)

    def _do(self, a: Action) -> float:
        """Carry out one action; returns the seconds it paused the schedule."""
        elapsed = time.monotonic() - self.t0
        if a.kind == "broker":
            self.say(
                f"[chaos] {elapsed:6.1f}s {time.strftime('%H:%M:%S')} broker restart "
                f"({self.stack.cfg.broker})"
            )
            took = self.stack.restart_broker(self.stack.cfg.broker, a.down_s)
            self.broker_restarts.append(
                {
                    "at_s": round(elapsed, 1),
                    "mode": self.stack.cfg.broker,
                    "back_after_s": round(took, 1),
                }
            )
            self.say(f"[chaos] broker back after {took:.1f}s")
            return took
        hit = self.stack.kill(a.victim)
        self.kills.append(
            {
                "at_s": round(elapsed, 1),
                "clock": time.strftime("%H:%M:%S"),
                "process": a.victim,
                "kind": process_kind(a.victim),
                "was_alive": hit,
                "down_s": a.down_s,
            }
        )
        self.say(
            f"[chaos] {elapsed:6.1f}s {time.strftime('%H:%M:%S')} kill -9 {a.victim}"
            + ("" if hit else " (it was not running: restarting)")
        )
        self._pending[a.victim] = time.monotonic() + a.down_s
        return 0.0

    def _revive(self, now: float) -> None:
        for name in self._names:
            if name in self._pending or self.stack.alive(name):
                continue
            tail = self.stack.log_tail(name)
            self.self_exits.append(
                {"at_s": round(now - self.t0, 1), "process": name, "log_tail": tail}
            )
            self.say(f"[chaos] {name} exited by itself: {tail[-1] if tail else ''}")
            self._pending[name] = now + 1.0


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------


# librdkafka reports every refused connection while the broker restarts; the soak's own
# probes log through this logger, which stays silent.
_QUIET = logging.getLogger("paystream.soak.rdkafka")
_QUIET.setLevel(logging.CRITICAL + 1)
_QUIET.propagate = False


def _consumer(stack: Stack, **extra: Any) -> Any:
    from paystream import queries

    return queries._consumer(stack.resolved, logger=_QUIET, **extra)


def _ends(stack: Stack, topics: list[str]) -> dict[tuple[str, int], int]:
    from paystream import queries

    c = _consumer(stack)
    try:
        ends: dict[tuple[str, int], int] = {}
        for t in topics:
            ends.update(queries._ends(c, t))
        return ends
    finally:
        c.close()


def caught_up(
    stack: Stack,
    group: str,
    topics: list[str],
    targets: dict[tuple[str, int], int] | None = None,
) -> bool:
    """``queries.caught_up`` with quiet clients: has ``group`` consumed every committed
    record of ``topics`` (below ``targets``)? A transaction marker is not a record."""
    from paystream import queries

    return queries.caught_up(stack.resolved, group, topics, targets, logger=_QUIET)


def _safe(fn: Callable[[], bool]) -> bool:
    try:
        return fn()
    except Exception as exc:  # the broker restarting, a coordinator moving: not yet
        log.debug("not caught up yet: %s", exc)
        return False


def wait_ledger(stack: Stack, deadline: float, phase: str = "drain") -> bool:
    """The write side's half of ``queries.wait``: every command so far and its sagas done
    (downstream consumers are left alone: the next phase needs only the ledger)."""
    from base.topics import TopicNames
    from streams.processor import LEDGER_GROUP

    s = stack.resolved
    names = TopicNames(s.topic_prefix)
    group = s.topic_prefix + LEDGER_GROUP
    targets: dict[tuple[str, int], int] | None = None
    while targets is None:
        stack.broker_up.wait()
        try:
            targets = _ends(stack, [names.commands])
        except Exception:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def ready(topics: list[str], t: dict[tuple[str, int], int] | None) -> bool:
        stack.broker_up.wait()
        return _safe(lambda: caught_up(stack, group, topics, t))

    next_look = time.monotonic() + 2.0
    stack._progress.clear()  # progress is watched within one wait, from its start
    while not ready([names.commands], targets):
        if time.monotonic() > deadline:
            return False
        if time.monotonic() >= next_look:
            next_look = time.monotonic() + 2.0
            with contextlib.suppress(Exception):
                stack.watch_stalls(group, names.commands, phase)
        time.sleep(0.2)
    stable = 0  # sagas: caught up twice in a row means no step is still making another
    while stable < 2:
        if ready([names.saga], None):
            stable += 1
        else:
            stable = 0
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
    return True


def wait_group(stack: Stack, group: str, topics: list[str], deadline: float) -> bool:
    stable = 0
    while stable < 2:  # twice in a row: a consumer that rewound after a crash shows up here
        stack.broker_up.wait()
        if _safe(lambda: caught_up(stack, group, topics)):
            stable += 1
        else:
            stable = 0
            if time.monotonic() > deadline:
                return False
        time.sleep(0.5)
    return True


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "counts": self.counts,
            "problems": self.problems[:50],
            "problems_total": len(self.problems),
        }


def _diff_balances(got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for acct in sorted(set(got) | set(want)):
        g, w = got.get(acct), want.get(acct)
        if g is None:
            out.append(f"{acct}: missing (want {w})")
        elif w is None:
            out.append(f"{acct}: unexpected {g}")
        elif g != w:
            out.append(f"{acct}: got {g}, want {w}")
    return out


def _norm(rows: Iterator[dict[str, Any]]) -> dict[str, dict[str, str]]:
    keys = ("account", "user", "currency", "balance", "status")
    return {r["account"]: {k: str(r[k]) for k in keys} for r in rows}


def _scan_decoded(stack: Stack, topic: str) -> Iterator[tuple[Any, int, int, dict[str, Any]]]:
    from paystream import queries
    from schemas.codec import Codec

    codec = Codec.default()
    for msg in queries.scan(stack.resolved, topic):
        value = msg.value()
        if value is None:
            continue
        key = (msg.key() or b"").decode()
        yield key, int(msg.partition() or 0), int(msg.offset() or 0), codec.decode(value)[1]


class Verifier:
    def __init__(self, stack: Stack, plan: Plan, exp: Expected, say: Callable[[str], None]):
        from base.topics import TopicNames

        self.stack = stack
        self.plan = plan
        self.exp = exp
        self.say = say
        self.topics = TopicNames(stack.settings.topic_prefix)
        self.checks: list[Check] = []
        self.stats: dict[str, Any] = {}

    def add(self, check: Check) -> None:
        self.checks.append(check)
        mark = "PASS" if check.ok else "FAIL"
        self.say(f"[verify] {mark} {check.name}: {check.detail}")
        for p in check.problems[:5]:
            self.say(f"           {p}")

    def run(self, readside_timeout_s: float) -> None:
        steps: list[Callable[[], None]] = [
            self.balances_write_side,
            self.ledger_replay,
            self.ledger_events,
            self.transfer_lifecycle,
            self.account_events,
            self.outcomes,
            self.dead_letters,
            self.alerts,
            self.warehouse,
            lambda: self.readside(readside_timeout_s),
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:
                name = getattr(step, "__name__", "readside")
                self.add(
                    Check(
                        name,
                        False,
                        f"the check itself failed: {exc!r}",
                        problems=traceback.format_exc().splitlines()[-8:],
                    )
                )

    # -- balances ---------------------------------------------------------------------------

    def balances_write_side(self) -> None:
        from paystream import queries

        want = self.exp.oracle.balances()
        got = _norm(iter(queries.balances(self.stack.resolved)))
        diffs = _diff_balances(got, want)
        self.add(
            Check(
                "balances: write side = model",
                not diffs,
                f"{len(got)} accounts, {len(diffs)} differ",
                {"accounts": len(got), "differ": len(diffs)},
                diffs,
            )
        )

    # -- the ledger log ---------------------------------------------------------------------

    def ledger_replay(self) -> None:
        from paystream import queries
        from streams.ledger.money import format_amount

        t0 = time.monotonic()
        r = queries.replay(self.stack.resolved)
        self.stats["replay_events"] = r.events
        self.stats["replay_s"] = round(time.monotonic() - t0, 1)
        unbalanced = [e for e, total in r.entry_sums.items() if total != 0]
        totals = r.totals()
        self.add(
            Check(
                "ledger zero-sum (replay)",
                not unbalanced and all(v == 0 for v in totals.values()) and not r.problems,
                f"{len(r.entry_sums)} entries, {len(unbalanced)} not zero-sum; "
                f"currency totals {dict(totals)}; {len(r.problems)} replay problems",
                {
                    "entries": len(r.entry_sums),
                    "unbalanced": len(unbalanced),
                    "problems": len(r.problems),
                },
                r.problems,
            )
        )
        want = self.exp.oracle.balances()
        replayed = {
            acct: {
                **want[acct],
                "balance": format_amount(r.balances.get(acct, 0), want[acct]["currency"]),
            }
            for acct in want
        }
        extra = [a for a in r.balances if not a.startswith("@") and a not in want]
        diffs = _diff_balances(replayed, want) + [
            f"{a}: in the log, not in the model" for a in extra
        ]
        live = queries.verify(self.stack.resolved, r)
        self.add(
            Check(
                "balances: ledger replay = model = live",
                not diffs and not live,
                f"{len(want)} accounts, {len(diffs)} differ from the model, "
                f"{len(live)} differ from the live state",
                {"accounts": len(want), "differ_model": len(diffs), "differ_live": len(live)},
                diffs + live,
            )
        )

    def ledger_events(self) -> None:
        ids: Counter[str] = Counter()
        command_of: dict[str, str] = {}
        records = 0
        for _, _, _, e in _scan_decoded(self.stack, self.topics.ledger):
            records += 1
            ids[e["event_id"]] += 1
            command_of[e["event_id"]] = e["command_id"]
        self.ledger_ids = set(ids)
        dups = {i: n for i, n in ids.items() if n > 1}
        dup_records = sum(n - 1 for n in dups.values())
        problems = [f"duplicate ledger event {i} x{n}" for i, n in sorted(dups.items())]
        # Distinct postings per command against the model's: nothing missing, nothing extra.
        per_command = Counter(command_of.values())
        want_total = 0
        for cmd_id in self.exp.commands:
            want = self.exp.postings(cmd_id)
            want_total += want
            got = per_command.pop(cmd_id, 0)
            if got != want:
                problems.append(f"command {cmd_id}: {got} postings, want {want}")
        for cmd_id, got in sorted(per_command.items()):
            problems.append(f"postings of an unknown command {cmd_id}: {got}")
        self.add(
            Check(
                "ledger events: none duplicated, none missing",
                not problems,
                f"{records} records, {len(ids)} distinct ids, {dup_records} duplicates; "
                f"model wants {want_total}",
                {
                    "records": records,
                    "distinct": len(ids),
                    "duplicates": dup_records,
                    "expected": want_total,
                },
                problems,
            )
        )

    def transfer_lifecycle(self) -> None:
        ids: Counter[str] = Counter()
        per: dict[str, list[str]] = defaultdict(list)
        self.edges: list[tuple[int, int, int, int, int, Any]] = []
        from streams.detector.graph import TransferEdge

        for _, part, off, e in _scan_decoded(self.stack, self.topics.transfers):
            ids[e["event_id"]] += 1
            if ids[e["event_id"]] > 1:
                continue
            per[e["transfer_id"]].append(e["status"])
            if e["status"] == "posted":
                edge = TransferEdge(
                    e["transfer_id"],
                    e["command_id"],
                    e["from_account"],
                    e["to_account"],
                    e["amount"],
                    e["currency"],
                    int(e["ts"]),
                )
                self.edges.append((int(e["ts"]), 1, 0, part, off, edge))
        self.transfer_ids = set(ids)
        problems = [f"duplicate transfer event {i} x{n}" for i, n in ids.items() if n > 1]
        posted = voided = 0
        for cmd_id, c in self.exp.commands.items():
            if c["type"] != "transfer":
                continue
            want = self.exp.lifecycle(cmd_id)
            got = sorted(per.pop(cmd_id, []))
            posted += want == ["pending", "posted"]
            voided += want == ["pending", "voided"]
            if got != sorted(want):
                problems.append(f"transfer {cmd_id}: {got}, want {want}")
        problems += [f"events of an unknown transfer {t}: {s}" for t, s in sorted(per.items())]
        self.add(
            Check(
                "transfers: pending -> posted | voided, exactly",
                not problems,
                f"{sum(ids.values())} events; {posted} posted, {voided} voided (turned back)",
                {"events": sum(ids.values()), "posted": posted, "voided": voided},
                problems,
            )
        )

    def account_events(self) -> None:
        ids: Counter[str] = Counter()
        per: dict[str, list[str]] = defaultdict(list)
        self.relation_events: list[tuple[int, int, int, int, int, Any]] = []
        self.relation_ids: set[str] = set()
        from streams.detector.bruteforce import Relate, Unrelate

        for _, part, off, e in _scan_decoded(self.stack, self.topics.accounts):
            ids[e["event_id"]] += 1
            if ids[e["event_id"]] > 1:
                continue
            per[e["command_id"]].append(e["kind"])
            ts = int(e["ts"])
            if e["kind"] == "related" and e.get("related"):
                self.relation_ids.add(e["event_id"])
                ev = Relate(e["account"], e["related"], e["relation_kind"] or "", ts)
                self.relation_events.append((ts, 0, 1, part, off, ev))
            elif e["kind"] == "unrelated" and e.get("related"):
                self.relation_ids.add(e["event_id"])
                self.relation_events.append(
                    (ts, 0, 1, part, off, Unrelate(e["account"], e["related"], ts))
                )
        self.account_ids = set(ids)
        problems = [f"duplicate account event {i} x{n}" for i, n in ids.items() if n > 1]
        for cmd_id in self.exp.commands:
            want = self.exp.account_events(cmd_id)
            got = per.pop(cmd_id, [])
            if sorted(got) != sorted(want):
                problems.append(f"command {cmd_id}: account events {got}, want {want}")
        problems += [f"account events of an unknown command {c}: {k}" for c, k in per.items()]
        self.add(
            Check(
                "account events (opened, blocked, related...) exactly",
                not problems,
                f"{sum(ids.values())} events, {len(self.relation_events)} relation changes",
                {"events": sum(ids.values()), "relations": len(self.relation_events)},
                problems,
            )
        )

    def outcomes(self) -> None:
        ids: Counter[str] = Counter()
        main: dict[str, list[str]] = defaultdict(list)
        reused: Counter[str] = Counter()
        for _, _, _, o in _scan_decoded(self.stack, self.topics.outcomes):
            ids[o["event_id"]] += 1
            if ids[o["event_id"]] > 1:
                continue
            if o["reason"] == "exists_with_different_payload":
                reused[o["command_id"]] += 1
            else:
                main[o["command_id"]].append(o["reason"] or "accepted")
        self.outcome_ids = set(ids)
        problems = [f"duplicate outcome record {i} x{n}" for i, n in ids.items() if n > 1]
        wrong = 0
        for cmd_id, want in self.exp.oracle.outcomes.items():
            got = main.pop(cmd_id, [])
            if len(got) != 1:
                problems.append(f"command {cmd_id}: {len(got)} outcomes {got}, want 1 ({want})")
            elif got[0] != want:
                wrong += 1
                problems.append(f"command {cmd_id}: {got[0]}, model says {want}")
        problems += [f"outcome of an unknown command {c}: {r}" for c, r in sorted(main.items())]
        if reused != self.exp.reuses:
            problems.append(
                f"reused-id rejections {sum(reused.values())} on {len(reused)} ids, "
                f"want {sum(self.exp.reuses.values())} on {len(self.exp.reuses)}"
            )
        statuses = Counter(
            "accepted" if r == "accepted" else "rejected" for r in self.exp.oracle.outcomes.values()
        )
        self.add(
            Check(
                "every command exactly one outcome, = model",
                not problems,
                f"{len(self.exp.oracle.outcomes)} commands: {statuses['accepted']} accepted, "
                f"{statuses['rejected']} rejected; {sum(reused.values())} reused-id rejections; "
                f"{self.exp.duplicates} exact repeats ignored",
                {
                    "commands": len(self.exp.oracle.outcomes),
                    "accepted": statuses["accepted"],
                    "rejected": statuses["rejected"],
                    "reused": sum(reused.values()),
                    "repeats": self.exp.duplicates,
                    "wrong": wrong,
                },
                problems,
            )
        )

    def dead_letters(self) -> None:
        sources: Counter[str] = Counter()
        for _, _, _, d in _scan_decoded(self.stack, self.topics.deadletter):
            sources["producer" if d["source"].startswith("cli:") else "other"] += 1
        ok = sources["producer"] == self.exp.raw_lines and sources["other"] == 0
        self.add(
            Check(
                "refused lines: one dead letter each",
                ok,
                f"{sources['producer']} dead letters from the producer (want "
                f"{self.exp.raw_lines}), {sources['other']} from elsewhere (want 0)",
                dict(sources),
            )
        )

    # -- alerts -----------------------------------------------------------------------------

    def alerts(self) -> None:
        import subprocess

        from streams.detector.graph import DEFAULT_MAX_HOPS, DEFAULT_WINDOW_US

        events = sorted(self.relation_events + self.edges, key=lambda e: e[:5])
        t0 = time.monotonic()
        want = {
            a.alert_id: a.to_record()
            for a in definition_alerts([e[5] for e in events], DEFAULT_MAX_HOPS, DEFAULT_WINDOW_US)
        }
        self.stats["definition_s"] = round(time.monotonic() - t0, 1)
        proc = subprocess.run(
            [sys.executable, "-m", "paystream.cli", "alerts", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **self.stack.env},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"paystream alerts --json: {proc.stderr[-2000:]}")
        cli = {a["alert_id"]: a for a in json.loads(proc.stdout)}
        # The CLI shows a few fields; the topic (what it reads) holds the whole records.
        from streams.detector.app import read_alerts

        got = {a["alert_id"]: a for a in read_alerts(self.stack.resolved)}
        self.alert_ids = set(got)
        problems = []
        for aid in sorted(set(want) - set(got)):
            problems.append(f"missing alert {_alert_brief(want[aid])}")
        for aid in sorted(set(got) - set(want)):
            problems.append(f"unexpected alert {_alert_brief(got[aid])}")
        for aid in sorted(set(got) & set(want)):
            g = {k: got[aid].get(k) for k in want[aid]}
            if json.loads(json.dumps(g)) != json.loads(json.dumps(want[aid])):
                problems.append(f"alert differs: got {g}, want {want[aid]}")
        if set(cli) != set(got):
            problems.append(
                f"paystream alerts --json lists {len(cli)} alerts, the topic {len(got)}"
            )
        for aid in sorted(set(cli) & set(want)):
            c, w = cli[aid], want[aid]
            if any(json.dumps(c[k]) != json.dumps(w[k]) for k in c if k in w):
                problems.append(f"paystream alerts --json shows {c}, want {w}")
        kinds = Counter(a["kind"] for a in want.values())
        by_closing = {a["command_ids"][-1]: a for a in want.values()}
        planted_bad = []
        for cmd_id, (kind, hops) in self.plan.planted_alerts.items():
            a = next(
                (x for x in want.values() if x["command_ids"][-1] == cmd_id and x["kind"] == kind),
                None,
            )
            if a is None or len(a["transfer_ids"]) != hops:
                planted_bad.append(f"planted {kind} ({hops} hops) closed by {cmd_id}: {a}")
        planted_bad += [
            f"planted quiet transfer {c} raised {_alert_brief(by_closing[c])}"
            for c in self.plan.planted_quiet
            if c in by_closing
        ]
        self.add(
            Check(
                "alerts (paystream alerts) = detector definition",
                not problems and not planted_bad,
                f"{len(got)} alerts, {len(want)} by definition "
                f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
                f"planted {len(self.plan.planted_alerts) - len(planted_bad)}"
                f"/{len(self.plan.planted_alerts)} found",
                {"alerts": len(got), "expected": len(want), **dict(kinds)},
                problems + planted_bad,
            )
        )

    # -- the warehouse ----------------------------------------------------------------------

    def warehouse(self) -> None:
        from connectors.warehouse import query_client

        client = query_client(self.stack.resolved)
        tables = [
            ("ledger_entries", "event_id", self.ledger_ids),
            ("transfers", "event_id", self.transfer_ids),
            ("command_outcomes", "event_id", self.outcome_ids),
            ("account_events", "event_id", self.account_ids),
            ("relations", "event_id", self.relation_ids),
            ("alerts", "alert_id", self.alert_ids),
        ]
        problems: list[str] = []
        counts: dict[str, Any] = {}
        raw_dups_total = 0
        for table, col, want in tables:
            rows = client.query(f"SELECT {col}, count() FROM {table} GROUP BY {col}").result_rows
            have = {r[0]: int(r[1]) for r in rows}
            raw = sum(have.values())
            final = int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])
            missing = want - set(have)
            extra = set(have) - want
            raw_dups = raw - len(have)
            raw_dups_total += raw_dups
            counts[table] = {
                "log": len(want),
                "distinct": len(have),
                "raw": raw,
                "final": final,
                "raw_duplicates": raw_dups,
            }
            problems += [f"{table}: missing {i}" for i in sorted(missing)[:20]]
            if len(missing) > 20:
                problems.append(f"{table}: ... {len(missing)} missing in all")
            problems += [f"{table}: not in the log {i}" for i in sorted(extra)[:20]]
            if final != len(have):
                problems.append(f"{table}: {final} rows with FINAL, {len(have)} distinct ids")
        rows = client.query("SELECT account, currency, balance FROM account_balances").result_rows
        want_bal = self.exp.oracle.balances()
        bal_diffs = []
        got_bal = {r[0]: (r[1], Decimal(str(r[2]))) for r in rows if not str(r[0]).startswith("@")}
        for acct in sorted(set(got_bal) | set(want_bal)):
            g, w = got_bal.get(acct), want_bal.get(acct)
            if g is None or w is None or g != (w["currency"], Decimal(w["balance"])):
                bal_diffs.append(f"account_balances {acct}: {g}, want {w}")
        self.add(
            Check(
                "warehouse rows = log (distinct ids, FINAL)",
                not problems,
                " ".join(f"{t} {c['distinct']}/{c['log']}" for t, c in counts.items())
                + f"; raw duplicates before merge: {raw_dups_total}",
                counts,
                problems,
            )
        )
        self.add(
            Check(
                "balances: warehouse = model",
                not bal_diffs,
                f"{len(got_bal)} accounts, {len(bal_diffs)} differ",
                {"accounts": len(got_bal), "differ": len(bal_diffs)},
                bal_diffs,
            )
        )

    # -- the read side ----------------------------------------------------------------------

    def readside(self, timeout_s: float) -> None:
        want = self.exp.oracle.balances()
        port = self.stack.readside_port
        t0 = time.monotonic()
        diffs: list[str] = ["not asked yet"]
        while time.monotonic() - t0 < timeout_s:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts", timeout=30) as r:
                    got = _norm(iter(json.loads(r.read())))
                diffs = _diff_balances(got, want)
            except OSError as exc:
                diffs = [f"read side not answering: {exc}"]
            if not diffs:
                break
            time.sleep(2.0)
        converged = round(time.monotonic() - t0, 1)
        self.stats["readside_converged_s"] = converged
        rng = random.Random(self.stack.cfg.seed)
        sample = rng.sample(
            sorted(self.exp.oracle.outcomes), min(200, len(self.exp.oracle.outcomes))
        )
        wrong = []
        for cmd_id in sample:
            from urllib.parse import quote

            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/commands/{quote(cmd_id, safe='')}", timeout=30
                ) as r:
                    o = json.loads(r.read())
                got_o = o.get("reason") or o.get("status")
            except OSError as exc:
                got_o = f"error {exc}"
            if got_o != self.exp.oracle.outcomes[cmd_id]:
                wrong.append(
                    f"/commands/{cmd_id}: {got_o}, want {self.exp.oracle.outcomes[cmd_id]}"
                )
        self.add(
            Check(
                "read side: balances = model, outcomes sample = model",
                not diffs and not wrong,
                f"{len(want)} accounts, {len(diffs)} differ (after {converged}s); "
                f"{len(sample) - len(wrong)}/{len(sample)} outcomes right",
                {
                    "accounts": len(want),
                    "differ": len(diffs),
                    "outcomes_sampled": len(sample),
                    "outcomes_wrong": len(wrong),
                },
                diffs + wrong,
            )
        )


def _alert_brief(a: dict[str, Any]) -> str:
    return f"{a.get('kind')} {'->'.join(a.get('accounts') or [])} closing {(a.get('command_ids') or ['?'])[-1]}"


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    data: dict[str, Any]
    path: Path


def _send(stack: Stack, path: Path, cmds: list[Command]) -> Any:
    from producers.send import send_file

    with path.open("w") as f:
        for c in cmds:
            f.write((c[RAW] if RAW in c else json.dumps(c)) + "\n")
    return send_file(stack.resolved, str(path), progress=False, err=io.StringIO())


def run_soak(cfg: SoakConfig) -> Verdict:
    from rich.console import Console

    err = Console(stderr=True, highlight=False)

    def say(msg: str) -> None:
        if not cfg.quiet:
            err.print(msg, markup=False)

    started = time.time()
    t_start = time.monotonic()
    plan = build_plan(cfg)
    exp = model(plan)
    actions = schedule(cfg)
    made_home = cfg.home is None
    home = Path(cfg.home or tempfile.mkdtemp(prefix="paystream-soak-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    say(
        f"[soak] seed {cfg.seed}: {exp.by_type['transfer']} transfers, "
        f"{sum(exp.by_type.values())} commands in {len(plan.phases)} phases; "
        f"{cfg.kills} kills over {cfg.schedule_span_s():.0f}s, broker restart: {cfg.broker}; "
        f"home {home}"
    )
    stack = Stack(home, cfg)
    chaos: Chaos | None = None
    phases: list[dict[str, Any]] = []
    drain: dict[str, Any] = {}
    verifier: Verifier | None = None
    failure: str | None = None
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        t0 = time.monotonic()
        stack.up()
        up_s = time.monotonic() - t0
        say(f"[soak] stack up in {up_s:.1f}s (bootstrap {stack.resolved.bootstrap})")
        chaos = Chaos(stack, actions, say)
        chaos.start()
        workload_t0 = time.monotonic()
        files = home / "commands"
        files.mkdir(exist_ok=True)
        for i, (name, cmds) in enumerate(plan.phases):
            p0 = time.monotonic()
            report = _send(stack, files / f"{i:02d}-{name.replace(' ', '-')}.jsonl", cmds)
            sent_s = time.monotonic() - p0
            raw = sum(1 for c in cmds if RAW in c)
            if report.failed or report.invalid != raw:
                raise RuntimeError(f"phase {name}: {report} (want {raw} invalid lines)")
            if not wait_ledger(stack, time.monotonic() + cfg.drain_timeout_s, name):
                raise TimeoutError(f"phase {name}: the ledger did not catch up")
            took = time.monotonic() - p0
            p1 = time.monotonic()
            stopped = sum(max(0.0, min(b, p1) - max(a, p0)) for a, b in stack.broker_down)
            n_tr = sum(1 for c in cmds if c.get("type") == "transfer")
            phases.append(
                {
                    "phase": name,
                    "commands": len(cmds),
                    "transfers": n_tr,
                    "send_s": round(sent_s, 1),
                    "seconds": round(took, 1),
                    "broker_down_s": round(stopped, 1),
                }
            )
            say(
                f"[soak] {time.monotonic() - workload_t0:6.1f}s {time.strftime('%H:%M:%S')} "
                f"phase {name}: {len(cmds)} "
                f"commands in {took:.1f}s"
                + (f" ({n_tr / took:.0f} transfers/s)" if n_tr > 1000 else "")
            )
        workload_s = time.monotonic() - workload_t0
        say("[soak] workload done; waiting for the chaos schedule to finish")
        while not chaos.schedule_done.wait(1.0):
            if time.monotonic() - workload_t0 > cfg.drain_timeout_s + cfg.schedule_span_s():
                raise TimeoutError("the chaos schedule did not finish")
        # Drain: everything alive again (the chaos thread keeps reviving), every group caught up.
        d0 = time.monotonic()
        deadline = d0 + cfg.drain_timeout_s
        for name in stack.specs():
            if not stack.alive(name):
                stack.start(name)
        drain = _drain(stack, deadline, say)
        drain["seconds"] = round(time.monotonic() - d0, 1)
        if not drain["ok"]:
            raise TimeoutError(f"not drained after {cfg.drain_timeout_s}s: {drain}")
        chaos.stop()
        chaos.join(30)
        verifier = Verifier(stack, plan, exp, say)
        v0 = time.monotonic()
        verifier.run(readside_timeout_s=min(300.0, cfg.drain_timeout_s))
        verify_s = time.monotonic() - v0
    except (Exception, KeyboardInterrupt) as exc:
        failure = f"{type(exc).__name__}: {exc}"
        say(f"[soak] run failed: {failure}")
        say(traceback.format_exc())
        workload_s = locals().get("workload_s", 0.0)
        verify_s = 0.0
        up_s = locals().get("up_s", 0.0)
    finally:
        if chaos is not None:
            with contextlib.suppress(Exception):
                chaos.stop()
                chaos.join(30)
        logs = {}
        with contextlib.suppress(Exception):
            for p in stack.supervisor().list():
                logs[p["name"]] = str(stack.supervisor().log_path(p["name"]))
        with contextlib.suppress(Exception):
            stack.down()
        stack.restore_environment()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    checks = verifier.checks if verifier else []
    if chaos is not None:
        checks = checks + _chaos_checks(cfg, chaos)
        checks.append(_liveness_check(home / "log", list(stack.stalls.values())))
    ok = failure is None and bool(checks) and all(c.ok for c in checks)
    transfer_phases = [p for p in phases if p["transfers"] > 1000]
    tr_s = sum(p["seconds"] - p["broker_down_s"] for p in transfer_phases)
    tr_n = sum(p["transfers"] for p in transfer_phases)
    data: dict[str, Any] = {
        "ok": ok,
        "seed": cfg.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.monotonic() - t_start, 1),
        "failure": failure,
        "config": {
            "transfers": cfg.transfers,
            "accounts": cfg.accounts,
            "workers": cfg.workers,
            "partitions": cfg.partitions,
            "kills": cfg.kills,
            "broker": cfg.broker,
            "schedule_span_s": round(cfg.schedule_span_s(), 1),
        },
        "workload": {
            "commands": sum(exp.by_type.values()) + exp.raw_lines,
            "by_type": dict(exp.by_type),
            "refused_lines": exp.raw_lines,
            "exact_repeats": exp.duplicates,
            "reused_ids": sum(exp.reuses.values()),
            "planted_alerts": len(plan.planted_alerts),
        },
        "timing": {
            "stack_up_s": round(up_s, 1),
            "workload_s": round(workload_s, 1),
            "drain_s": drain.get("seconds"),
            "verify_s": round(verify_s, 1),
            "transfers_per_s": round(tr_n / tr_s) if tr_s else None,
            "commands_per_s": round(sum(p["commands"] for p in phases) / workload_s)
            if workload_s
            else None,
            **(verifier.stats if verifier else {}),
        },
        "phases": phases,
        "drain": drain,
        "chaos": {
            "schedule": [a.__dict__ for a in actions],
            "kills": chaos.kills if chaos else [],
            "kills_by_kind": dict(Counter(k["kind"] for k in chaos.kills)) if chaos else {},
            "broker_restarts": chaos.broker_restarts if chaos else [],
            "self_exits": chaos.self_exits if chaos else [],
            "errors": chaos.errors if chaos else [],
            "lag_samples": chaos.lag_samples if chaos else [],
        },
        "checks": [c.as_json() for c in checks],
        "home": str(home),
        "logs": logs,
    }
    path = (cfg.json_path or _repo_root() / "var" / "chaos" / "verdict.json").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process logs outlive the home: the evidence of a failure, or of a slow stretch.
    saved_logs = path.parent / f"{path.stem}-logs"
    with contextlib.suppress(OSError):
        shutil.rmtree(saved_logs, ignore_errors=True)
        shutil.copytree(home / "log", saved_logs)
        data["logs"] = {name: str(saved_logs / Path(p).name) for name, p in logs.items()}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with contextlib.suppress(OSError):
        (home / "verdict.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    if ok and made_home and not cfg.keep:
        shutil.rmtree(home, ignore_errors=True)
        data["home"] = None
    return Verdict(ok, data, path)


def _lags(stack: Stack) -> dict[str, int | None]:
    """Offsets each downstream consumer group is behind (transaction markers included)."""
    from confluent_kafka import TopicPartition

    from base.topics import TopicNames
    from connectors.sink import SINK_GROUP
    from paystream import queries
    from streams.detector.app import DETECTOR_GROUP

    p = stack.settings.topic_prefix
    n = TopicNames(p)
    groups = {
        "detector": (p + DETECTOR_GROUP, [n.transfers, n.accounts]),
        "warehouse": (p + SINK_GROUP, [n.ledger, n.transfers, n.outcomes, n.accounts, n.alerts]),
        "readside": (p + "paystream-readside", [n.ledger, n.transfers, n.outcomes, n.accounts]),
    }
    out: dict[str, int | None] = {}
    for name, (group, topics) in groups.items():
        try:
            ends = _ends(stack, topics)
            c = _consumer(stack, **{"group.id": group})
            try:
                done = queries._committed(c, [TopicPartition(t, q) for (t, q) in ends])
            finally:
                c.close()
            out[name] = sum(end - max(done.get(k, 0), 0) for k, end in ends.items())
        except Exception:
            out[name] = None
    return out


def _drain(stack: Stack, deadline: float, say: Callable[[str], None]) -> dict[str, Any]:
    from base.topics import TopicNames
    from connectors.sink import SINK_GROUP
    from streams.detector.app import DETECTOR_GROUP

    p = stack.settings.topic_prefix
    n = TopicNames(p)
    out: dict[str, Any] = {"ok": False, "lag_at_start": _lags(stack)}
    say(f"[drain] records behind when the workload ended: {out['lag_at_start']}")
    t0 = time.monotonic()
    steps: list[tuple[str, Callable[[], bool]]] = [
        ("ledger", lambda: wait_ledger(stack, deadline)),
        (
            "detector",
            lambda: wait_group(stack, p + DETECTOR_GROUP, [n.transfers, n.accounts], deadline),
        ),
        (
            "warehouse",
            lambda: wait_group(
                stack,
                p + SINK_GROUP,
                [n.ledger, n.transfers, n.outcomes, n.accounts, n.alerts],
                deadline,
            ),
        ),
        (
            "readside",
            lambda: wait_group(
                stack,
                p + "paystream-readside",
                [n.ledger, n.transfers, n.outcomes, n.accounts],
                deadline,
            ),
        ),
    ]
    for name, fn in steps:
        if not fn():
            out[name] = None
            say(f"[drain] {name} not caught up")
            return out
        out[name] = round(time.monotonic() - t0, 1)
        say(f"[drain] {name} caught up after {out[name]}s")
    out["ok"] = True
    return out


# librdkafka's own words for a client that stopped working while its process lives on: the
# application did not poll for max.poll.interval.ms (its main loop is blocked), or a fatal
# error (the client is unusable until the process restarts).
_HUNG_MARKS = ("|MAXPOLL|", "|FATAL|")
_RESTART_MARKS = ("restarting in place", " started (")


def _liveness_check(log_dir: Path, stalls: list[dict[str, Any]]) -> Check:
    """Every process kept working or exited: none blocked for minutes while alive."""
    found = [
        f"ledger stalled {st['idle_s']}s from {st['since']} in phase {st['phase']!r}: "
        f"commands partition {st['partition']} at offset {st['offset']}, {st['pending']} pending"
        for st in stalls
    ]
    recovered = 0
    for path in sorted(log_dir.glob("*.log")):
        if path.name.startswith("kafka-"):
            continue
        marks: list[str] = []
        with contextlib.suppress(OSError), path.open(errors="replace") as f:
            for line in f:
                if any(mark in line for mark in _HUNG_MARKS):
                    marks.append(f"{path.stem}: {line.strip()[:300]}")
                elif any(mark in line for mark in _RESTART_MARKS):
                    # The process restarted itself in place (paystream.bootstrap), or was
                    # replaced (a chaos kill): the broken client is gone. Whether its
                    # partitions waited too long is the stall check's business.
                    recovered += len(marks)
                    marks = []
        found += marks
    return Check(
        "liveness: no process blocked or fatally broken",
        not found,
        f"{len(stalls)} ledger stalls of {STALL_S:.0f}s or more; "
        f"{len(found) - len(stalls)} blocked or fatal clients in the process logs"
        f" ({recovered} more whose process restarted, in place or after a kill)",
        {"stalls": len(stalls), "hung_clients": len(found) - len(stalls), "recovered": recovered},
        found,
    )


def _chaos_checks(cfg: SoakConfig, chaos: Chaos) -> list[Check]:
    by_kind = Counter(k["kind"] for k in chaos.kills)
    hit = Counter(k["kind"] for k in chaos.kills if k["was_alive"])
    enough = len(chaos.kills) >= min(cfg.kills, 20) and all(by_kind[k] for k in KINDS)
    checks = [
        Check(
            "chaos: kill -9 of every process kind",
            enough and not chaos.errors,
            f"{len(chaos.kills)} kills ({sum(hit.values())} of a live process): "
            + ", ".join(f"{k} {by_kind[k]}" for k in KINDS)
            + (
                f"; {len(chaos.self_exits)} exited by themselves (restarted)"
                if chaos.self_exits
                else ""
            ),
            {
                "kills": len(chaos.kills),
                "live": sum(hit.values()),
                **dict(by_kind),
                "self_exits": len(chaos.self_exits),
            },
            chaos.errors,
        )
    ]
    if cfg.broker != "none":
        checks.append(
            Check(
                "chaos: broker restarted",
                len(chaos.broker_restarts) == 1,
                ", ".join(
                    f"{b['mode']} at {b['at_s']}s, back after {b['back_after_s']}s"
                    for b in chaos.broker_restarts
                )
                or "no restart",
                {"restarts": len(chaos.broker_restarts)},
            )
        )
    return checks


# --------------------------------------------------------------------------------------------
# The verdict on one screen
# --------------------------------------------------------------------------------------------


def print_verdict(v: Verdict, console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:  # a file or a pipe gets 120 columns, not rich's 80
        console = Console() if sys.stdout.isatty() else Console(width=120)
    d = v.data
    t = Table(
        title=f"chaos soak, seed {d['seed']}: {'PASS' if v.ok else 'FAIL'}", title_justify="left"
    )
    t.add_column("check")
    t.add_column("", justify="center")
    t.add_column("detail", overflow="fold")
    for c in d["checks"]:
        mark = "[green]PASS[/]" if c["ok"] else "[bold red]FAIL[/]"
        detail = c["detail"]
        if c["problems"]:
            detail += f"\n[red]{c['problems'][0]}[/]" + (
                f" (+{c['problems_total'] - 1} more)" if c["problems_total"] > 1 else ""
            )
        t.add_row(c["name"], mark, detail)
    if d["failure"]:
        t.add_row("run", "[bold red]FAIL[/]", d["failure"])
    console.print(t)
    tm = d["timing"]
    w = d["workload"]
    ch = d["chaos"]
    console.print(
        f"workload: {w['by_type'].get('transfer', 0)} transfers, {w['commands']} commands "
        f"({', '.join(f'{k} {n}' for k, n in sorted(w['by_type'].items()) if k != 'transfer')}; "
        f"{w['refused_lines']} refused lines, {w['exact_repeats']} repeats, {w['reused_ids']} reused ids)"
    )
    kills = ", ".join(f"{k} {n}" for k, n in sorted(ch["kills_by_kind"].items()))
    console.print(
        f"chaos: {len(ch['kills'])} kill -9 ({kills}); broker restarts {len(ch['broker_restarts'])}; "
        f"{len(ch['self_exits'])} processes exited by themselves and were restarted"
    )
    console.print(
        f"time: {d['duration_s']}s in all (stack up {tm['stack_up_s']}s, workload {tm['workload_s']}s, "
        f"drain {tm['drain_s']}s, verify {tm['verify_s']}s); write side {tm['transfers_per_s']} "
        f"transfers/s under kill -9 (the broker's restart not counted)"
    )
    dr = d["drain"]
    if dr.get("lag_at_start"):
        console.print(
            "drain: behind at the end of the workload "
            + ", ".join(f"{k} {n}" for k, n in dr["lag_at_start"].items())
            + " records; caught up after "
            + ", ".join(
                f"{k} {dr[k]}s" for k in ("ledger", "detector", "warehouse", "readside") if k in dr
            )
        )
    console.print(f"verdict: {v.path}" + (f"; home kept: {d['home']}" if d["home"] else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m paystream.soak", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--seed", type=int, default=int(os.environ.get("PAYSTREAM_SOAK_SEED", DEFAULT_SEED))
    )
    ap.add_argument(
        "--transfers",
        type=int,
        default=int(os.environ.get("PAYSTREAM_SOAK_TRANSFERS", DEFAULT_TRANSFERS)),
    )
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument("--kills", type=int, default=24, help="kill -9 count (default 24)")
    ap.add_argument(
        "--broker",
        choices=["kill", "stop", "none"],
        default="kill",
        help="how the broker is restarted once (default: kill -9, then start)",
    )
    ap.add_argument("--span", type=float, default=None, help="seconds the kills are spread over")
    ap.add_argument("--drain-timeout", type=float, default=900.0)
    ap.add_argument("--home", type=Path, default=None, help="default: a new temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the home even when it passes")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        dest="json_path",
        help="verdict file (default var/chaos/verdict.json)",
    )
    ap.add_argument("--quiet", action="store_true", help="only the verdict")
    a = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("producers.rdkafka", "ops.kafka.rdkafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    cfg = SoakConfig(
        seed=a.seed,
        transfers=a.transfers,
        accounts=a.accounts,
        workers=a.workers,
        partitions=a.partitions,
        kills=a.kills,
        broker=a.broker,
        span_s=a.span,
        drain_timeout_s=a.drain_timeout,
        home=a.home,
        keep=a.keep,
        json_path=a.json_path,
        quiet=a.quiet,
    )
    v = run_soak(cfg)
    print_verdict(v)
    return 0 if v.ok else 1


if __name__ == "__main__":
    sys.exit(main())
