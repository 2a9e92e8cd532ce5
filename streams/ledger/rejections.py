"""Why the ledger refused a command: one complete enum, each value a sentence in snake case.

Values are a public contract: they appear in outcome events and in the warehouse.
"""

from __future__ import annotations

from enum import StrEnum


class Rejection(StrEnum):
    # Identity and idempotency.
    exists_with_different_payload = "exists_with_different_payload"
    command_id_invalid = "command_id_invalid"
    account_id_invalid = "account_id_invalid"
    user_id_invalid = "user_id_invalid"
    # Opening accounts.
    account_exists = "account_exists"
    user_has_account = "user_has_account"
    currency_not_supported = "currency_not_supported"
    # Finding and using accounts.
    account_not_found = "account_not_found"
    account_blocked = "account_blocked"
    debit_account_not_found = "debit_account_not_found"
    credit_account_not_found = "credit_account_not_found"
    debit_account_blocked = "debit_account_blocked"
    credit_account_blocked = "credit_account_blocked"
    accounts_must_be_different = "accounts_must_be_different"
    currency_mismatch = "currency_mismatch"
    # Amounts.
    amount_malformed = "amount_malformed"
    amount_must_be_positive = "amount_must_be_positive"
    amount_too_precise = "amount_too_precise"
    amount_too_large = "amount_too_large"
    insufficient_funds = "insufficient_funds"
    balance_would_overflow = "balance_would_overflow"
    # Blocking.
    account_already_blocked = "account_already_blocked"
    account_not_blocked = "account_not_blocked"
    # Relations.
    related_account_not_found = "related_account_not_found"
    relation_kind_invalid = "relation_kind_invalid"
    # Payments (docs/payments.md, "Money").
    payment_order_not_found = "payment_order_not_found"  # the account does not hold the order
    too_many_payments_in_flight = "too_many_payments_in_flight"
    psp_invalid = "psp_invalid"  # not a short slug: [a-z0-9_-]{1,32}
