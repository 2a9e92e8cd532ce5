-- Payments (docs/payments.md): paystream.payment-events.v1 into four tables.
-- The sink inserts every PaymentStatusChanged into payment_status_changes and every
-- PaymentAttempt into payment_attempts (ReplacingMergeTree keyed by event id, like 0001's
-- tables). payment_orders and payment_requests are the latest snapshot per order / payment:
-- materialized views copy each status row into them, and ReplacingMergeTree(version) keeps
-- the highest version, so `FINAL` reads the latest whatever order the snapshots arrived in.

CREATE TABLE IF NOT EXISTS payment_status_changes
(
    event_id         String COMMENT 'deterministic id: <payment_id>/v<version>',
    version          UInt64 COMMENT '1, 2, 3... per payment, one per snapshot',
    payment_id       String COMMENT 'the client''s payment id (the Kafka key)',
    user_id          String COMMENT 'the user the payment is for',
    type             LowCardinality(String) COMMENT 'pay_in | pay_out',
    from_acct        String COMMENT 'pay-in: the external instrument; pay-out: the user''s account',
    to_acct          String COMMENT 'pay-in: the user''s account; pay-out: the external instrument',
    amount           Decimal(38, 6) COMMENT 'the amount the client asked for (positive)',
    currency         LowCardinality(String) COMMENT 'ISO 4217 code',
    payment_option   LowCardinality(String) COMMENT 'card | bank_account | paypal | apple_pay | google_pay',
    payment_order_id String COMMENT 'the payment''s one order: <payment_id>/1',
    status           LowCardinality(String) COMMENT 'received | authorizing | processing | pending | unknown | posting | reversing | succeeded | failed | rejected',
    reason           Nullable(String) COMMENT 'why it failed or was rejected (PSP code, psp_unavailable, no_eligible_psp, a ledger rejection)',
    psp              Nullable(String) COMMENT 'the PSP of the current attempt (null before the first)',
    psp_status       Nullable(String) COMMENT 'the current attempt''s outcome, else its phase',
    ledger_updated   Bool COMMENT 'the ledger booked the payment''s final money movement',
    wallet_updated   Bool COMMENT 'the user''s balance reflects the payment''s outcome',
    is_complete      Bool COMMENT 'the status is terminal (succeeded, failed, rejected)',
    ts               DateTime64(6, 'UTC') COMMENT 'when the change happened (log time of its cause)',
    kafka_partition  UInt32 COMMENT 'source partition of paystream.payment-events.v1',
    kafka_offset     UInt64 COMMENT 'source offset of paystream.payment-events.v1'
)
ENGINE = ReplacingMergeTree
ORDER BY (payment_id, version, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS payment_attempts
(
    event_id         String COMMENT 'deterministic id: <payment_order_id>/<attempt>/v<version>',
    payment_id       String,
    payment_order_id String,
    attempt          UInt32 COMMENT '1, 2... per order; a fallback to the next PSP is a new attempt',
    version          UInt64 COMMENT '1, 2, 3... per attempt, one per snapshot',
    psp              LowCardinality(String) COMMENT 'the PSP tried',
    candidates       Array(String) COMMENT 'the eligible PSPs in routing order when the attempt began',
    routing_reason   String COMMENT 'why this PSP: the routing rule, or the fallback and its cause',
    token            Nullable(String) COMMENT 'the PSP''s two-phase token, once created',
    phase            LowCardinality(String) COMMENT 'token_requested | token_created | token_failed | executing | answered',
    outcome          Nullable(String) COMMENT 'succeeded | declined | pending | unknown; null while running',
    code             Nullable(String) COMMENT 'the PSP''s code (decline or error)',
    psp_reference    Nullable(String) COMMENT 'the PSP''s id of the money movement',
    started_at       DateTime64(6, 'UTC') COMMENT 'when the attempt began',
    ts               DateTime64(6, 'UTC') COMMENT 'when this snapshot was made',
    kafka_partition  UInt32 COMMENT 'source partition of paystream.payment-events.v1',
    kafka_offset     UInt64 COMMENT 'source offset of paystream.payment-events.v1'
)
ENGINE = ReplacingMergeTree
ORDER BY (payment_order_id, attempt, version, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- The latest snapshot per order. One order per payment today, so the order's version is its
-- payment's. Rebuild (after a change to this definition):
--   INSERT INTO payment_orders SELECT <the view's columns> FROM payment_status_changes
CREATE TABLE IF NOT EXISTS payment_orders
(
    payment_order_id     String COMMENT '<payment_id>/1; the PSP''s merchant reference',
    payment_id           String,
    from_acct            String COMMENT 'pay-in: the external instrument; pay-out: the user''s account',
    to_acct              String COMMENT 'pay-in: the user''s account; pay-out: the external instrument',
    amount               Decimal(38, 6),
    currency             LowCardinality(String),
    payment_order_status LowCardinality(String) COMMENT 'the payment''s status (its one order has the same)',
    psp                  Nullable(String) COMMENT 'the PSP of the current attempt',
    psp_status           Nullable(String) COMMENT 'the current attempt''s outcome, else its phase',
    ledger_updated       Bool,
    wallet_updated       Bool,
    user_id              String,
    type                 LowCardinality(String) COMMENT 'pay_in | pay_out',
    payment_option       LowCardinality(String),
    reason               Nullable(String),
    version              UInt64 COMMENT 'the snapshot''s version: FINAL keeps the highest',
    ts                   DateTime64(6, 'UTC') COMMENT 'when the snapshot''s change happened'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY payment_order_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS payment_orders_mv TO payment_orders AS
SELECT payment_order_id, payment_id, from_acct, to_acct, amount, currency,
       status AS payment_order_status, psp, psp_status, ledger_updated, wallet_updated,
       user_id, type, payment_option, reason, version, ts
FROM payment_status_changes;

-- The latest snapshot per payment, as the seed's payment_requests.
CREATE TABLE IF NOT EXISTS payment_requests
(
    payment_id     String,
    user_id        String,
    payment_option LowCardinality(String),
    is_complete    Bool COMMENT 'the payment reached a terminal status',
    type           LowCardinality(String) COMMENT 'pay_in | pay_out',
    version        UInt64 COMMENT 'the snapshot''s version: FINAL keeps the highest',
    ts             DateTime64(6, 'UTC') COMMENT 'when the snapshot''s change happened'
)
ENGINE = ReplacingMergeTree(version)
ORDER BY payment_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS payment_requests_mv TO payment_requests AS
SELECT payment_id, user_id, payment_option, is_complete, type, version, ts
FROM payment_status_changes;
