-- PSP resilience (issue 13, docs/psp-resilience.md): each attempt's polls and janitor checks,
-- and whether it was handed to review. Numbered after the issue, so migrations of other issues
-- written at the same time do not take its number.

ALTER TABLE payment_attempts
    ADD COLUMN IF NOT EXISTS checks UInt64 DEFAULT 0
    COMMENT 'polls (pending) and janitor checks (unknown) asked so far for this attempt' AFTER ts;

ALTER TABLE payment_attempts
    ADD COLUMN IF NOT EXISTS review Bool DEFAULT false
    COMMENT 'the poller or the janitor gave up: handed to the review queue (a recon item)' AFTER checks;
