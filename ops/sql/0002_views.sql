-- Contract views (checks outside the repo query them). Column names and meaning are stable.

-- Every customer account with its current balance. `balance` is the exact decimal string in
-- the currency's minor units ("100.00", JPY "100"); `balance_decimal` is for arithmetic.
CREATE OR REPLACE VIEW account_balances AS
SELECT
    a.account AS account,
    a.currency AS currency,
    multiIf(
        a.currency IN ('JPY', 'KRW', 'ISK'), toString(toInt128(b.balance)),
        a.currency IN ('KWD', 'BHD', 'JOD'), toDecimalString(b.balance, 3),
        toDecimalString(b.balance, 2)) AS balance,
    b.balance AS balance_decimal
FROM
(
    SELECT account, any(assumeNotNull(currency)) AS currency
    FROM account_events FINAL
    WHERE kind = 'opened'
    GROUP BY account
) AS a
LEFT JOIN
(
    SELECT account, sum(amount) AS balance
    FROM ledger_entries FINAL
    WHERE NOT startsWith(account, '@')
    GROUP BY account
) AS b USING (account);

-- Each account's whole history with running balances, in posting order.
CREATE OR REPLACE VIEW account_history AS
SELECT account, account_seq, ts, kind, amount, balance_after, counterparty, transfer_id,
       command_id, currency, event_id
FROM ledger_entries FINAL
WHERE NOT startsWith(account, '@');
