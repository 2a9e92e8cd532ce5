"""The built-in rule set: what decides in a partition until a version is published there.

Conservative on purpose: it lets ordinary traffic through (the payments scenario's user, with
17 payments, ten instruments and seven failures in a minute, is allowed) and holds only the
extreme for a reviewer. ``paystream risk publish`` replaces it from a log position on.
"""

from __future__ import annotations

from .rules import RuleSet, load_rules

DEFAULT_RULES_TOML = """\
version = "builtin-1"
description = "paystream's built-in rules: only the extreme goes to review"

[[rule]]
name = "extreme_velocity"
trigger = ["pay_in", "pay_out"]
when = "user_payments_1h >= 200"
action = "review"
score = 50

[[rule]]
name = "blocked_account"
trigger = ["pay_in", "pay_out"]
when = "account_blocked"
action = "allow"
score = 10
description = "the ledger refuses it anyway; noted in the score"

[[rule]]
name = "huge_first_payment"
trigger = ["pay_in", "pay_out"]
when = "account_age_s < 60 and amount >= 10000000"
action = "review"
score = 50
"""

_DEFAULT: list[RuleSet] = []


def default_rules() -> RuleSet:
    if not _DEFAULT:
        _DEFAULT.append(load_rules(DEFAULT_RULES_TOML))
    return _DEFAULT[0]
