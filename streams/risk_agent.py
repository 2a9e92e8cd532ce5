"""The risk engine as an agent of the exactly-once processor: records <-> the pure core.

Keys: users (payments to decide and how they ended, facts about their accounts), accounts
(the ledger's account events, to learn whose they are) and one context key per partition,
where a published version's activation lands. The processor hands every decision the state
of its partition's context (``streams.agent.ContextAgent``), so a decision uses exactly the
versions activated before it in its partition's log: on any worker, on every replay.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from streams.agent import TS_MAX, BadInput, Out
from streams.partitioner import partition_for
from streams.payments_fields import AMOUNT_CHARS_MAX, ID_CHARS_MAX, opt_str, req_str
from streams.risk import model as rm
from streams.risk.decide import Env, Scorer, decide, evolve_all
from streams.risk.defaults import default_rules
from streams.risk.errors import RuleFileError
from streams.risk.rules import RuleSet, load_rules
from streams.risk_library import Library

log = logging.getLogger(__name__)

CONTEXT_PREFIX = "@risk/context/"
_CACHED_VERSIONS_MAX = 8  # compiled rule sets and loaded models kept in memory
_LATENCIES_KEPT = 100_000  # the last decisions' latencies, for the logs and the benchmark
_LATENCY_LOG_EVERY_S = 60.0
_ACCOUNT_KINDS = frozenset({"opened", "blocked", "unblocked"})
_KINDS = frozenset(k.value for k in rm.ActivationKind)


@lru_cache(maxsize=1024)
def context_key(partition: int, partitions: int) -> str:
    """The first ``@risk/context/<i>`` that hashes to ``partition`` (the publisher and every
    risk process compute the same)."""
    i = 0
    while partition_for(f"{CONTEXT_PREFIX}{i}", partitions) != partition:
        i += 1
    return f"{CONTEXT_PREFIX}{i}"


class RiskAgent:
    """No local steps: a fact about an account always goes to the user's partition of
    ``paystream.risk-requests.v1`` as a record (the processor never hands it over in memory,
    since the agent's ``step_topic`` is one it never writes to), so that topic alone, read
    partition by partition, replays every decision (``paystream risk replay``)."""

    name = "risk"
    input_topics: tuple[str, ...] = ("risk_requests", "accounts")
    step_topic = "accounts"  # never written to: see the class docstring
    changelog_topic = "risk_state"

    def __init__(self, library: Library) -> None:
        self.library = library
        self._rules: OrderedDict[str, RuleSet] = OrderedDict()
        self._models: OrderedDict[str, Scorer] = OrderedDict()
        self.latencies_us: deque[float] = deque(maxlen=_LATENCIES_KEPT)
        self._logged_at = time.monotonic()

    def context_key(self, partition: int, partitions: int) -> str:
        return context_key(partition, partitions)

    # --- in ---

    def decode(self, topic: str, schema: str, record: dict[str, Any], ts_us: int) -> rm.Message:
        if topic == "accounts":
            if schema != "AccountEvent":
                raise BadInput("not_an_account_event", f"{schema} on the accounts topic")
            return rm.AccountSeen(
                req_str(record, "account"),
                req_str(record, "kind"),
                opt_str(record, "user"),
                _ts(record.get("ts"), ts_us),
            )
        if schema == "RiskRequest":
            return to_request(record, ts_us)
        if schema == "RiskAccountFact":
            return to_fact(record, ts_us)
        if schema == "RiskActivation":
            return to_activation(record, ts_us)
        raise BadInput("not_a_risk_message", f"{schema} is not a risk message")

    def decode_step(self, record: dict[str, Any]) -> rm.Message:
        raise BadInput("no_steps", "the risk agent takes no steps in memory")

    def decide(self, state: rm.KeyState | None, message: rm.Message) -> list[rm.Event]:
        return self.decide_in(state, message, None)

    def decide_in(
        self, state: rm.KeyState | None, message: rm.Message, context: rm.KeyState | None
    ) -> list[rm.Event]:
        ctx = context.context if context is not None else None
        if isinstance(message, rm.Activate):
            if not self._usable(message):
                return []  # the live version stays
            events = decide(state, message, Env(default_rules()))
            log.info(
                "%s %s (%s) active from here in %s", message.kind.value, message.version,
                message.sha256[:12], message.key,
            )  # fmt: skip
            return events
        env = self.env(ctx)
        if not isinstance(message, rm.RiskRequest):
            return decide(state, message, env)
        started = time.perf_counter_ns()
        events = decide(state, message, env)
        self._timed((time.perf_counter_ns() - started) / 1000)
        for e in events:
            if isinstance(e, rm.Decided) and e.decision.mode is rm.Mode.live:
                d = e.decision
                log.info(
                    "payment=%s user=%s risk %s score %s rules [%s] version %s model %s",
                    d.payment_id, d.user_id, d.action.value, d.score, ",".join(d.matched),
                    d.rules_version, d.model_score,
                )  # fmt: skip
        return events

    def env(self, ctx: rm.RiskContext | None) -> Env:
        if ctx is None:
            return Env(default_rules())
        live = self.rules(ctx.rules) if ctx.rules is not None else default_rules()
        shadow = self.rules(ctx.shadow) if ctx.shadow is not None else None
        scorer = self.model(ctx.model) if ctx.model is not None else None
        return Env(live, shadow, scorer)

    def rules(self, ref: rm.Ref) -> RuleSet:
        rs = self._rules.get(ref.sha256)
        if rs is None:
            rs = load_rules(self.library.get("rules", ref.sha256))
            self._rules[ref.sha256] = rs
            if len(self._rules) > _CACHED_VERSIONS_MAX:
                self._rules.popitem(last=False)
        return rs

    def model(self, ref: rm.Ref) -> Scorer:
        scorer = self._models.get(ref.sha256)
        if scorer is None:
            from streams.risk_scorer import LightGbmScorer

            scorer = LightGbmScorer(ref.version, self.library.get("model", ref.sha256))
            self._models[ref.sha256] = scorer
            if len(self._models) > _CACHED_VERSIONS_MAX:
                self._models.popitem(last=False)
        return scorer

    def _usable(self, a: rm.Activate) -> bool:
        """Content of an activation loads (it was checked when published; a record written
        around the publisher is checked here, and ignored if it does not)."""
        if a.kind in (rm.ActivationKind.shadow_off, rm.ActivationKind.model_off):
            return True
        ref = rm.Ref(a.version, a.sha256)
        try:
            if a.kind is rm.ActivationKind.model:
                self.model(ref)
            else:
                self.rules(ref)
        except (LookupError, RuleFileError, ValueError) as exc:
            log.error("activation of %s %s ignored: %s", a.kind.value, a.version, exc)
            return False
        return True

    def _timed(self, us: float) -> None:
        self.latencies_us.append(us)
        now = time.monotonic()
        if now - self._logged_at > _LATENCY_LOG_EVERY_S:
            self._logged_at = now
            got = sorted(self.latencies_us)
            log.info(
                "decision latency over the last %d: p50 %.0f us, p99 %.0f us, max %.0f us",
                len(got), got[len(got) // 2], got[int(len(got) * 0.99)], got[-1],
            )  # fmt: skip

    def evolve(self, state: rm.KeyState | None, events: list[rm.Event]) -> rm.KeyState | None:
        return evolve_all(state, events)

    def direct_step(self, event: rm.Event) -> rm.Message | None:
        return None  # facts go through the log (see the class docstring)

    # --- out ---

    def records(self, event: rm.Event, direct: bool) -> Iterable[Out]:
        match event:
            case rm.Decided():
                d = event.decision
                record = decision_record(d)
                yield Out("risk_decisions", "RiskDecision", d.payment_id, record)
                if d.mode is rm.Mode.live:
                    yield Out("payments", "RiskDecision", d.payment_id, record)
            case rm.FactForwarded():
                f = event.fact
                yield Out(
                    "risk_requests",
                    "RiskAccountFact",
                    f.user_id,
                    {"user_id": f.user_id, "account": f.account, "kind": f.kind, "ts": f.ts},
                )

    def encode_state(self, state: rm.KeyState) -> bytes:
        return encode_state(state)

    def decode_state(self, data: bytes) -> rm.KeyState:
        return decode_state(data)


# --- records in ---


def _ts(v: Any, fallback: int) -> int:
    if type(v) is not int or not 0 <= v <= TS_MAX:
        raise BadInput("bad_timestamp", f"ts {v!r} is out of range")
    return v or fallback


def to_request(r: dict[str, Any], log_ts: int) -> rm.RiskRequest | rm.PaymentEnded:
    kind = r.get("kind")
    ts = _ts(r.get("ts", 0), log_ts)
    if kind == "outcome":
        return rm.PaymentEnded(
            req_str(r, "user_id"), req_str(r, "payment_id"), req_str(r, "status"),
            opt_str(r, "reason"), ts,
        )  # fmt: skip
    if kind != "payment":
        raise BadInput("bad_field", f"risk request kind {str(kind)[:32]!r}")
    return rm.RiskRequest(
        user_id=req_str(r, "user_id"),
        payment_id=req_str(r, "payment_id"),
        type=req_str(r, "type"),
        amount=req_str(r, "amount", AMOUNT_CHARS_MAX),
        currency=req_str(r, "currency"),
        payment_option=req_str(r, "payment_option"),
        from_acct=req_str(r, "from_acct"),
        to_acct=req_str(r, "to_acct"),
        ts=ts,
    )


def to_fact(r: dict[str, Any], log_ts: int) -> rm.AccountFact:
    kind = req_str(r, "kind")
    if kind not in _ACCOUNT_KINDS:
        raise BadInput("bad_field", f"account fact kind {kind[:32]!r}")
    return rm.AccountFact(
        req_str(r, "user_id"), req_str(r, "account"), kind, _ts(r.get("ts", 0), log_ts)
    )


def to_activation(r: dict[str, Any], log_ts: int) -> rm.Activate:
    kind = req_str(r, "kind")
    if kind not in _KINDS:
        raise BadInput("bad_field", f"activation kind {kind[:32]!r}")
    key = req_str(r, "key", ID_CHARS_MAX)
    if not key.startswith(CONTEXT_PREFIX):
        raise BadInput("bad_field", f"activation key {key[:48]!r} is not a context key")
    return rm.Activate(
        key,
        rm.ActivationKind(kind),
        req_str(r, "version"),
        str(r.get("sha256") or ""),
        _ts(r.get("ts", 0), log_ts),
    )


# --- records out ---


def decision_record(d: rm.Decision) -> dict[str, Any]:
    return {
        "decision_id": d.decision_id,
        "payment_id": d.payment_id,
        "user_id": d.user_id,
        "type": d.payment_type,
        "amount": d.amount,
        "currency": d.currency,
        "mode": d.mode.value,
        "action": d.action.value,
        "score": d.score,
        "escalated": d.escalated,
        "rules_version": d.rules_version,
        "rules_sha256": d.rules_sha256,
        "matched": list(d.matched),
        "features": json.dumps(dict(d.features), separators=(",", ":"), sort_keys=True),
        "model_version": d.model_version,
        "model_score": d.model_score,
        "contributions": json.dumps([list(c) for c in d.contributions], separators=(",", ":")),
        "ts": d.ts,
    }


# --- state <-> changelog bytes (compact JSON) ---


def encode_state(s: rm.KeyState) -> bytes:
    u = s.user
    user = None
    if u is not None:
        user = [
            u.clock,
            [[e.t, e.payment_id, e.amount, e.currency, e.instrument] for e in u.requests],
            list(u.declines),
            [[a.account, a.opened_at, a.blocked] for a in u.accounts],
            u.saturated,
        ]
    link = None if s.link is None else [s.link.user_id, s.link.opened_at]
    ctx = None
    if s.context is not None:
        c = s.context
        ctx = [_ref(c.rules), _ref(c.shadow), _ref(c.model), c.activations, c.since]
    return json.dumps([user, link, ctx], separators=(",", ":")).encode()


def _ref(r: rm.Ref | None) -> list[str] | None:
    return None if r is None else [r.version, r.sha256]


def _ref_of(v: list[str] | None) -> rm.Ref | None:
    return None if v is None else rm.Ref(v[0], v[1])


def decode_state(data: bytes) -> rm.KeyState:
    user, link, ctx = json.loads(data)
    return rm.KeyState(
        user=None
        if user is None
        else rm.UserState(
            user[0],
            tuple(rm.Entry(*e) for e in user[1]),
            tuple(user[2]),
            tuple(rm.AccountInfo(*a) for a in user[3]),
            user[4],
        ),
        link=None if link is None else rm.AccountLink(link[0], link[1]),
        context=None
        if ctx is None
        else rm.RiskContext(_ref_of(ctx[0]), _ref_of(ctx[1]), _ref_of(ctx[2]), ctx[3], ctx[4]),
    )
