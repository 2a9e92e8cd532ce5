-- Fast ingest: the sink hands ClickHouse the records' Avro bodies as they came from Kafka
-- (an Avro container with the writer schema plus kafka_partition and kafka_offset appended),
-- into Null tables; these materialized views convert and route the rows. Decoding happens in
-- ClickHouse, not in Python. A block that fails here is retried record by record in Python,
-- where a poison record goes to the dead-letter topic.

CREATE TABLE IF NOT EXISTS ledger_ingest
(
    event_id String, entry_id String, command_id String, transfer_id Nullable(String),
    account String, counterparty String, currency String, amount String,
    balance_after Nullable(String), account_seq Int64, kind String, ts Int64,
    kafka_partition Int32, kafka_offset Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS ledger_ingest_mv TO ledger_entries AS
SELECT event_id, entry_id, command_id, transfer_id, account, counterparty, currency,
       toDecimal128(amount, 6) AS amount, toDecimal128OrNull(balance_after, 6) AS balance_after,
       toUInt64(account_seq) AS account_seq, kind, fromUnixTimestamp64Micro(ts, 'UTC') AS ts,
       toUInt32(kafka_partition) AS kafka_partition, toUInt64(kafka_offset) AS kafka_offset
FROM ledger_ingest;

CREATE TABLE IF NOT EXISTS transfers_ingest
(
    event_id String, transfer_id String, command_id String, from_account String,
    to_account String, currency String, amount String, status String, reason Nullable(String),
    ts Int64, kafka_partition Int32, kafka_offset Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS transfers_ingest_mv TO transfers AS
SELECT event_id, transfer_id, command_id, from_account, to_account, currency,
       toDecimal128(amount, 6) AS amount, status, reason,
       fromUnixTimestamp64Micro(ts, 'UTC') AS ts,
       toUInt32(kafka_partition) AS kafka_partition, toUInt64(kafka_offset) AS kafka_offset
FROM transfers_ingest;

CREATE TABLE IF NOT EXISTS outcomes_ingest
(
    event_id String, command_id String, command_type String, account String, status String,
    reason Nullable(String), digest String, ts Int64, kafka_partition Int32, kafka_offset Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS outcomes_ingest_mv TO command_outcomes AS
SELECT event_id, command_id, command_type, account, status, reason, digest,
       fromUnixTimestamp64Micro(ts, 'UTC') AS ts,
       toUInt32(kafka_partition) AS kafka_partition, toUInt64(kafka_offset) AS kafka_offset
FROM outcomes_ingest;

CREATE TABLE IF NOT EXISTS account_events_ingest
(
    event_id String, command_id String, account String, kind String, user Nullable(String),
    currency Nullable(String), related Nullable(String), relation_kind Nullable(String),
    reason Nullable(String), ts Int64, kafka_partition Int32, kafka_offset Int64
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS account_events_ingest_mv TO account_events AS
SELECT event_id, command_id, account, kind, user, currency, related, relation_kind, reason,
       fromUnixTimestamp64Micro(ts, 'UTC') AS ts,
       toUInt32(kafka_partition) AS kafka_partition, toUInt64(kafka_offset) AS kafka_offset
FROM account_events_ingest;

CREATE MATERIALIZED VIEW IF NOT EXISTS relations_ingest_mv TO relations AS
SELECT event_id, account, assumeNotNull(related) AS related, relation_kind, kind AS action,
       fromUnixTimestamp64Micro(ts, 'UTC') AS ts
FROM account_events_ingest
WHERE kind IN ('related', 'unrelated');
