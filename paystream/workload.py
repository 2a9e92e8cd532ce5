"""A seeded, phased workload whose outcome does not depend on how sagas interleave.

Within a phase, transfers only go from "sources" to "destinations" (disjoint sets), and no
source sends more than it holds except by deliberate overdraws larger than its whole balance,
so every command's outcome is the same in any processing order. Phases are separated by
``paystream wait``. The demo (``make run``), the tests and the chaos run all use it.

With ``plant=True`` (the demo) it also plants money moving between related accounts among
the random traffic, for the related-transfer detector: related-party chains of 2..4 hops,
cycles, direct transfers and relation changes (``relate_accounts``, ``unrelate_accounts``)
before, between and after the hops, on dedicated accounts ``<prefix>-p<i>`` (and one chain
through a random account). Each hop is in its own phase and relation changes are in phases
without transfers, and no account both sends and receives within a phase, so which alerts
the detector must raise does not depend on the order inside a phase either. Without
``plant`` the workload is exactly what it always was.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Command = dict[str, Any]

RELATION_KINDS = ("family", "friend", "business")


@dataclass(frozen=True, slots=True)
class Planted:
    pattern: str
    closing: str  # command id (= transfer id) of the transfer that closes the pattern
    kinds: tuple[str, ...]  # alert kinds the closing transfer must raise, in order


@dataclass
class Workload:
    accounts: int = 2000
    transfers: int = 20000
    seed: int = 7
    prefix: str = "acct"
    phases: list[tuple[str, list[Command]]] = field(default_factory=list)
    plant: bool = False  # related-party chains, cycles and relation changes (the demo)
    # What was planted: pattern name, closing transfer's command id, the alert kinds expected
    # on it (empty: none may be raised, e.g. the relation was removed before it).
    planted: list[Planted] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._n = 0
        self.phases = list(self._build())
        if self.plant:
            self._plant()

    def _id(self, tag: str) -> str:
        self._n += 1
        return f"{self.prefix}-{tag}-{self.seed}-{self._n}"

    def name(self, i: int) -> str:
        return f"{self.prefix}-{i}"

    def _build(self) -> Iterator[tuple[str, list[Command]]]:
        rng = self.rng
        n = self.accounts
        names = [self.name(i) for i in range(n)]
        currency = {a: ("EUR" if i % 10 >= 8 else "USD") for i, a in enumerate(names)}
        usd = [a for a in names if currency[a] == "USD"]
        # 1. Opens (and a currency the ledger does not support).
        opens = [
            {
                "type": "open_account",
                "command_id": self._id("open"),
                "account": a,
                "user": f"user-{a}",
                "currency": currency[a],
            }
            for a in names
        ]
        opens.append(
            {
                "type": "open_account",
                "command_id": self._id("open"),
                "account": f"{self.prefix}-xxx",
                "user": f"user-{self.prefix}-xxx",
                "currency": "XXX",
            }
        )
        yield "opens", opens
        # 2. Deposits: valid ones, bad amounts, duplicates, a reused id, a second account per user.
        deps: list[Command] = []
        for a in names:
            deps.append(
                {
                    "type": "deposit",
                    "command_id": self._id("dep"),
                    "account": a,
                    "amount": f"{rng.randint(500, 5000)}.{rng.randint(0, 99):02d}",
                }
            )
        for a in rng.sample(names, min(50, n)):
            deps.append(dict(deps[names.index(a)]))  # exact duplicate: takes effect once
        for a in rng.sample(names, min(10, n)):
            reused = dict(deps[names.index(a)])
            reused["amount"] = "1.00"  # same id, different payload: rejected
            deps.append(reused)
        for bad in ("0", "1.234", "-5", "abc", "1e3", "NaN"):
            deps.append(
                {
                    "type": "deposit",
                    "command_id": self._id("bad"),
                    "account": rng.choice(names),
                    "amount": bad,
                }
            )
        deps.append(
            {
                "type": "deposit",
                "command_id": self._id("dep"),
                "account": f"{self.prefix}-nobody",
                "amount": "5.00",
            }
        )
        deps.append(
            {
                "type": "open_account",
                "command_id": self._id("open"),
                "account": f"{self.prefix}-second",
                "user": f"user-{names[0]}",
                "currency": "USD",
            }
        )
        yield "deposits", deps
        # 3. Blocks and relations.
        blocked = rng.sample(usd, max(2, n // 50))
        rel: list[Command] = [
            {
                "type": "block_account",
                "command_id": self._id("blk"),
                "account": a,
                "reason": "court order",
            }
            for a in blocked
        ]
        for _ in range(max(4, n // 20)):
            a, b = rng.sample(names, 2)
            rel.append(
                {
                    "type": "relate_accounts",
                    "command_id": self._id("rel"),
                    "account": a,
                    "related": b,
                    "kind": rng.choice(["family", "friend", "business"]),
                }
            )
        rel.append(
            {
                "type": "relate_accounts",
                "command_id": self._id("rel"),
                "account": names[0],
                "related": f"{self.prefix}-nobody",
                "kind": "family",
            }
        )
        yield "blocks and relations", rel
        # 4. Transfers from even to odd accounts, with every kind of refusal.
        yield "transfers", self._transfers(names, currency, blocked, 0, self.transfers // 2)
        # 5. Withdrawals and unblocks.
        wd: list[Command] = []
        for a in rng.sample(names, min(200, n)):
            wd.append(
                {"type": "withdraw", "command_id": self._id("wd"), "account": a, "amount": "1.00"}
            )
        wd.append(
            {
                "type": "withdraw",
                "command_id": self._id("wd"),
                "account": names[1],
                "amount": "99999999.00",
            }
        )
        yield "withdrawals", wd
        yield (
            "unblocks",
            [
                {"type": "unblock_account", "command_id": self._id("unb"), "account": a}
                for a in blocked[: len(blocked) // 2]
            ],
        )
        # 6. More transfers, the other way round.
        still = blocked[len(blocked) // 2 :]
        yield (
            "more transfers",
            self._transfers(names, currency, still, 1, self.transfers - self.transfers // 2),
        )

    def _transfers(
        self,
        names: list[str],
        currency: dict[str, str],
        blocked: list[str],
        parity: int,
        count: int,
    ) -> list[Command]:
        rng = self.rng
        sources = [a for i, a in enumerate(names) if i % 2 == parity]
        dests = [a for i, a in enumerate(names) if i % 2 != parity]
        out: list[Command] = []
        # At most 0.10 each against deposits of at least 500.00: no source runs dry unless it
        # sends thousands, so every plain transfer succeeds in any order.
        for _ in range(count):
            a = rng.choice(sources)
            cur = currency[a]
            same = [d for d in rng.sample(dests, min(8, len(dests))) if currency[d] == cur]
            b = same[0] if same else rng.choice(dests)
            out.append(
                {
                    "type": "transfer",
                    "command_id": self._id("tr"),
                    "from": a,
                    "to": b,
                    "amount": f"0.{rng.randint(1, 10):02d}",
                }
            )
        a = sources[0]
        eur = next((d for d in dests if currency[d] != currency[a]), None)
        specials: list[Command] = [
            {
                "type": "transfer",
                "command_id": self._id("tr"),
                "from": a,
                "to": a,
                "amount": "1.00",
            },
            {
                "type": "transfer",
                "command_id": self._id("tr"),
                "from": a,
                "to": f"{self.prefix}-nobody",
                "amount": "1.00",
            },
            {
                "type": "transfer",
                "command_id": self._id("tr"),
                "from": a,
                "to": dests[0],
                "amount": "99999999.00",
            },
            {
                "type": "transfer",
                "command_id": self._id("tr"),
                "from": a,
                "to": dests[0],
                "amount": "0.001",
            },
        ]
        if eur:
            specials.append(
                {
                    "type": "transfer",
                    "command_id": self._id("tr"),
                    "from": a,
                    "to": eur,
                    "amount": "1.00",
                }
            )
        for blk in blocked:
            if blk in dests:
                specials.append(
                    {
                        "type": "transfer",
                        "command_id": self._id("tr"),
                        "from": a,
                        "to": blk,
                        "amount": "0.01",
                    }
                )
            else:
                specials.append(
                    {
                        "type": "transfer",
                        "command_id": self._id("tr"),
                        "from": blk,
                        "to": dests[0],
                        "amount": "0.01",
                    }
                )
        out.extend(specials)
        rng.shuffle(out)
        return out

    # -- planted patterns for the related-transfer detector -----------------------------------

    def _plant(self) -> None:
        """Add the planted patterns to the phases (see the module doc).

        Hop phases: T1 = "transfers", T2 = "more transfers", then two new ones, T3 and T4.
        Relation phases: R1 = "blocks and relations" (before T1), R2 = "unblocks" (between
        T1 and T2) and a new R3 between T2 and T3. A separate random generator: the random
        traffic is the same with or without planting.
        """
        rng = random.Random(self.seed * 1_000_003 + 17)
        by_name = dict(self.phases)
        opens, deps = by_name["opens"], by_name["deposits"]
        r1, r2 = by_name["blocks and relations"], by_name["unblocks"]
        t1, t2 = by_name["transfers"], by_name["more transfers"]
        r3: list[Command] = []
        t3: list[Command] = []
        t4: list[Command] = []
        hops = (t1, t2, t3, t4)
        self.phases += [
            ("relation changes", r3),
            ("related chains: hop 3", t3),
            ("related chains: hop 4", t4),
        ]
        # A random account that takes part in the random traffic: it receives in T1 (odd
        # accounts do), sends in T2, is USD and is not blocked then.
        blocked_at_t2 = {c["account"] for c in r1 if c["type"] == "block_account"}
        blocked_at_t2 -= {c["account"] for c in r2}
        odd_usd = [
            self.name(i)
            for i in range(1, self.accounts, 2)
            if i % 10 < 8 and self.name(i) not in blocked_at_t2
        ]
        copies = max(1, self.accounts // 200)  # 10 of each pattern in the default demo
        counter = itertools.count()
        new_accounts: list[str] = []

        def acct() -> str:
            a = f"{self.prefix}-p{next(counter)}"
            new_accounts.append(a)
            return a

        def put(phase: list[Command], c: Command) -> Command:
            phase.insert(rng.randrange(len(phase) + 1), c)
            return c

        def relate(phase: list[Command], a: str, b: str) -> None:
            put(
                phase,
                {
                    "type": "relate_accounts",
                    "command_id": self._id("prel"),
                    "account": a,
                    "related": b,
                    "kind": rng.choice(RELATION_KINDS),
                },
            )

        def unrelate(phase: list[Command], a: str, b: str) -> None:
            put(
                phase,
                {
                    "type": "unrelate_accounts",
                    "command_id": self._id("punrel"),
                    "account": a,
                    "related": b,
                },
            )

        def send(phase: list[Command], a: str, b: str) -> str:
            c = put(
                phase,
                {
                    "type": "transfer",
                    "command_id": self._id("tr"),
                    "from": a,
                    "to": b,
                    "amount": f"{rng.randint(10, 90)}.{rng.randint(0, 99):02d}",
                },
            )
            return str(c["command_id"])

        def chain(path: list[str], first_hop: int = 0) -> str:
            """One transfer per hop phase along ``path``; the closing transfer's id."""
            last = ""
            for k, (a, b) in enumerate(itertools.pairwise(path)):
                last = send(hops[first_hop + k], a, b)
            return last

        def expect(pattern: str, closing: str, *kinds: str) -> None:
            self.planted.append(Planted(pattern, closing, kinds))

        for _ in range(copies):
            # Direct: related when posted; not any more; not yet (then yes).
            a, b = acct(), acct()
            relate(r1, a, b)
            expect("direct", send(t1, a, b), "related_direct")
            a, b = acct(), acct()
            relate(r1, a, b)
            unrelate(r2, b, a)
            expect("direct, relation removed before", send(t2, a, b))
            a, b = acct(), acct()
            before = send(t2, a, b)
            relate(r3, a, b)
            expect("direct, related only after", before)
            expect("direct, related in between", send(t3, a, b), "related_direct")
            # Related party through intermediaries: 2, 3 and 4 hops.
            u, m, w = acct(), acct(), acct()
            relate(r1, u, w)
            expect("indirect, 2 hops", chain([u, m, w]), "related_indirect")
            u, x, w, m1, m2 = acct(), acct(), acct(), acct(), acct()
            relate(r1, u, x)
            relate(r1, x, w)  # related through x: a component, not an edge
            expect("indirect, 3 hops, related via x", chain([u, m1, m2, w]), "related_indirect")
            u, m1, m2, m3, w = acct(), acct(), acct(), acct(), acct()
            relate(r1, w, u)
            expect("indirect, 4 hops", chain([u, m1, m2, m3, w]), "related_indirect")
            # Relation changes between the hops: a split, a merge, a new relation.
            u, x, w, m1, m2 = acct(), acct(), acct(), acct(), acct()
            relate(r1, u, x)
            relate(r1, x, w)
            unrelate(r3, x, w)  # splits {u, x, w} before the closing hop
            expect("indirect, component split before closing", chain([u, m1, m2, w]))
            u, x, w, m = acct(), acct(), acct(), acct()
            relate(r1, u, x)
            relate(r3, w, x)  # merges {u, x} and {w} between the hops
            expect(
                "indirect, components merged between hops",
                chain([u, m, w], first_hop=1),
                "related_indirect",
            )
            u, m, w = acct(), acct(), acct()
            relate(r3, u, w)
            expect(
                "indirect, related between hops", chain([u, m, w], first_hop=1), "related_indirect"
            )
            # Hops in the wrong time order are no chain.
            u, m, w = acct(), acct(), acct()
            relate(r1, u, w)
            send(t1, m, w)
            expect("indirect, hops out of order", send(t2, u, m))
            # Through an account of the random traffic.
            u, w = acct(), acct()
            relate(r1, u, w)
            expect(
                "indirect, through a random account",
                chain([u, rng.choice(odd_usd), w]),
                "related_indirect",
            )
            # Cycles of 2, 3 and 4 hops; a cycle between related accounts (two kinds).
            c0, c1 = acct(), acct()
            expect("cycle, 2 hops", chain([c0, c1, c0]), "cycle")
            c0, c1, c2 = acct(), acct(), acct()
            expect("cycle, 3 hops", chain([c0, c1, c2, c0]), "cycle")
            c0, c1, c2, c3 = acct(), acct(), acct(), acct()
            expect("cycle, 4 hops", chain([c0, c1, c2, c3, c0]), "cycle")
            a, b = acct(), acct()
            relate(r1, a, b)
            expect("direct", send(t1, a, b), "related_direct")
            expect("cycle between related accounts", send(t2, b, a), "related_direct", "cycle")
        for a in new_accounts:
            put(
                opens,
                {
                    "type": "open_account",
                    "command_id": self._id("popen"),
                    "account": a,
                    "user": f"user-{a}",
                    "currency": "USD",
                },
            )
            put(
                deps,
                {
                    "type": "deposit",
                    "command_id": self._id("pdep"),
                    "account": a,
                    "amount": "500.00",
                },
            )

    def all_commands(self) -> Iterator[Command]:
        for _, cmds in self.phases:
            yield from cmds
