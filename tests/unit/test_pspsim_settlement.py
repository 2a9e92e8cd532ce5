"""Settlement rows: Adyen's columns, one row per movement, fees, and consistent batches."""

from __future__ import annotations

import csv
import io

from pspsim.settlement import COLUMNS, batch_imbalances, build_rows, net_minor, to_csv
from pspsim.store import ChargeRow

DAY = "2025-03-04"


def charge(n: int, direction: str, amount_minor: int, currency: str = "USD",
           commission_minor: int = 10, at: str = f"{DAY}T10:00:00.000Z") -> ChargeRow:  # fmt: skip
    return ChargeRow(
        id=n, psp="cardco", token=f"tok_{n}", merchant_reference=f"po-{n}",
        psp_reference=f"REF{n}", direction=direction, payment_option="card",
        amount_minor=amount_minor, currency=currency, commission_minor=commission_minor,
        charged_at=at,
    )  # fmt: skip


def test_the_exact_adyen_columns() -> None:
    assert COLUMNS == (
        "Company Account", "Merchant Account", "Psp Reference", "Merchant Reference",
        "Payment Method", "Creation Date", "TimeZone", "Type", "Modification Reference",
        "Gross Currency", "Gross Debit (GC)", "Gross Credit (GC)", "Exchange Rate",
        "Net Currency", "Net Debit (NC)", "Net Credit (NC)", "Commission (NC)", "Markup (NC)",
        "Scheme Fees (NC)", "Interchange (NC)", "Batch Number",
    )  # fmt: skip
    header = to_csv([]).splitlines()[0]
    assert header == ",".join(COLUMNS)


def test_pay_in_and_pay_out_rows() -> None:
    rows = build_rows("cardco", DAY, [charge(1, "pay_in", 1234, commission_minor=66),
                                      charge(2, "pay_out", 500, commission_minor=45)])  # fmt: skip
    settled, paid_out, fee, payout = rows
    assert settled["Type"] == "Settled"
    assert (settled["Gross Credit (GC)"], settled["Gross Debit (GC)"]) == ("12.34", "")
    assert (settled["Net Credit (NC)"], settled["Commission (NC)"]) == ("11.68", "0.66")
    assert settled["Merchant Reference"] == "po-1" and settled["Psp Reference"] == "REF1"
    assert settled["Creation Date"] == "2025-03-04 10:00:00" and settled["TimeZone"] == "UTC"
    assert settled["Batch Number"] == "20250304"
    assert settled["Markup (NC)"] == settled["Interchange (NC)"] == ""
    assert paid_out["Type"] == "PaidOut"
    assert (paid_out["Gross Debit (GC)"], paid_out["Net Debit (NC)"]) == ("5.00", "5.45")
    assert paid_out["Net Credit (NC)"] == ""
    assert fee["Type"] == "Fee" and fee["Net Debit (NC)"] == "1.00"
    # 11.68 - 5.45 - 1.00 = 5.23 owed to the merchant.
    assert payout["Type"] == "MerchantPayout" and payout["Net Debit (NC)"] == "5.23"
    assert set(batch_imbalances(rows).values()) == {0}


def test_a_negative_batch_is_collected_as_a_credit() -> None:
    rows = build_rows("cardco", DAY, [charge(1, "pay_out", 10_000)])
    payout = rows[-1]
    assert (payout["Net Credit (NC)"], payout["Net Debit (NC)"]) == ("101.10", "")
    assert batch_imbalances(rows) == {("20250304", "USD"): 0}


def test_one_batch_per_currency_with_its_own_fee_and_minor_units() -> None:
    rows = build_rows("cardco", DAY, [charge(1, "pay_in", 1000, "JPY", 59),
                                      charge(2, "pay_in", 1000, "USD", 59),
                                      charge(3, "pay_in", 2000, "JPY", 88)])  # fmt: skip
    assert [(r["Type"], r["Net Currency"]) for r in rows] == [
        ("Settled", "JPY"), ("Settled", "JPY"), ("Fee", "JPY"), ("MerchantPayout", "JPY"),
        ("Settled", "USD"), ("Fee", "USD"), ("MerchantPayout", "USD"),
    ]  # fmt: skip
    assert rows[0]["Gross Credit (GC)"] == "1000" and rows[2]["Net Debit (NC)"] == "100"
    assert rows[3]["Net Debit (NC)"] == str(1000 - 59 + 2000 - 88 - 100)
    assert set(batch_imbalances(rows).values()) == {0}


def test_other_days_and_other_psps_are_left_out_and_no_movement_means_no_row() -> None:
    other_day = charge(1, "pay_in", 100, at="2025-03-05T00:00:00.000Z")
    other_psp = ChargeRow(**{**charge(2, "pay_in", 100).__dict__, "psp": "walletco"})
    assert build_rows("cardco", DAY, [other_day, other_psp]) == []
    assert to_csv([]).count("\n") == 1


def test_csv_round_trip_keeps_every_cell() -> None:
    rows = build_rows("cardco", DAY, [charge(1, "pay_in", 1234)])
    back = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert back == rows
    assert sum(net_minor(r) for r in back) == 0
