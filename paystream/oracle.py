"""An independent, sequential model of the ledger rules, for checking the real system.

It applies JSON commands one at a time, with transfers atomic (no saga). For workloads
whose outcome does not depend on how sagas interleave (phased, or no overdraw races), the
real system must end with exactly these balances and outcomes.

It is written from the rules (README, ``streams/ledger/rejections.py``), not from the core's
code: its own currency table, amount parser and order of checks. It knows every currency the
core supports and can give every rejection reason; ``tests/unit/test_oracle.py`` holds both
to the core's enum and table, so neither can grow without the model. Not modelled: the core
remembers the last 32 command ids per account, the model all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation, localcontext

from schemas.catalogue import all_command_types

# ISO 4217 minor units of the currencies the ledger accepts (the core's table, copied on
# purpose: a test compares the two).
EXP: dict[str, int] = {
    **dict.fromkeys(
        ("USD", "EUR", "GBP", "CHF", "CAD", "AUD", "SEK", "NOK", "PLN", "INR", "CNY", "BRL", "RUB"),
        2,
    ),
    "JPY": 0,
    "KRW": 0,
    "ISK": 0,
    "KWD": 3,
    "BHD": 3,
    "JOD": 3,
}
ID_CHARS_MAX = 128  # longer ids are invalid
AMOUNT_CHARS_MAX = 40  # a longer amount string is malformed, whatever it says
AMOUNT_MINOR_MAX = 10**17  # one command moves at most this many minor units
BALANCE_MINOR_MAX = 10**18  # no customer balance above this
# Rejections the ledger does not remember: a repeat of such a command is rejected again.
NOT_REMEMBERED = frozenset(
    {"command_id_invalid", "account_id_invalid", "exists_with_different_payload"}
)

# Payment commands (docs/payments.md, "Money"): sent only by the payments workers.
PAYMENT_TYPES = frozenset(
    {
        "authorize_payin",
        "settle_payin",
        "cancel_payin",
        "hold_payout",
        "post_payout",
        "void_payout",
    }
)
PAYMENTS_IN_FLIGHT_MAX = 64  # per account, pay-ins and pay-outs apart
_PSP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


@dataclass
class Acct:
    user: str
    currency: str
    balance: int = 0
    blocked: bool = False


def valid_id(value: str) -> bool:
    """Account and user ids: 1..128 characters, and not a system account (``@...``)."""
    return 0 < len(value) <= ID_CHARS_MAX and not value.startswith("@")


@dataclass
class Oracle:
    accounts: dict[str, Acct] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)  # (key, command_id) -> body
    outcomes: dict[str, str] = field(default_factory=dict)  # command_id -> accepted | reason
    # Payment orders in flight, per account: {account: {order id: minor units}}.
    payins: dict[str, dict[str, int]] = field(default_factory=dict)
    payouts: dict[str, dict[str, int]] = field(default_factory=dict)
    # The system accounts payments post to ("@psp/<psp>/<CUR>", "@payout/<CUR>"): minor units.
    system: dict[str, int] = field(default_factory=dict)

    def amount(self, text: object, currency: str) -> int | str:
        """Minor units, or the rejection reason of a bad amount."""
        if not isinstance(text, str) or not text or len(text) > AMOUNT_CHARS_MAX:
            return "amount_malformed"
        whole, dot, frac = text.partition(".")
        digits = whole + frac
        if (
            not whole
            or (dot and not frac)
            or not (digits.isdigit() and digits.isascii())
            or "." in frac
        ):
            return "amount_malformed"
        with localcontext() as ctx:
            ctx.prec = 2 * AMOUNT_CHARS_MAX  # exact for any amount string we accept
            try:
                minor = Decimal(text).scaleb(EXP[currency])
            except InvalidOperation:
                return "amount_malformed"
        if minor != minor.to_integral_value():
            return "amount_too_precise"
        if minor <= 0:
            return "amount_must_be_positive"
        if minor > AMOUNT_MINOR_MAX:
            return "amount_too_large"
        return int(minor)

    def apply(self, c: dict[str, str]) -> str | None:
        """The command's outcome (``accepted`` or a reason); None for an exact duplicate."""
        t = c["type"]
        key = c[all_command_types()[t].key_field]
        body = repr(sorted(c.items()))
        command_id = c["command_id"]
        if not 0 < len(command_id) <= ID_CHARS_MAX:
            result = "command_id_invalid"
        elif not valid_id(key):
            result = "account_id_invalid"
        elif (key, command_id) in self.seen:
            if self.seen[(key, command_id)] == body:
                return None
            result = "exists_with_different_payload"
        else:
            result = self._decide(t, c)
        if result not in NOT_REMEMBERED:
            self.seen[(key, command_id)] = body
            self.outcomes[command_id] = result
        return result

    def _decide(self, t: str, c: dict[str, str]) -> str:
        a = self.accounts.get(c.get("account", c.get("from", "")))
        if t == "open_account":
            if a is not None:
                return "account_exists"
            if c["currency"] not in EXP:
                return "currency_not_supported"
            if not valid_id(c["user"]):
                return "user_id_invalid"
            if c["user"] in self.users:
                return "user_has_account"
            self.users[c["user"]] = c["account"]
            self.accounts[c["account"]] = Acct(c["user"], c["currency"])
            return "accepted"
        if t in ("deposit", "withdraw"):
            if a is None:
                return "account_not_found"
            if a.blocked:
                return "account_blocked"
            amt = self.amount(c["amount"], a.currency)
            if isinstance(amt, str):
                return amt
            if t == "withdraw" and a.balance < amt:
                return "insufficient_funds"
            if t == "deposit" and a.balance + amt > BALANCE_MINOR_MAX:
                return "balance_would_overflow"
            a.balance += amt if t == "deposit" else -amt
            return "accepted"
        if t == "transfer":
            return self._transfer(a, c)
        if t in ("block_account", "unblock_account"):
            if a is None:
                return "account_not_found"
            if t == "block_account":
                if a.blocked:
                    return "account_already_blocked"
                a.blocked = True
            else:
                if not a.blocked:
                    return "account_not_blocked"
                a.blocked = False
            return "accepted"
        if t in ("relate_accounts", "unrelate_accounts"):
            if a is None:
                return "account_not_found"
            if c["related"] == c["account"]:
                return "accounts_must_be_different"
            if not valid_id(c["related"]):
                return "related_account_not_found"
            if t == "relate_accounts" and not c["kind"].strip():
                return "relation_kind_invalid"
            if c["related"] not in self.accounts:
                return "related_account_not_found"
            return "accepted"
        if t in PAYMENT_TYPES:
            return self._payment(t, c, a)
        raise ValueError(t)

    # --- payments: the ledger side of pay-ins and pay-outs ---

    def _payment(self, t: str, c: dict[str, str], a: Acct | None) -> str:
        order = c["payment_order_id"]
        if not order or order.startswith("@") or len(order) > 128:
            return "command_id_invalid"
        name = c["account"]
        payins = self.payins.setdefault(name, {})
        payouts = self.payouts.setdefault(name, {})
        if t in ("authorize_payin", "hold_payout"):
            return self._admit(t, c, a, payins if t == "authorize_payin" else payouts)
        if t in ("settle_payin", "post_payout") and not (
            0 < len(c["psp"]) <= 32 and set(c["psp"]) <= _PSP_CHARS
        ):
            return "psp_invalid"
        orders = payins if t in ("settle_payin", "cancel_payin") else payouts
        if a is None or order not in orders:
            return "payment_order_not_found"
        amount = orders.pop(order)
        if t == "settle_payin":  # booked even on a blocked account
            a.balance += amount
            self._move(f"@psp/{c['psp']}/{a.currency}", -amount)
        elif t == "post_payout":
            self._move(f"@payout/{a.currency}", -amount)
            self._move(f"@psp/{c['psp']}/{a.currency}", amount)
        elif t == "void_payout":  # given back even on a blocked account
            self._move(f"@payout/{a.currency}", -amount)
            a.balance += amount
        return "accepted"

    def _admit(self, t: str, c: dict[str, str], a: Acct | None, orders: dict[str, int]) -> str:
        """authorize_payin and hold_payout."""
        if a is None:
            return "account_not_found"
        order = c["payment_order_id"]
        if order in orders:  # a redo: the same order again, or another payload
            same = (
                c["currency"] == a.currency
                and self.amount(c["amount"], a.currency) == orders[order]
            )
            return "accepted" if same else "exists_with_different_payload"
        if a.blocked:
            return "account_blocked"
        if c["currency"] != a.currency:
            return "currency_mismatch"
        amt = self.amount(c["amount"], a.currency)
        if isinstance(amt, str):
            return amt
        if t == "hold_payout" and a.balance < amt:
            return "insufficient_funds"
        if len(orders) >= PAYMENTS_IN_FLIGHT_MAX:
            return "too_many_payments_in_flight"
        orders[order] = amt
        if t == "hold_payout":  # the balance drops at once
            a.balance -= amt
            self._move(f"@payout/{a.currency}", amt)
        return "accepted"

    def _move(self, system_account: str, amount: int) -> None:
        self.system[system_account] = self.system.get(system_account, 0) + amount

    def _transfer(self, a: Acct | None, c: dict[str, str]) -> str:
        # The source decides first (it holds the money), then the destination takes it or
        # turns it back; a turned-back transfer is rejected with the destination's reason.
        if a is None:
            return "debit_account_not_found"
        if c["from"] == c["to"]:
            return "accounts_must_be_different"
        if a.blocked:
            return "debit_account_blocked"
        if not valid_id(c["to"]):
            return "credit_account_not_found"
        amt = self.amount(c["amount"], a.currency)
        if isinstance(amt, str):
            return amt
        if a.balance < amt:
            return "insufficient_funds"
        b = self.accounts.get(c["to"])
        if b is None:
            return "credit_account_not_found"
        if b.blocked:
            return "credit_account_blocked"
        if b.currency != a.currency:
            return "currency_mismatch"
        if b.balance + amt > BALANCE_MINOR_MAX:
            return "balance_would_overflow"
        a.balance -= amt
        b.balance += amt
        return "accepted"

    def balances(self) -> dict[str, dict[str, str]]:
        out = {}
        for name, a in self.accounts.items():
            exp = EXP[a.currency]
            whole, frac = divmod(a.balance, 10**exp)
            out[name] = {
                "account": name,
                "user": a.user,
                "currency": a.currency,
                "balance": f"{whole}.{frac:0{exp}d}" if exp else str(whole),
                "status": "blocked" if a.blocked else "open",
            }
        return out
