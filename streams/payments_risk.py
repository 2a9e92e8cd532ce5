"""The payments' records to and from the risk engine and the review queue (docs/risk.md).

Part of the payments' wire mapping (``streams.payments_agent``): a live ``RiskDecision`` and a
risk item's ``ReviewEvent`` in, ``RiskRequest`` (a payment to decide, how it ended) and
``ReviewRequest`` (open an item) out, and the payment's risk summary in its changelog state.
"""

from __future__ import annotations

import json
from typing import Any

from streams.agent import BadInput, Out
from streams.payments import model as pm
from streams.payments_fields import AMOUNT_CHARS_MAX, ID_CHARS_MAX, opt_str, req_str, request_fields

_RISK_ACTIONS = frozenset({"allow", "review", "block"})
_RULES_MAX = 200  # as many as a rule file holds (streams.risk.limits.RULES_MAX)


def to_risk_decided(r: dict[str, Any], log_ts: int) -> pm.RiskDecided:
    if r.get("mode") != "live":
        raise BadInput("bad_field", "only live risk decisions go to the payments")
    action = req_str(r, "action")
    if action not in _RISK_ACTIONS:
        raise BadInput("bad_field", f"risk action {action[:32]!r}")
    matched = r.get("matched")
    if not isinstance(matched, list) or len(matched) > _RULES_MAX:
        raise BadInput("bad_field", "matched must be a list of rule names")
    evidence = {
        "score": r.get("score"),
        "rules_version": r.get("rules_version"),
        "model_version": r.get("model_version"),
        "model_score": r.get("model_score"),
        "features": _json_or_none(r.get("features")),
        "contributions": _json_or_none(r.get("contributions")),
    }
    return pm.RiskDecided(
        payment_id=req_str(r, "payment_id"),
        action=action,
        rules=tuple(str(m)[:ID_CHARS_MAX] for m in matched),
        score=req_str(r, "score", AMOUNT_CHARS_MAX),
        version=req_str(r, "rules_version"),
        evidence=json.dumps(evidence, separators=(",", ":"), sort_keys=True),
        ts=log_ts,
    )


def _json_or_none(text: Any) -> Any:
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def to_review_decided(r: dict[str, Any], log_ts: int) -> pm.ReviewDecided:
    event = r.get("event")
    if event not in ("approved", "declined") or r.get("kind") != pm.REVIEW_KIND:
        raise BadInput("bad_field", f"review event {str(event)[:32]!r} decides no payment")
    return pm.ReviewDecided(
        payment_id=req_str(r, "payment_id"),
        item_id=req_str(r, "item_id", ID_CHARS_MAX + 5),
        approved=event == "approved",
        reviewer=opt_str(r, "reviewer") or "",
        note=opt_str(r, "note") or "",
        ts=log_ts,
    )


def risk_request(
    kind: str, req: pm.PaymentRequest, status: str | None, reason: str | None, ts: int
) -> Out:
    return Out(
        "risk_requests",
        "RiskRequest",
        req.user_id,
        {"kind": kind, **request_fields(req), "status": status, "reason": reason, "ts": ts},
    )


def review_opened(e: pm.ReviewOpened) -> Out:
    return Out(
        "reviews",
        "ReviewRequest",
        e.item_id,
        {
            "request_id": f"{e.item_id}/open",
            "op": "open",
            "item_id": e.item_id,
            "kind": pm.REVIEW_KIND,
            "payment_id": e.payment.payment_id,
            "rules": list(e.rules),
            "category": None,
            "evidence": e.evidence,
            "actions": ["approve", "decline"],
            "decision": None,
            "note": None,
            "reviewer": None,
            "ts": e.ts,
        },
    )


def risk_json(r: pm.RiskSummary | None) -> list[Any] | None:
    if r is None:
        return None
    return [
        r.action,
        list(r.rules),
        r.score,
        r.version,
        r.decided_at,
        r.review_id,
        r.review_decision,
        r.reviewer,
        r.note,
        r.reviewed_at,
    ]


def risk_of(v: list[Any] | None) -> pm.RiskSummary | None:
    if v is None:
        return None
    action, rules, score, version, decided, review_id, decision, reviewer, note, at = v
    return pm.RiskSummary(
        action, tuple(rules), score, version, decided, review_id, decision, reviewer, note, at
    )
