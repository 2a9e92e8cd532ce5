"""Reconciliation's vocabulary: settlement rows, our side of each, categories, resolutions.
Pure data."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

REQUIRED_COLUMNS: tuple[str, ...] = (
    "Psp Reference",
    "Merchant Reference",
    "Type",
    "Gross Currency",
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Net Currency",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
    "Creation Date",
    "Batch Number",
)
AMOUNT_COLUMNS: tuple[str, ...] = (
    "Gross Debit (GC)",
    "Gross Credit (GC)",
    "Net Debit (NC)",
    "Net Credit (NC)",
    "Commission (NC)",
)

# Row types (Adyen's "Type" column): money movements for an order, and per batch and currency.
SETTLED = "Settled"  # a pay-in the PSP collected
PAID_OUT = "PaidOut"  # a pay-out the PSP paid
FEE = "Fee"
MERCHANT_PAYOUT = "MerchantPayout"
MOVEMENTS = frozenset({SETTLED, PAID_OUT})


class Refusal(StrEnum):
    """Why a settlement file is refused (nothing of it is applied)."""

    not_csv = "the file is not CSV text"
    empty = "the file has no header line"
    column_missing = "a required column is missing"
    column_twice = "a required column appears twice"
    too_many_rows = "the file has more rows than reconciliation takes"
    cells_count = "the line does not have as many cells as the header"
    cell_too_long = "the cell is too long"
    bad_number = "the cell is not a non-negative decimal number"
    bad_currency = "the cell is not a three-letter currency code"
    bad_date = "the cell is not a date (YYYY-MM-DD HH:MM:SS)"
    bad_batch = "the cell is not a batch number"
    bad_type = "the type is not one of Settled, PaidOut, Fee, MerchantPayout"
    reference_missing = "a movement row lacks its reference"
    currencies_differ = "gross and net currencies differ"


class FileRefused(ValueError):
    """A settlement file refused at ``line`` (1 is the header), ``column``."""

    def __init__(self, refusal: Refusal, line: int, column: str | None, cell: str = "") -> None:
        self.refusal = refusal
        self.line = line
        self.column = column
        self.cell = cell
        where = f"line {line}" + (f", column {column!r}" if column else "")
        super().__init__(f"{where}: {refusal.value}" + (f" ({cell[:40]!r})" if cell else ""))


@dataclass(frozen=True, slots=True)
class SettlementRow:
    line: int  # in the file (1 is the header): the row's number for idempotency
    psp_reference: str
    merchant_reference: str
    type: str
    gross_currency: str
    gross_debit: Decimal
    gross_credit: Decimal
    net_currency: str
    net_debit: Decimal
    net_credit: Decimal
    commission: Decimal
    created: str  # YYYY-MM-DD HH:MM:SS
    batch: str

    @property
    def day(self) -> str:
        return self.created[:10]

    @property
    def gross(self) -> Decimal:
        return self.gross_credit + self.gross_debit

    @property
    def net(self) -> Decimal:
        return self.net_credit - self.net_debit


class Category(StrEnum):
    missing_in_settlement = "missing_in_settlement"
    missing_in_ledger = "missing_in_ledger"
    amount_mismatch = "amount_mismatch"
    currency_mismatch = "currency_mismatch"
    duplicate_in_settlement = "duplicate_in_settlement"
    status_mismatch = "status_mismatch"
    fee = "fee"
    batch_imbalance = "batch_imbalance"


class Resolution(StrEnum):
    auto_resolved = "auto_resolved"
    review = "review"


class Action(StrEnum):
    mark_succeeded = "mark_succeeded"  # the PSP's settlement answers an unknown order
    book_fee = "book_fee"  # fees to @fee/<psp>/<CUR>
    review = "review"  # a review item of kind recon


# What a reviewer may decide on a recon item (the review queue's decisions).
REVIEW_ACTIONS: tuple[str, ...] = ("resolve",)


@dataclass(frozen=True, slots=True)
class Order:
    """Our side of a movement: the payment order as the warehouse has it, and its posting."""

    payment_order_id: str
    payment_id: str
    type: str  # pay_in | pay_out
    status: str
    amount: Decimal
    currency: str
    psp: str | None
    posted: Decimal | None  # what the ledger posted with the PSP for it (None: nothing)
    attempt: int = 0  # the current attempt (for an answer to an unknown order)
    day: str = ""  # YYYY-MM-DD of its last change


@dataclass(frozen=True, slots=True)
class Movement:
    """A movement row of the file, with what matches it on our side."""

    row: SettlementRow
    order: Order | None
    # Rows with the same PSP reference and type seen before it (earlier files or lines).
    seen_before: int = 0


@dataclass(frozen=True, slots=True)
class FeeBatch:
    batch: str
    currency: str
    amount: Decimal  # commissions + Fee rows, what the PSP kept
    booked: Decimal | None  # what is booked already for this batch (None: nothing)


@dataclass(frozen=True, slots=True)
class Mismatch:
    category: Category
    payment_order_id: str | None
    psp_reference: str | None
    expected: str | None
    found: str | None
    resolution: Resolution
    action: Action
    evidence: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def subject(self) -> str:
        """What the mismatch is about, for its deterministic review item id."""
        return self.psp_reference or self.payment_order_id or "-"
