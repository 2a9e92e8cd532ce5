"""Every limit of the risk core, in one place (docs/risk.md lists them).

Deciding depends on them, so they live with the core, as the ledger's own limits live in
``streams.ledger.model``; the processes' limits (batches, timeouts) are in ``base.config``.
"""

from __future__ import annotations

# --- rule files ---
RULE_FILE_BYTES_MAX = 256 * 1024  # a bigger file is refused before it is parsed
RULES_MAX = 200  # [[rule]] entries per file
RULE_NAME_CHARS_MAX = 64
WHEN_CHARS_MAX = 2_000  # one rule's expression
VERSION_CHARS_MAX = 64
SCORE_ABS_MAX = 10_000  # |score| of one rule, and of a threshold
MODEL_WEIGHT_MAX = 10_000  # points the model may add (weight x model_score, score in 0..1)
NOTE_CHARS_MAX = 1_000  # a rule's description

# --- velocity (exact windows over the user's log time) ---
HOUR_US = 3_600 * 1_000_000
DAY_US = 24 * HOUR_US
# Requests (and declines) kept per user: the last 24 hours, at most this many. Past it the
# oldest are dropped and the decision says so (``velocity_saturated``): counts are then
# lower bounds. A user past 10,000 payments a day is stopped by any velocity rule first.
USER_EVENTS_MAX = 10_000
# Accounts remembered per user (one account per user in the ledger; a few for safety).
USER_ACCOUNTS_MAX = 16

# --- decisions ---
TOP_CONTRIBUTIONS = 3  # the model's largest feature contributions kept on a decision
