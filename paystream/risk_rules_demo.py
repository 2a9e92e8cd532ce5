"""The demo's rule file (``make run`` publishes it after the payments scenario; the model's
evaluation decides with it). docs/risk.md explains each rule."""

from __future__ import annotations

DEMO_RULES_TOML = """\
version = "demo-1"
description = "paystream's demo rules: the four planted fraud patterns"

[thresholds]
review = 60     # a total score of 60 or more goes to review at least
block = 120     # 120 or more is blocked

[model]
weight = 60     # the model adds 60 x model_score points

[[rule]]
name = "burst_block"
trigger = ["pay_in", "pay_out"]
when = "user_payments_1h >= 8"
action = "block"
score = 80

[[rule]]
name = "burst_review"
trigger = ["pay_in", "pay_out"]
when = "user_payments_1h >= 5"
action = "review"
score = 30

[[rule]]
name = "new_account_large"
trigger = ["pay_in", "pay_out"]
when = "account_age_s < 3600 and amount >= 2000"
action = "review"
score = 50

[[rule]]
name = "many_instruments"
trigger = ["pay_in", "pay_out"]
when = "user_distinct_instruments_24h >= 4"
action = "review"
score = 40

[[rule]]
name = "declines_then_try"
trigger = ["pay_in", "pay_out"]
when = "user_declines_24h >= 3"
action = "review"
score = 40

[[rule]]
name = "huge_amount"
trigger = ["pay_in", "pay_out"]
when = "amount >= 20000"
action = "block"
score = 100
"""
