"""A seeded, phased workload whose outcome does not depend on how sagas interleave.

Within a phase, transfers only go from "sources" to "destinations" (disjoint sets), and no
source sends more than it holds except by deliberate overdraws larger than its whole balance,
so every command's outcome is the same in any processing order. Phases are separated by
``paystream wait``. The demo (``make run``), the tests and the chaos run all use it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

Command = dict[str, Any]


@dataclass
class Workload:
    accounts: int = 2000
    transfers: int = 20000
    seed: int = 7
    prefix: str = "acct"
    phases: list[tuple[str, list[Command]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._n = 0
        self.phases = list(self._build())

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

    def all_commands(self) -> Iterator[Command]:
        for _, cmds in self.phases:
            yield from cmds
