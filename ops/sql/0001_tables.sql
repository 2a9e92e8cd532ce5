-- paystream audit warehouse: one table per event stream, deduplicated by event id.
-- ReplacingMergeTree drops duplicate rows (a sink replay after a crash) at merge time; every
-- contract view reads with FINAL, so duplicates never show. Insert tokens drop a retried
-- identical batch at insert time too (non_replicated_deduplication_window).

CREATE TABLE IF NOT EXISTS ledger_entries
(
    event_id        String COMMENT 'deterministic id: <account>/<command id>/<step>/<d|c>',
    entry_id        String COMMENT 'the journal entry both sides share; its amounts sum to 0',
    command_id      String COMMENT 'the command that caused the posting',
    transfer_id     Nullable(String) COMMENT 'the transfer, for transfer postings',
    account         String COMMENT 'the account posted to; system accounts start with @',
    counterparty    String COMMENT 'the other side of the entry',
    currency        LowCardinality(String) COMMENT 'ISO 4217 code',
    amount          Decimal(38, 6) COMMENT 'signed: negative leaves the account, positive arrives',
    balance_after   Nullable(Decimal(38, 6)) COMMENT 'the account balance after this posting (null for system accounts)',
    account_seq     UInt64 COMMENT '1, 2, 3... per customer account, no gaps; 0 for system accounts',
    kind            LowCardinality(String) COMMENT 'deposit | withdrawal | transfer_hold | transfer_post | transfer_void | payin | payout_hold | payout_post | payout_void',
    ts              DateTime64(6, 'UTC') COMMENT 'when the command entered the log',
    kafka_partition UInt32 COMMENT 'source partition of paystream.ledger.v1',
    kafka_offset    UInt64 COMMENT 'source offset of paystream.ledger.v1'
)
ENGINE = ReplacingMergeTree
ORDER BY (account, account_seq, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS transfers
(
    event_id        String,
    transfer_id     String COMMENT 'the id of the transfer command',
    command_id      String,
    from_account    String,
    to_account      String,
    currency        LowCardinality(String),
    amount          Decimal(38, 6),
    status          LowCardinality(String) COMMENT 'pending | posted | voided',
    reason          Nullable(String) COMMENT 'why a voided transfer was turned back',
    ts              DateTime64(6, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (transfer_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS command_outcomes
(
    event_id        String,
    command_id      String,
    command_type    LowCardinality(String),
    account         String COMMENT 'the account the command was keyed by',
    status          LowCardinality(String) COMMENT 'accepted | rejected',
    reason          Nullable(String) COMMENT 'the rejection reason (see README)',
    digest          String COMMENT 'digest of the command payload',
    ts              DateTime64(6, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (command_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS account_events
(
    event_id        String,
    command_id      String,
    account         String,
    kind            LowCardinality(String) COMMENT 'opened | blocked | unblocked | related | unrelated',
    user            Nullable(String),
    currency        Nullable(String),
    related         Nullable(String),
    relation_kind   Nullable(String),
    reason          Nullable(String),
    ts              DateTime64(6, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (account, ts, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS relations
(
    event_id        String,
    account         String,
    related         String,
    relation_kind   Nullable(String) COMMENT 'family, friend... (null when removed)',
    action          LowCardinality(String) COMMENT 'related | unrelated',
    ts              DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (account, related, ts, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS alerts
(
    alert_id         String COMMENT 'deterministic: a replay creates no new alert',
    kind             LowCardinality(String) COMMENT 'related_direct | related_indirect | cycle',
    accounts         Array(String) COMMENT 'the path of accounts, in order',
    transfer_ids     Array(String),
    command_ids      Array(String),
    amounts          Array(Decimal(38, 6)),
    currency         LowCardinality(String),
    timestamps       Array(DateTime64(6, 'UTC')),
    related_accounts Array(String) COMMENT 'the related pair that made it relevant',
    relation_kinds   Array(String) COMMENT 'relation kinds on a shortest path between them',
    ts               DateTime64(6, 'UTC') COMMENT 'the closing transfer',
    kafka_partition  UInt32,
    kafka_offset     UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY alert_id
SETTINGS non_replicated_deduplication_window = 1000;
