"""Reconciliation's limits and defaults, in one place (docs/recon.md)."""

from __future__ import annotations

# An order missing from a settlement file is expected in a later one within this many days
# (T+2); only after it is it `missing_in_settlement`. `--lag-days N` overrides it.
LAG_DAYS_DEFAULT = 2
LAG_DAYS_MAX = 60
# A settlement file: at most this many data lines, and bytes per cell.
FILE_ROWS_MAX = 5_000_000
CELL_CHARS_MAX = 256
# Rows sent to the warehouse per insert.
INSERT_ROWS_BATCH = 100_000
# Mismatches opened as review items per run (the rest are reported, and opened next run).
REVIEW_ITEMS_PER_RUN_MAX = 10_000
# The hourly check: an order still in flight this long after its last change is stuck.
IN_FLIGHT_DEADLINE_S = 15 * 60
# The warehouse may trail the log by this long before a difference is more than lag.
WAREHOUSE_LAG_GRACE_S = 120
# `recon internal` waits this long for a trailing warehouse before it looks again.
WAREHOUSE_WAIT_S = 30.0
