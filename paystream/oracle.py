"""An independent, sequential model of the ledger rules, for checking the real system.

It applies JSON commands one at a time, with transfers atomic (no saga). For workloads
whose outcome does not depend on how sagas interleave (phased, or no overdraw races), the
real system must end with exactly these balances and outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from schemas.catalogue import all_command_types

EXP = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "KWD": 3, "CHF": 2}

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
        if not isinstance(text, str) or not text or text.count(".") > 1:
            return "amount_malformed"
        whole, _, frac = text.partition(".")
        if (
            not whole.isdigit()
            or not whole.isascii()
            or ("." in text and not (frac.isdigit() and frac.isascii()))
        ):
            return "amount_malformed"
        value = Decimal(text)
        minor = value * (10 ** EXP[currency])
        if minor != minor.to_integral_value():
            return "amount_too_precise"
        if minor <= 0:
            return "amount_must_be_positive"
        return int(minor)

    def apply(self, c: dict[str, str]) -> str | None:
        t = c["type"]
        key = c[all_command_types()[t].key_field]
        body = repr(sorted(c.items()))
        if (key, c["command_id"]) in self.seen:
            return (
                None
                if self.seen[(key, c["command_id"])] == body
                else "exists_with_different_payload"
            )
        result = self._decide(t, c)
        if result == "exists_with_different_payload":  # a payment order held for another payload
            return result
        self.seen[(key, c["command_id"])] = body
        self.outcomes[c["command_id"]] = result
        return result

    def _decide(self, t: str, c: dict[str, str]) -> str:
        a = self.accounts.get(c.get("account", c.get("from", "")))
        if t == "open_account":
            if a is not None:
                return "account_exists"
            if c["currency"] not in EXP:
                return "currency_not_supported"
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
            a.balance += amt if t == "deposit" else -amt
            return "accepted"
        if t == "transfer":
            if a is None:
                return "debit_account_not_found"
            if c["from"] == c["to"]:
                return "accounts_must_be_different"
            if a.blocked:
                return "debit_account_blocked"
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
            a.balance -= amt
            b.balance += amt
            return "accepted"
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
