-- Scheduled payments (docs/schedules.md): paystream.schedule-events.v1 into two tables.
-- scheduled_payments holds the latest snapshot of each schedule: the sink inserts every
-- ScheduleChanged, and ReplacingMergeTree(version) keeps the highest, so `FINAL` reads the
-- latest whatever order the snapshots arrived in. schedule_occurrences holds every
-- ScheduleOccurrence (submitted, refused, skipped, settled), keyed by event id like 0001's
-- tables: an occurrence's latest status is its row of the highest version.

CREATE TABLE IF NOT EXISTS scheduled_payments
(
    schedule_id      String COMMENT 'the schedule (the Kafka key)',
    version          UInt64 COMMENT '+1 per change: FINAL keeps the highest',
    event_id         String COMMENT '<schedule_id>/v<version>',
    user_id          String COMMENT 'the user the payments are for',
    type             LowCardinality(String) COMMENT 'pay_in | pay_out',
    from_acct        String COMMENT 'pay-in: the external instrument; pay-out: the user''s account',
    to_acct          String COMMENT 'pay-in: the user''s account; pay-out: the external instrument',
    amount           Decimal(38, 6) COMMENT 'each payment''s amount',
    currency         LowCardinality(String) COMMENT 'ISO 4217 code',
    payment_option   LowCardinality(String) COMMENT 'card | bank_account | paypal | apple_pay | google_pay',
    rrule            String COMMENT 'the RFC 5545 RRULE (normalised)',
    start_local      String COMMENT 'DTSTART: the wall time in timezone',
    timezone         LowCardinality(String) COMMENT 'IANA time zone of the rule',
    end_at           Nullable(DateTime64(6, 'UTC')) COMMENT 'no occurrence after it',
    status           LowCardinality(String) COMMENT 'active | paused | completed | deleted',
    status_reason    Nullable(String) COMMENT 'why it is paused, completed or deleted',
    next_run_at      Nullable(DateTime64(6, 'UTC')) COMMENT 'its next occurrence (null unless active)',
    last_run_at      Nullable(DateTime64(6, 'UTC')) COMMENT 'the latest occurrence handled',
    failures_in_row  UInt32 COMMENT 'failed payments in a row (N of them pause it)',
    created_at       DateTime64(6, 'UTC') COMMENT 'when it was created',
    ts               DateTime64(6, 'UTC') COMMENT 'when this snapshot''s change happened',
    kafka_partition  UInt32 COMMENT 'source partition of paystream.schedule-events.v1',
    kafka_offset     UInt64 COMMENT 'source offset of paystream.schedule-events.v1'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY schedule_id;

CREATE TABLE IF NOT EXISTS schedule_occurrences
(
    event_id         String COMMENT '<schedule_id>/<occurrence_at µs>/<status>[/backfill]',
    schedule_id      String,
    occurrence_at    DateTime64(6, 'UTC') COMMENT 'the occurrence T (a skipped run: its first)',
    payment_id       String COMMENT 'sched-<schedule_id>-<T as YYYYMMDDTHHMMSSZ> (never paid if skipped)',
    status           LowCardinality(String) COMMENT 'submitted | submit_failed | skipped | succeeded | failed | rejected',
    reason           Nullable(String) COMMENT 'why: outside_catchup_window, the API''s refusal, the payment''s failure',
    due_at           Nullable(DateTime64(6, 'UTC')) COMMENT 'when it was due: T plus the schedule''s jitter',
    submitted_at     Nullable(DateTime64(6, 'UTC')) COMMENT 'when the payment API admitted or refused it',
    backfill         Bool COMMENT 'submitted by an explicit backfill',
    skipped_through  Nullable(DateTime64(6, 'UTC')) COMMENT 'a skipped run: its last occurrence',
    skipped_count    UInt64 COMMENT 'occurrences this row stands for (a skipped run: more than 1)',
    version          UInt8 COMMENT '1: submitted, refused or skipped; 2: its payment settled',
    ts               DateTime64(6, 'UTC') COMMENT 'when it happened',
    kafka_partition  UInt32,
    kafka_offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (schedule_id, occurrence_at, event_id)
SETTINGS non_replicated_deduplication_window = 1000;
