"""Ledger invariants as explicit checks that raise (``assert`` would vanish under ``python -O``)."""

from __future__ import annotations

from .errors import InvariantViolation
from .model import AccountState, Posted, is_system_account

# No customer balance may exceed this (minor units): far below 2**63, so sums stay exact in
# every engine that stores them as 64-bit integers or Decimal(38, 6).
BALANCE_MAX = 10**18


def check_posted(entry: Posted) -> None:
    """Every entry is zero-sum, moves a positive amount, and names two different accounts."""
    if entry.debit.amount + entry.credit.amount != 0:
        raise InvariantViolation(f"entry {entry.entry_id!r} is not zero-sum")
    if entry.credit.amount <= 0:
        raise InvariantViolation(f"entry {entry.entry_id!r} moves a non-positive amount")
    if entry.debit.account == entry.credit.account:
        raise InvariantViolation(f"entry {entry.entry_id!r} debits and credits one account")
    for leg in (entry.debit, entry.credit):
        if is_system_account(leg.account) != (leg.balance_after is None):
            raise InvariantViolation(f"entry {entry.entry_id!r}: balance_after on the wrong leg")


def check_account(state: AccountState) -> None:
    """No customer balance below its floor (zero) or above its ceiling; holds never negative."""
    if state.balance < 0:
        raise InvariantViolation(f"account {state.account!r} balance below zero: {state.balance}")
    if state.balance > BALANCE_MAX:
        raise InvariantViolation(f"account {state.account!r} balance above its ceiling")
    if state.held < 0:
        raise InvariantViolation(f"account {state.account!r} holds below zero: {state.held}")
