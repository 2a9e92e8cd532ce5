"""``paystream recon internal``: the hourly check (docs/recon.md). The payments workers' order
states (their changelog) against the ledger's postings and the warehouse's rows, and every
balance on the write side, the ledger replay and the warehouse (``paystream audit``'s own
comparison, reused). Certain fixes are applied (a ledger command again with its deterministic
id, a status request to the PSP, a wait for the warehouse); the rest open review items."""

from __future__ import annotations

import gc
import json
import time
from dataclasses import dataclass
from typing import Any

from base.config import Settings
from base.kafka import scan
from base.topics import TopicNames
from connectors.warehouse import query_client
from paystream.audit import audit
from streams import payments_agent, payments_state
from streams.payments import model as pm
from streams.recon import limits
from streams.recon.internal import (
    Finding,
    InternalAction,
    LiveOrder,
    check_balances,
    check_orders,
    posting_step,
)


@dataclass
class InternalReport:
    orders: int
    accounts: int
    findings: list[Finding]

    def as_json(self) -> dict[str, Any]:
        return {
            "orders": self.orders,
            "accounts": self.accounts,
            "mismatches": [
                {
                    "category": f.category.value, "subject": f.subject,
                    "payment_order_id": f.subject if "/" in f.subject else None,
                    "expected": f.expected, "found": f.found, "resolution": f.resolution,
                    "action": f.action.value,
                }
                for f in self.findings
            ],
        }  # fmt: skip


def live_states(settings: Settings) -> dict[str, bytes]:
    """The payments workers' latest state per payment, as their changelog holds it
    (compacted; encoded by ``streams.payments_state.encode_state``). Idempotency keys'
    states are left out."""
    topic = TopicNames(settings.topic_prefix).payments_state
    out: dict[str, bytes] = {}
    for msg in scan(settings, topic):
        key = (msg.key() or b"").decode()
        value = msg.value()
        if value is None:
            out.pop(key, None)
        elif value.startswith(b'["p"'):
            out[key] = value
    return out


def live_order(data: bytes) -> LiveOrder:
    """What the check needs of a payment's state, read straight from its changelog JSON (a
    whole ``decode_state`` costs three times as much); tests/unit/test_recon_answers.py
    holds it to ``decode_state``."""
    v = json.loads(data)
    if v[0] != "p" or len(v) != _STATE_FIELDS:
        return _live(_decode(data))
    req, status, attempts, history, version = v[1], v[6], v[10], v[13], v[14]
    a = attempts[-1] if attempts else None
    ts = max(history[-1][1] if history else v[5], a[10] if a else 0)
    return LiveOrder(pm.order_id_of(req[0]), req[2], status, version, ts, a[1] if a else None)


_STATE_FIELDS = 16


def _decode(data: bytes) -> pm.PaymentState:
    state = payments_state.decode_state(data)
    if not isinstance(state, pm.PaymentState):
        raise ValueError("not a payment's state")
    return state


def _live(p: pm.PaymentState) -> LiveOrder:
    a = p.attempt
    ts = max(p.history[-1][1] if p.history else p.created_at, a.updated_at if a else 0)
    return LiveOrder(
        p.order_id, p.request.type.value, p.status.value, p.version, ts, a.psp if a else None
    )


def _warehouse(settings: Settings) -> tuple[dict[str, int], set[str]]:
    c = query_client(settings)
    versions = {
        r[0]: int(r[1])
        for r in c.query("SELECT payment_order_id, version FROM payment_orders FINAL").result_rows
    }
    posted = {
        r[0]
        for r in c.query(
            "SELECT DISTINCT command_id FROM ledger_entries FINAL WHERE startsWith(account, '@psp/')"
            " AND (endsWith(command_id, '/settle') OR endsWith(command_id, '/post'))"
        ).result_rows
    }
    return versions, posted


def check(settings: Settings, apply: bool = True) -> InternalReport:
    from paystream import queries

    states = live_states(settings)
    gc.disable()  # a million small objects: the collector would scan them again and again
    try:
        live = [live_order(v) for v in states.values()]
    finally:
        gc.enable()
    findings: list[Finding] = []
    for attempt in range(2):
        versions, posted = _warehouse(settings)
        findings = check_orders(
            live, versions, posted, time.time_ns() // 1000,
            limits.IN_FLIGHT_DEADLINE_S, limits.WAREHOUSE_LAG_GRACE_S,
        )  # fmt: skip
        if attempt or not any(f.action is InternalAction.wait for f in findings):
            break
        queries.wait(
            settings, timeout_s=limits.WAREHOUSE_WAIT_S
        )  # warehouse_lag: wait, check again
    books = audit(settings)
    findings += check_balances(books["differences"])
    if apply:
        acted = {
            f.subject.rsplit("/", 1)[0] for f in findings if f.action is not InternalAction.wait
        }
        payments = [_decode(states[k]) for k in acted if k in states]
        _apply(settings, findings, {p.order_id: p for p in payments})
    return InternalReport(len(live), int(books["live_accounts"]), findings)


def _apply(
    settings: Settings, findings: list[Finding], by_order: dict[str, pm.PaymentState]
) -> None:
    from paystream.recon_settlement import send

    names = TopicNames(settings.topic_prefix)
    now = time.time_ns() // 1000
    out: list[tuple[str, str, str, dict[str, Any]]] = []
    for f in findings:
        p = by_order.get(f.subject)
        if f.action is InternalAction.post and p is not None and p.attempt is not None:
            step = pm.LedgerStep(posting_step(p.request.type.value))
            o = payments_agent._ledger_command(
                pm.LedgerCommandIssued(step, p.request, p.attempt.psp, None, now)
            )
            out.append((o.key, getattr(names, o.topic), o.schema, o.record))
        elif f.action is InternalAction.ask_psp and p is not None and p.attempt is not None:
            o = payments_agent._psp_request(
                pm.PspRequested(pm.PspRequestKind.status, p.attempt, p.request, now)
            )
            out.append((o.key, getattr(names, o.topic), o.schema, o.record))
        elif f.action is InternalAction.review:
            iid = f"recon:{f.category.value}:internal:{f.subject.replace('/', '.')}"[:140]
            out.append((iid, names.reviews, "ReviewRequest", {
                "request_id": f"{iid}/open", "op": "open", "item_id": iid, "kind": "recon",
                "payment_id": f.subject.rsplit("/", 1)[0] if "/" in f.subject else None,
                "rules": [], "category": f.category.value,
                "evidence": _json({**f.evidence, "expected": f.expected, "found": f.found}),
                "actions": ["resolve"], "decision": None, "note": None, "reviewer": None,
                "ts": now,
            }))  # fmt: skip
    if out:
        send(settings, out)


def _json(v: dict[str, Any]) -> str:
    return json.dumps(v, default=str)[:60_000]
