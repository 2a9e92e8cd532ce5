"""The soak's workload and what it must produce: the plan (the demo's phases plus duplicates,
reuses, refusals and planted patterns) and its model (outcomes, balances, events per command).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paystream.oracle import Oracle
from paystream.workload import Workload

Command = dict[str, Any]
RAW = "__raw__"  # a "command" that is a raw line for the producer to refuse
DEFAULT_SEED = 20261122
DEFAULT_TRANSFERS = 100_000
DEFAULT_KILLS = 24
# Refusals decided at the destination: the money was held, then turned back (void).
TURNED_BACK = {"credit_account_not_found", "credit_account_blocked", "currency_mismatch"}


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

    @staticmethod
    def from_env(env: Mapping[str, str] | None = None) -> SoakConfig:
        """The soak's own knobs (``PAYSTREAM_SOAK_SEED``, ``_TRANSFERS``, ``_KILLS``), read in
        this one place for ``make soak`` and ``tests/chaos/test_soak.py``."""
        env = os.environ if env is None else env
        return SoakConfig(
            seed=int(env.get("PAYSTREAM_SOAK_SEED") or DEFAULT_SEED),
            transfers=int(env.get("PAYSTREAM_SOAK_TRANSFERS") or DEFAULT_TRANSFERS),
            kills=int(env.get("PAYSTREAM_SOAK_KILLS") or DEFAULT_KILLS),
        )


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
