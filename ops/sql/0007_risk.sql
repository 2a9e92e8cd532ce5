-- Risk engine and review queue (docs/risk.md): four tables, ReplacingMergeTree keyed by
-- their deterministic ids like 0001's and 0004's (read them with FINAL).

CREATE TABLE IF NOT EXISTS risk_decisions
(
    decision_id     String COMMENT '<payment_id>/risk (live) or <payment_id>/risk/shadow/<sha12>',
    payment_id      String,
    user_id         String,
    type            LowCardinality(String) COMMENT 'pay_in | pay_out',
    amount          Decimal(38, 6),
    currency        LowCardinality(String),
    mode            LowCardinality(String) COMMENT 'live (the payment followed it) | shadow (recorded only)',
    action          LowCardinality(String) COMMENT 'allow | review | block',
    score           Decimal(38, 6) COMMENT 'sum of the matching rules'' scores + model_weight x model_score',
    escalated       Bool COMMENT 'a score threshold raised the action above the rules''',
    rules_version   String COMMENT 'the rule set''s version',
    rules_sha256    String COMMENT 'SHA-256 of the rule file',
    matched         Array(String) COMMENT 'the matching rules, in file order',
    features        String COMMENT 'JSON: every symbol''s value as the engine saw it',
    model_version   Nullable(String),
    model_score     Decimal(9, 6) COMMENT '0..1; 0 without a model',
    contributions   String COMMENT 'JSON: the model''s top features and their contributions (log-odds)',
    ts              DateTime64(6, 'UTC') COMMENT 'the user''s log time of the decision',
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (payment_id, decision_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS review_events
(
    event_id        String COMMENT '<item_id>/<n>, or <item_id>/refused/<request_id>',
    item_id         String COMMENT '<kind>:<subject>, e.g. risk:<payment_id>',
    kind            LowCardinality(String) COMMENT 'risk | recon',
    payment_id      Nullable(String),
    event           LowCardinality(String) COMMENT 'opened | approved | declined | resolved | refused',
    status          LowCardinality(String) COMMENT 'the item''s status after it',
    rules           Array(String),
    category        Nullable(String),
    evidence        String COMMENT 'JSON',
    actions         Array(String),
    decision        Nullable(String),
    note            Nullable(String) COMMENT 'why (the reviewer''s note; for refused, why it was refused)',
    reviewer        Nullable(String) COMMENT 'who',
    request_id      String,
    created_at      DateTime64(6, 'UTC') COMMENT 'when the item was opened',
    ts              DateTime64(6, 'UTC') COMMENT 'when this happened',
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (item_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS risk_labels
(
    label_id        String COMMENT '<source>/<payment_id>',
    payment_id      String,
    label           LowCardinality(String) COMMENT 'fraud | legit',
    source          LowCardinality(String) COMMENT 'demo | chargeback | analyst',
    note            String,
    ts              DateTime64(6, 'UTC'),
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (payment_id, label_id)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS risk_versions
(
    sha256          String,
    kind            LowCardinality(String) COMMENT 'rules | model',
    version         String,
    content         String COMMENT 'the rule file (models: empty; the bytes stay on the topic)',
    content_bytes   UInt64,
    metrics         String COMMENT 'JSON: a model''s training metrics',
    published_by    String,
    ts              DateTime64(6, 'UTC') COMMENT 'when it was published',
    kafka_partition UInt32,
    kafka_offset    UInt64
)
ENGINE = ReplacingMergeTree
ORDER BY (kind, sha256)
SETTINGS non_replicated_deduplication_window = 1000;
