-- Reconciliation (docs/recon.md): the PSPs' settlement files, row by row, and the fees booked
-- from them. `paystream recon settlement` writes them through the warehouse's writer front;
-- each table is keyed so that importing the same file again replaces, never adds.

CREATE TABLE IF NOT EXISTS settlement_rows
(
    file_id            String COMMENT '<psp>-<first 20 hex of the file''s SHA-256> (dryrun-<uuid> while a dry run lasts)',
    line               UInt32 COMMENT 'the row''s line in the file (1 is the header)',
    psp                LowCardinality(String) COMMENT 'the PSP whose file it is',
    psp_reference      String COMMENT 'Psp Reference: the PSP''s id of the movement',
    merchant_reference String COMMENT 'Merchant Reference: our payment order id',
    type               LowCardinality(String) COMMENT 'Settled | PaidOut | Fee | MerchantPayout',
    gross_currency     LowCardinality(String),
    gross_debit        Decimal(38, 6),
    gross_credit       Decimal(38, 6),
    net_currency       LowCardinality(String),
    net_debit          Decimal(38, 6),
    net_credit         Decimal(38, 6),
    commission         Decimal(38, 6),
    created            DateTime('UTC') COMMENT 'Creation Date',
    batch              String COMMENT 'Batch Number',
    imported_at        DateTime64(6, 'UTC') COMMENT 'when the file was imported'
)
ENGINE = ReplacingMergeTree
ORDER BY (file_id, line);

CREATE TABLE IF NOT EXISTS settlement_files
(
    file_id     String,
    psp         LowCardinality(String),
    name        String COMMENT 'the file''s name when imported',
    sha256      String,
    rows        UInt32,
    imported_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY file_id;

-- Fees the PSPs kept (commissions and Fee rows), booked per file, batch and currency to the
-- fee account @fee/<psp>/<CUR> against the PSP's balance @psp/<psp>/<CUR>.
CREATE TABLE IF NOT EXISTS fee_postings
(
    booking_id  String COMMENT 'deterministic: fee/<psp>/<batch>/<CUR>/<file_id>',
    psp         LowCardinality(String),
    batch       String,
    account     String COMMENT '@fee/<psp>/<CUR>',
    counterparty String COMMENT '@psp/<psp>/<CUR>',
    currency    LowCardinality(String),
    amount      Decimal(38, 6),
    file_id     String COMMENT 'the settlement file that booked it',
    ts          DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY booking_id;
