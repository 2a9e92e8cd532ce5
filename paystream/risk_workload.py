"""Payments with planted fraud, for the demo and the model's evaluation (docs/risk.md).

Legit users pay a few times, with one or two instruments, ordinary amounts, from accounts
opened long before. Four fraud patterns are planted, every payment of one labelled fraud:

* ``burst``: 8 to 14 small pay-ins within minutes (card testing).
* ``new_account_large``: an account opened minutes before a pay-in of 2,000 to 9,000.
* ``many_instruments``: 5 to 8 different cards within an hour.
* ``declines_then_success``: 3 to 5 declined cards, then one that works.

``scale_s`` compresses time: the demo plays a plan in about a minute of real time, the
evaluation spreads one over weeks of log time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DECLINED_CARD = "card_4000000000000002"
PATTERNS = ("burst", "new_account_large", "many_instruments", "declines_then_success")


@dataclass(frozen=True, slots=True)
class Planned:
    user: str
    payment_id: str
    type: str  # pay_in | pay_out
    instrument: str
    amount: str
    option: str
    at_s: float  # from the plan's start
    pattern: str  # legit, or a fraud pattern
    account_opened_s: float  # when the user's account was opened (from the plan's start)

    @property
    def fraud(self) -> bool:
        return self.pattern != "legit"


def card(rng: random.Random) -> str:
    """A card number the PSP simulator accepts (Luhn-valid, not a special test card)."""
    digits = [5] + [rng.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        total += (d * 2 - 9 if d * 2 > 9 else d * 2) if i % 2 == 0 else d
    check = (10 - total % 10) % 10
    return "card_" + "".join(map(str, digits)) + str(check)


def _amount(rng: random.Random, low: float, high: float) -> str:
    return f"{rng.uniform(low, high):.2f}"


def plan(
    seed: int, prefix: str, users: int, fraud_share: float, span_s: float, minute_s: float = 60.0
) -> list[Planned]:
    """Every planned payment, in time order. ``minute_s`` is how long a minute of the
    patterns lasts (60: real time; the demo compresses it)."""
    rng = random.Random(seed)
    out: list[Planned] = []
    for u in range(users):
        user = f"{prefix}-u{u}"
        pattern = PATTERNS[u % len(PATTERNS)] if rng.random() < fraud_share else "legit"
        opened, moves = _user(rng, pattern, span_s, minute_s)
        out += [
            Planned(user, f"{user}-{i}", ptype, instrument, amount, "card", at, pattern, opened)
            for i, (at, instrument, amount, ptype) in enumerate(moves)
        ]
    out.sort(key=lambda p: (p.at_s, p.payment_id))
    return out


Move = tuple[float, str, str, str]  # at_s, instrument, amount, type


def _user(
    rng: random.Random, pattern: str, span_s: float, minute_s: float
) -> tuple[float, list[Move]]:
    """When the user's account was opened, and the user's payments."""
    start = rng.uniform(0, span_s * 0.9)
    opened = -rng.uniform(30, 400) * 24 * 60 * minute_s  # a month or more before
    moves: list[Move] = []
    if pattern == "legit":
        cards = [card(rng) for _ in range(rng.choice((1, 1, 2)))]
        for _ in range(rng.randint(1, 4)):
            moves.append(
                (rng.uniform(0, span_s), rng.choice(cards), _amount(rng, 5, 300), "pay_in")
            )
        if rng.random() < 0.2:
            moves.append(
                (rng.uniform(0, span_s), rng.choice(cards), _amount(rng, 5, 50), "pay_out")
            )
    elif pattern == "burst":
        c = card(rng)
        for i in range(rng.randint(8, 14)):
            moves.append(
                (start + i * rng.uniform(0.2, 0.8) * minute_s, c, _amount(rng, 1, 20), "pay_in")
            )
    elif pattern == "new_account_large":
        opened = start - rng.uniform(1, 10) * minute_s
        moves.append((start, card(rng), _amount(rng, 2000, 9000), "pay_in"))
    elif pattern == "many_instruments":
        for i in range(rng.randint(5, 8)):
            moves.append(
                (
                    start + i * rng.uniform(2, 8) * minute_s,
                    card(rng),
                    _amount(rng, 20, 200),
                    "pay_in",
                )
            )
    else:
        for i in range(rng.randint(3, 5)):
            moves.append(
                (
                    start + i * rng.uniform(0.5, 2) * minute_s,
                    DECLINED_CARD,
                    _amount(rng, 50, 400),
                    "pay_in",
                )
            )
        moves.append((start + 8 * minute_s, card(rng), _amount(rng, 50, 400), "pay_in"))
    moves.sort()
    return opened, moves
