"""decide(state, message, env) -> events, and evolve: the risk agent's rules, pure.

``env`` is what the partition's context resolves to (the wire mapping resolves it): the live
rule set, a shadow rule set, and the model's scorer. A decision is the most severe action of
the matching rules (block > review > allow); its score is the sum of their scores plus the
model's contribution (``model_weight`` x ``model_score``, ``model_score`` in 0..1); a score at
or above a threshold of the rule set escalates the action to review or block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Protocol

from .errors import InvariantViolation
from .features import MODEL_FEATURES, features, recorded, vector
from .limits import DAY_US, TOP_CONTRIBUTIONS, USER_ACCOUNTS_MAX, USER_EVENTS_MAX
from .model import (
    AccountFact,
    AccountInfo,
    AccountLink,
    AccountNoted,
    AccountSeen,
    Activate,
    ActivationKind,
    ContextChanged,
    Decided,
    Decision,
    DeclineCounted,
    Entry,
    Event,
    FactForwarded,
    KeyState,
    Linked,
    Message,
    Mode,
    PaymentEnded,
    Ref,
    RequestCounted,
    RiskContext,
    RiskRequest,
    UserState,
)
from .rules import Action, RuleSet, most_severe

SCORE_PLACES = Decimal("0.000001")


class Scorer(Protocol):
    """The model, as the core sees it: a vector in MODEL_FEATURES order -> a probability of
    fraud and each feature's contribution to it (log-odds), largest first."""

    version: str

    def score(self, values: list[float]) -> tuple[float, list[tuple[str, float]]]: ...


@dataclass(frozen=True, slots=True)
class Env:
    live: RuleSet
    shadow: RuleSet | None = None
    scorer: Scorer | None = None


def decide(state: KeyState | None, msg: Message, env: Env) -> list[Event]:
    match msg:
        case RiskRequest():
            return _request(state.user if state else None, msg, env)
        case PaymentEnded():
            if not msg.declined:
                return []
            user = state.user if state else None
            return [DeclineCounted(_now(user, msg.ts))]
        case AccountSeen():
            return _account_seen(state.link if state else None, msg)
        case AccountFact():
            return _account_fact(state.user if state else None, msg)
        case Activate():
            ctx = (state.context if state else None) or RiskContext()
            return [ContextChanged(_activated(ctx, msg), msg)]
    return []


def _now(user: UserState | None, ts: int) -> int:
    return max(user.clock if user else 0, ts)


def _request(user: UserState | None, req: RiskRequest, env: Env) -> list[Event]:
    if user is not None and any(e.payment_id == req.payment_id for e in user.requests):
        return []  # decided already (a redelivery): counted once, decided once
    t = _now(user, req.ts)
    values = features(user, req, t)
    if user is not None and user.saturated:
        values["velocity_saturated"] = True  # counts are lower bounds (USER_EVENTS_MAX)
    model_score, contributions = _score(env.scorer, values)
    values["model_score"] = Decimal(_plain(model_score))
    events: list[Event] = [
        Decided(
            _decision(env.live, values, model_score, contributions, env.scorer, req, Mode.live, t)
        )
    ]
    if env.shadow is not None:
        events.append(
            Decided(
                _decision(
                    env.shadow, values, model_score, contributions, env.scorer, req, Mode.shadow, t
                )
            )
        )
    events.append(
        RequestCounted(Entry(t, req.payment_id, req.amount, req.currency, req.instrument))
    )
    return events


def _score(
    scorer: Scorer | None, values: dict[str, Any]
) -> tuple[Decimal, tuple[tuple[str, str], ...]]:
    if scorer is None:
        return Decimal(0), ()
    p, contributions = scorer.score(vector(values))
    if not 0.0 <= p <= 1.0:
        raise InvariantViolation(f"model {scorer.version} scored {p}, outside 0..1")
    top = sorted(contributions, key=lambda c: (-abs(c[1]), c[0]))[:TOP_CONTRIBUTIONS]
    unknown = [n for n, _ in top if n not in MODEL_FEATURES]
    if unknown:
        raise InvariantViolation(f"model {scorer.version} names unknown features {unknown}")
    return (
        Decimal(repr(p)).quantize(SCORE_PLACES, rounding=ROUND_HALF_EVEN),
        tuple((n, f"{c:.6f}") for n, c in top),
    )


def evaluate(
    rs: RuleSet, values: dict[str, Any], model_score: Decimal
) -> tuple[Action, Decimal, bool, tuple[str, ...]]:
    """The action, the score, whether a threshold escalated the action, the matching rules."""
    matched = tuple(r for r in rs.for_type(str(values["type"])) if r.matches(values))
    action = most_severe([r.action for r in matched])
    score = Decimal(sum(r.score for r in matched)) + (rs.model_weight * model_score)
    by_score = Action.allow
    if rs.block_threshold is not None and score >= rs.block_threshold:
        by_score = Action.block
    elif rs.review_threshold is not None and score >= rs.review_threshold:
        by_score = Action.review
    escalated = by_score.severity > action.severity
    return (by_score if escalated else action), score, escalated, tuple(r.name for r in matched)


def _decision(
    rs: RuleSet,
    values: dict[str, Any],
    model_score: Decimal,
    contributions: tuple[tuple[str, str], ...],
    scorer: Scorer | None,
    req: RiskRequest,
    mode: Mode,
    t: int,
) -> Decision:
    action, score, escalated, matched = evaluate(rs, values, model_score)
    return Decision(
        payment_id=req.payment_id,
        user_id=req.user_id,
        payment_type=req.type,
        amount=req.amount,
        currency=req.currency,
        mode=mode,
        action=action,
        score=_plain(score),
        escalated=escalated,
        rules_version=rs.version,
        rules_sha256=rs.sha256,
        matched=matched,
        features=recorded(values),
        model_version=scorer.version if scorer is not None else None,
        model_score=_plain(model_score),
        contributions=contributions,
        ts=t,
    )


def _plain(d: Decimal) -> str:
    """A decimal without exponent or trailing zeros: 40, 77.5, 0.42."""
    return format(d.normalize(), "f") if d else "0"


def _account_seen(link: AccountLink | None, msg: AccountSeen) -> list[Event]:
    if msg.kind == "opened" and msg.user_id:
        if link is not None:
            return []  # a redelivered opening
        new = AccountLink(msg.user_id, msg.ts)
        return [Linked(new), FactForwarded(AccountFact(msg.user_id, msg.account, "opened", msg.ts))]
    if msg.kind in ("blocked", "unblocked") and link is not None:
        return [FactForwarded(AccountFact(link.user_id, msg.account, msg.kind, msg.ts))]
    return []  # relations, or an account the engine never saw opened


def _account_fact(user: UserState | None, fact: AccountFact) -> list[Event]:
    t = _now(user, fact.ts)
    current = next((a for a in (user.accounts if user else ()) if a.account == fact.account), None)
    if fact.kind == "opened":
        if current is not None and current.opened_at is not None:
            return []
        info = AccountInfo(fact.account, t, current.blocked if current else False)
    else:
        opened = current.opened_at if current else None
        info = AccountInfo(fact.account, opened, fact.kind == "blocked")
    return [AccountNoted(info, t)]


def _activated(ctx: RiskContext, a: Activate) -> RiskContext:
    ref = Ref(a.version, a.sha256)
    changed = {
        ActivationKind.rules: {"rules": ref, "shadow": None if ctx.shadow == ref else ctx.shadow},
        ActivationKind.shadow: {"shadow": ref},
        ActivationKind.shadow_off: {"shadow": None},
        ActivationKind.model: {"model": ref},
        ActivationKind.model_off: {"model": None},
    }[a.kind]
    return replace(ctx, **changed, activations=ctx.activations + 1, since=a.ts)  # type: ignore[arg-type]


# --- evolve ---


def evolve(state: KeyState | None, event: Event) -> KeyState | None:
    s = state or KeyState()
    match event:
        case Decided() | FactForwarded():
            return state
        case RequestCounted():
            u = s.user or UserState()
            e = event.entry
            if e.t < u.clock:
                raise InvariantViolation(f"user {e.payment_id}: time went back {u.clock} -> {e.t}")
            return replace(s, user=_trimmed(u, e.t, requests=(*u.requests, e)))
        case DeclineCounted():
            u = s.user or UserState()
            return replace(s, user=_trimmed(u, event.t, declines=(*u.declines, event.t)))
        case AccountNoted():
            u = s.user or UserState()
            others = tuple(a for a in u.accounts if a.account != event.info.account)
            accounts = (*others, event.info)[-USER_ACCOUNTS_MAX:]
            return replace(s, user=_trimmed(u, event.t, accounts=accounts))
        case Linked():
            return replace(s, link=event.link)
        case ContextChanged():
            return replace(s, context=event.context)
    raise InvariantViolation(f"no evolve rule for {type(event).__name__}")


def _trimmed(u: UserState, t: int, **changes: Any) -> UserState:
    """The user at time ``t``: what left the 24-hour window dropped, at most USER_EVENTS_MAX
    of each kind kept (the oldest go first, and the state says so)."""
    clock = max(u.clock, t)
    requests = tuple(e for e in changes.get("requests", u.requests) if clock - e.t < DAY_US)
    declines = tuple(d for d in changes.get("declines", u.declines) if clock - d < DAY_US)
    saturated = u.saturated
    if len(requests) > USER_EVENTS_MAX:
        requests, saturated = requests[-USER_EVENTS_MAX:], True
    if len(declines) > USER_EVENTS_MAX:
        declines, saturated = declines[-USER_EVENTS_MAX:], True
    return UserState(clock, requests, declines, changes.get("accounts", u.accounts), saturated)


def evolve_all(state: KeyState | None, events: list[Event]) -> KeyState | None:
    for event in events:
        state = evolve(state, event)
    return state
