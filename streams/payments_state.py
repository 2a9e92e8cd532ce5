"""The payments' state as its changelog holds it (``paystream.payments-state.v1``): compact
JSON, one array per state, read back by the payments workers and the API's view."""

from __future__ import annotations

import json
from typing import Any

from streams.payments import model as pm
from streams.payments_risk import risk_json, risk_of


def encode_state(state: pm.State) -> bytes:
    if isinstance(state, pm.KeyState):
        v: list[Any] = [
            "k",
            state.scope,
            state.idempotency_key,
            state.payment_id,
            state.digest,
            state.ts,
        ]
    else:
        r = state.request
        v = [
            "p",
            [
                r.payment_id,
                r.user_id,
                r.type.value,
                r.from_acct,
                r.to_acct,
                r.amount,
                r.currency,
                r.payment_option.value,
            ],
            state.scope,
            state.idempotency_key,
            state.digest,
            state.created_at,
            state.status.value,
            state.reason,
            list(state.candidates),
            state.routing_reason,
            [_attempt_json(a) for a in state.attempts],
            state.ledger_updated,
            state.wallet_updated,
            [[s.value, ts] for s, ts in state.history],
            state.version,
            risk_json(state.risk),
        ]
    return json.dumps(v, separators=(",", ":")).encode()


def _attempt_json(a: pm.Attempt) -> list[Any]:
    return [
        a.n,
        a.psp,
        list(a.candidates),
        a.routing_reason,
        a.started_at,
        a.phase.value,
        a.token,
        a.outcome.value if a.outcome is not None else None,
        a.code,
        a.psp_reference,
        a.updated_at,
        a.version,
        a.checks,
        a.chain_from,
        a.review,
    ]


def _attempt_of(v: list[Any]) -> pm.Attempt:
    # States written before the poller and the janitor have 12 fields (no checks yet).
    n, psp, cands, why, started, phase, token, outcome, code, ref, updated, version = v[:12]
    checks, chain_from, review = v[12:15] if len(v) >= 15 else (0, 0, False)
    return pm.Attempt(
        n,
        psp,
        tuple(cands),
        why,
        started,
        pm.Phase(phase),
        token,
        None if outcome is None else pm.PspStatus(outcome),
        code,
        ref,
        updated,
        version,
        checks,
        chain_from,
        review,
    )


def decode_state(data: bytes) -> pm.State:
    v = json.loads(data)
    if v[0] == "k":
        return pm.KeyState(v[1], v[2], v[3], v[4], v[5])
    pid, user, ptype, frm, to, amount, cur, option = v[1]
    return pm.PaymentState(
        request=pm.PaymentRequest(
            pid, user, pm.PaymentType(ptype), frm, to, amount, cur, pm.PaymentOption(option)
        ),
        scope=v[2],
        idempotency_key=v[3],
        digest=v[4],
        created_at=v[5],
        status=pm.Status(v[6]),
        reason=v[7],
        candidates=tuple(v[8]),
        routing_reason=v[9],
        attempts=tuple(_attempt_of(a) for a in v[10]),
        ledger_updated=v[11],
        wallet_updated=v[12],
        history=tuple((pm.Status(s), ts) for s, ts in v[13]),
        version=v[14],
        risk=risk_of(v[15]) if len(v) > 15 else None,  # states written before the risk step
    )
