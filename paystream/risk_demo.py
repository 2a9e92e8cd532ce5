"""The risk part of ``paystream demo`` (after the payments scenario): the demo rule file is
published, users with the four planted fraud patterns pay beside legit ones through the API,
the review queue is worked (fraud declined, the rest approved), every payment is labelled,
and a model is trained on the warehouse's history and published if it is no worse."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from base.config import Settings, api_token
from paystream import queries
from paystream.api.client import PaymentsClient
from paystream.api.errors import ApiError
from paystream.risk_rules_demo import DEMO_RULES_TOML
from paystream.risk_workload import Planned, plan

USERS = 28
FRAUD_SHARE = 0.45
SPAN_S = 20.0  # the plan's length in real time
MINUTE_S = 0.4  # a minute of the patterns, compressed
DECIDED_TIMEOUT_S = 120.0
TERMINAL = ("succeeded", "failed", "rejected")


def run(settings: Settings, seed: int) -> dict[str, Any]:
    from paystream.risk_publish import publish
    from streams.risk.model import ActivationKind
    from streams.risk.rules import load_rules

    started = time.monotonic()
    rules = load_rules(DEMO_RULES_TOML)
    path = settings.home / "risk" / "demo-rules.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(DEMO_RULES_TOML)
    publish(settings, ActivationKind.rules, rules.version, rules.sha256, DEMO_RULES_TOML.encode())
    prefix = f"risk{seed}-{int(time.time())}"
    planned = plan(seed, prefix, USERS, FRAUD_SHARE, SPAN_S, MINUTE_S)
    _open_accounts(settings, sorted({p.user for p in planned}))
    by_user: dict[str, list[Planned]] = {}
    for p in planned:
        by_user.setdefault(p.user, []).append(p)
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ps: _pay_user(settings, ps, t0), by_user.values()))
    bodies = _decided(settings, [p.payment_id for p in planned])
    reviewed = _work_the_queue(settings, planned, bodies)
    from paystream.risk_labels import send_labels

    send_labels(
        settings,
        [(p.payment_id, "fraud" if p.fraud else "legit", "demo", p.pattern) for p in planned],
    )
    model = _train(settings)
    # Back to the built-in rules (the model stays, scoring every payment: they give it no
    # weight): to demo-1, the payments scenario's user, ten instruments and seven failures in
    # a minute, looks like fraud, and `paystream demo` runs that scenario again.
    from streams.risk.defaults import DEFAULT_RULES_TOML, default_rules

    builtin = default_rules()
    publish(
        settings, ActivationKind.rules, builtin.version, builtin.sha256, DEFAULT_RULES_TOML.encode()
    )
    return _summary(planned, bodies, reviewed, model, rules.version, time.monotonic() - started)


def _open_accounts(settings: Settings, users: list[str]) -> None:
    from producers.commands import parse_command
    from producers.producer import CommandProducer

    with CommandProducer(settings, client_id="paystream-risk-demo") as p:
        for u in users:
            p.send(parse_command({
                "type": "open_account", "command_id": f"{u}-open", "account": f"{u}-acct",
                "user": u, "currency": "USD",
            }))  # fmt: skip
        p.flush(60)
    queries.wait(settings, timeout_s=DECIDED_TIMEOUT_S)


def _pay_user(settings: Settings, payments: list[Planned], t0: float) -> None:
    with PaymentsClient.from_settings(settings) as c:
        for p in payments:
            delay = t0 + p.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            account = f"{p.user}-acct"
            frm, to = (p.instrument, account) if p.type == "pay_in" else (account, p.instrument)
            try:
                c.pay(
                    payment_id=p.payment_id, user_id=p.user, type=p.type, from_acct=frm,
                    to_acct=to, amount=p.amount, currency="USD", payment_option=p.option,
                    idempotency_key=f"{p.payment_id}-key",
                )  # fmt: skip
            except ApiError:
                continue
            if p.pattern == "declines_then_success":
                _until(c, p.payment_id, (*TERMINAL, "review"), 30)  # its decline is counted


def _until(
    c: PaymentsClient, payment_id: str, statuses: tuple[str, ...], timeout_s: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = c.get_payment(payment_id)
        except (ApiError, httpx.HTTPError):
            body = {}
        if body.get("status") in statuses:
            break
        time.sleep(0.2)
    return body


def _decided(settings: Settings, ids: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with PaymentsClient.from_settings(settings) as c:
        for pid in ids:
            out[pid] = _until(c, pid, (*TERMINAL, "review"), DECIDED_TIMEOUT_S)
    return out


def _work_the_queue(
    settings: Settings, planned: list[Planned], bodies: dict[str, dict[str, Any]]
) -> Counter[str]:
    """Decline the held fraud, approve the rest, as a reviewer would (the planted labels)."""
    from paystream.api.review_client import ReviewClient

    done: Counter[str] = Counter()
    with ReviewClient(f"http://127.0.0.1:{settings.api_port}", api_token(settings)) as rc:
        for p in planned:
            item = (bodies.get(p.payment_id, {}).get("risk") or {}).get("review_id")
            if not item or bodies[p.payment_id].get("status") != "review":
                continue
            decision = "decline" if p.fraud else "approve"
            try:
                rc.decide(item, decision, f"demo: {p.pattern}", "demo-reviewer")
                done[decision] += 1
            except ApiError:
                done["refused"] += 1
    return done


def _train(settings: Settings) -> dict[str, Any]:
    from paystream.risk_train import TrainingRefused, train_from_warehouse

    if not queries.wait(settings, timeout_s=DECIDED_TIMEOUT_S):
        return {"trained": False, "why": "the warehouse did not catch up in time"}
    try:
        r = train_from_warehouse(
            settings, 86400, settings.home / "risk" / "models", publish=True, force=False
        )
    except TrainingRefused as exc:
        return {"trained": False, "why": str(exc)}
    m = r["metrics"]
    return {
        "trained": True, "version": r["version"], "published": r["published"],
        "note": r["published_note"], "auc": round(m["auc"], 3), "rules_auc": round(m["rules_auc"], 3),
        "precision": round(m["precision"], 3), "recall": round(m["recall"], 3),
        "validation_rows": m["validation_rows"], "file": r["file"],
    }  # fmt: skip


def _summary(
    planned: list[Planned],
    bodies: dict[str, dict[str, Any]],
    reviewed: Counter[str],
    model: dict[str, Any],
    version: str,
    seconds: float,
) -> dict[str, Any]:
    patterns: dict[str, Counter[str]] = {}
    undecided = []
    example = None
    for p in planned:
        risk = bodies.get(p.payment_id, {}).get("risk")
        c = patterns.setdefault(p.pattern, Counter())
        c["payments"] += 1
        if risk is None:
            undecided.append(p.payment_id)
            continue
        c[risk["action"]] += 1
        if risk["action"] == "block" and example is None:
            example = {"payment_id": p.payment_id, "pattern": p.pattern, **risk}
    fraud = [p for p in planned if p.fraud]
    held = sum(
        1
        for p in fraud
        if (bodies.get(p.payment_id, {}).get("risk") or {}).get("action") in ("review", "block")
    )
    legit = [p for p in planned if not p.fraud]
    passed = sum(
        1
        for p in legit
        if (bodies.get(p.payment_id, {}).get("risk") or {}).get("action") == "allow"
    )
    return {
        "available": True, "rules_version": version, "payments": len(planned),
        "patterns": {k: dict(v) for k, v in sorted(patterns.items())},
        "fraud_held": held, "fraud": len(fraud), "legit_allowed": passed, "legit": len(legit),
        "reviews": dict(reviewed), "example": example, "model": model,
        "problems": [f"{pid}: no risk decision" for pid in undecided],
        "seconds": round(seconds, 1),
    }  # fmt: skip


def print_summary(s: dict[str, Any]) -> None:
    console = Console()
    if not s.get("available"):
        return
    t = Table(
        title=f"risk demo: rules {s['rules_version']}, planted fraud beside legit users",
        title_justify="left",
    )
    for col in ("pattern", "payments", "allow", "review", "block"):
        t.add_column(col, justify="left" if col == "pattern" else "right")
    for name, c in s["patterns"].items():
        t.add_row(name, *(str(c.get(k, 0)) for k in ("payments", "allow", "review", "block")))
    console.print(t)
    console.print(
        f"fraud held (review or block): {s['fraud_held']}/{s['fraud']}; legit allowed: "
        f"{s['legit_allowed']}/{s['legit']}; reviews: {s['reviews']}; {s['seconds']} s"
    )
    ex = s.get("example")
    if ex:
        rules = ", ".join(ex["rules"]) or "the score threshold"
        # markup=False: rich would take "[rule_name]" for a style tag and print nothing.
        console.print(
            f"  e.g. {ex['payment_id']} ({ex['pattern']}): {ex['action']} by {rules},"
            f" score {ex['score']}",
            markup=False,
        )
    m = s["model"]
    if m.get("trained"):
        console.print(
            f"model {m['version']}: AUC {m['auc']} (rules alone {m['rules_auc']}) on "
            f"{m['validation_rows']} later payments; precision {m['precision']}, recall "
            f"{m['recall']}; {m['note']}"
        )
    else:
        console.print(f"model: not trained ({m.get('why')})")
    for p in s["problems"]:
        console.print(f"[red]{p}[/red]")
    console.print(
        "Try: paystream review list | paystream risk status | paystream risk replay --verify"
    )
