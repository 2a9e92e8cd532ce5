"""The features of one payment: its fields, the user's exact velocity, its account (pure).

Windows are exact, over the user's log time: the time of each message for the user, never
going backwards (a message whose log time is earlier than one already seen for the user
counts at the latest time seen). A payment at time ``t`` counts every earlier request of the
user in ``(t - window, t]``, whatever became of it (blocked ones included), and not itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from .limits import DAY_US, HOUR_US
from .model import AccountInfo, Feature, RiskRequest, UserState

_US_PER_S = 1_000_000


def amount_of(text: str) -> Decimal:
    """A payment's amount as a Decimal (0 for one the API would not have let through)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return Decimal(0)
    return d if d.is_finite() else Decimal(0)


def features(
    user: UserState | None, req: RiskRequest, t: int, counterparty_related: bool = False
) -> dict[str, Any]:
    """Every symbol but ``model_score``, as the rules see them (numbers as Decimal)."""
    u = user or UserState()
    n_1h = n_24h = 0
    sum_1h = sum_24h = Decimal(0)
    instruments: set[str] = set()
    for e in u.requests:
        age = t - e.t
        if age >= DAY_US:
            continue
        n_24h += 1
        instruments.add(e.instrument)
        same_currency = e.currency == req.currency
        if same_currency:
            sum_24h += amount_of(e.amount)
        if age < HOUR_US:
            n_1h += 1
            if same_currency:
                sum_1h += amount_of(e.amount)
    declines = sum(1 for d in u.declines if t - d < DAY_US)
    account = _account(u, req.account)
    opened = account.opened_at if account is not None else None
    return {
        "type": req.type,
        "amount": amount_of(req.amount),
        "currency": req.currency,
        "payment_option": req.payment_option,
        "from_acct": req.from_acct,
        "to_acct": req.to_acct,
        "user_id": req.user_id,
        "user_payments_1h": Decimal(n_1h),
        "user_payments_24h": Decimal(n_24h),
        "user_amount_1h": sum_1h,
        "user_amount_24h": sum_24h,
        "user_declines_24h": Decimal(declines),
        "user_distinct_instruments_24h": Decimal(len(instruments)),
        # An account the engine never saw opened counts as brand new.
        "account_age_s": Decimal(max(0, t - opened) // _US_PER_S if opened is not None else 0),
        "account_blocked": account.blocked if account is not None else False,
        "counterparty_related": counterparty_related,
    }


def _account(u: UserState, account: str) -> AccountInfo | None:
    for a in u.accounts:
        if a.account == account:
            return a
    return None


def recorded(values: Mapping[str, Any]) -> tuple[tuple[str, Feature], ...]:
    """Feature values as a decision records them: sorted by name, numbers exact (an integer,
    or a decimal string), so the record is the same on every replay."""
    out: list[tuple[str, Feature]] = []
    for name in sorted(values):
        v = values[name]
        if isinstance(v, bool | str):
            out.append((name, v))
        elif isinstance(v, Decimal):
            out.append(
                (name, int(v) if v == v.to_integral_value() and "." not in str(v) else str(v))
            )
        elif isinstance(v, int):
            out.append((name, v))
        else:
            out.append((name, str(v)))
    return tuple(out)


# --- the model's view: a fixed vector of numbers (training and scoring share it) ---

MODEL_FEATURES: tuple[str, ...] = (
    "amount",
    "pay_out",
    "user_payments_1h",
    "user_payments_24h",
    "user_amount_1h",
    "user_amount_24h",
    "user_declines_24h",
    "user_distinct_instruments_24h",
    "account_age_s",
    "account_blocked",
    "option_card",
    "option_bank_account",
    "option_wallet",
)
_WALLETS = frozenset({"paypal", "apple_pay", "google_pay"})


def vector(values: Mapping[str, Any]) -> list[float]:
    """The model's inputs, in MODEL_FEATURES order, from features as ``features`` makes them
    or as a decision recorded them (strings of numbers included)."""

    def num(name: str) -> float:
        v = values.get(name, 0)
        if isinstance(v, bool):
            return 1.0 if v else 0.0
        try:
            return float(v)
        except (TypeError, ValueError):
            return 0.0

    option = str(values.get("payment_option", ""))
    return [
        num("amount"),
        1.0 if values.get("type") == "pay_out" else 0.0,
        num("user_payments_1h"),
        num("user_payments_24h"),
        num("user_amount_1h"),
        num("user_amount_24h"),
        num("user_declines_24h"),
        num("user_distinct_instruments_24h"),
        num("account_age_s"),
        num("account_blocked"),
        1.0 if option == "card" else 0.0,
        1.0 if option == "bank_account" else 0.0,
        1.0 if option in _WALLETS else 0.0,
    ]
