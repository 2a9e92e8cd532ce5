"""The model against the rules alone, on a held-out week of planted fraud (docs/risk.md).

Five weeks of the demo's workload (``paystream.risk_workload``) in log time go through the
risk core as the agent runs it (the demo rules, account facts, declines reported as the
payments workers report them); the model is trained by ``paystream.risk_train.train`` on the
first four weeks and judged on the fifth, next to the rule set's own score.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Any

from paystream.risk_rules_demo import DEMO_RULES_TOML
from paystream.risk_train import Row, train
from paystream.risk_workload import DECLINED_CARD, plan
from streams.risk import model as rm
from streams.risk.decide import Env, decide, evolve_all
from streams.risk.rules import load_rules

T0_US = 1_800_000_000_000_000
S_US = 1_000_000


def decisions(seed: int, weeks: int, users: int, fraud_share: float) -> list[Row]:
    """Each planned payment's live decision as a training row (labelled by its pattern)."""
    env = Env(load_rules(DEMO_RULES_TOML))
    planned = plan(seed, "ev", users, fraud_share, span_s=weeks * 7 * 86400.0)
    n = itertools.count()
    queue: list[tuple[int, int, rm.Message]] = []
    fraud: dict[str, bool] = {}
    opened: set[str] = set()
    for p in planned:
        account = f"{p.user}-acct"
        if p.user not in opened:
            opened.add(p.user)
            at = T0_US + int(p.account_opened_s * S_US)
            heapq.heappush(queue, (at, next(n), rm.AccountFact(p.user, account, "opened", at)))
        at = T0_US + int(p.at_s * S_US)
        req = rm.RiskRequest(p.user, p.payment_id, p.type, p.amount, "USD", p.option,
                             p.instrument if p.type == "pay_in" else account,
                             account if p.type == "pay_in" else p.instrument, at)  # fmt: skip
        heapq.heappush(queue, (at, next(n), req))
        fraud[p.payment_id] = p.fraud
    states: dict[str, rm.KeyState | None] = {}
    rows: list[Row] = []
    while queue:
        at, _, msg = heapq.heappop(queue)
        events = decide(states.get(msg.key), msg, env)
        states[msg.key] = evolve_all(states.get(msg.key), events)
        for e in events:
            if not isinstance(e, rm.Decided):
                continue
            d = e.decision
            rows.append(
                Row(d.ts, d.payment_id, dict(d.features), float(d.score), fraud[d.payment_id])
            )
            ended = _ending(d, msg)
            if ended is not None:  # as the payments workers report a decline
                heapq.heappush(
                    queue,
                    (
                        at + S_US,
                        next(n),
                        rm.PaymentEnded(d.user_id, d.payment_id, ended, None, at + S_US),
                    ),
                )
    return rows


def _ending(d: rm.Decision, msg: rm.Message) -> str | None:
    if d.action.value == "block":
        return "rejected"
    if (
        d.action.value == "allow"
        and isinstance(msg, rm.RiskRequest)
        and msg.instrument == DECLINED_CARD
    ):
        return "failed"
    return None


def evaluate(
    seed: int = 7, weeks: int = 5, users: int = 3000, fraud_share: float = 0.06
) -> dict[str, Any]:
    rows = decisions(seed, weeks, users, fraud_share)
    _, metrics = train(rows)
    return {
        "seed": seed, "weeks": weeks, "users": users, "payments": len(rows),
        "fraud_payments": sum(r.fraud for r in rows), **metrics,
    }  # fmt: skip
