"""The ledger's vocabulary: commands (imperative), saga steps, events (past tense) and state.

Pure data: no I/O, no clocks. Timestamps (``ts``, microseconds since the epoch) and payload
digests come in with each message, so deciding the same input twice gives the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .rejections import Rejection

WORLD = "@world/"  # money from and to outside the ledger, per currency
CLEARING = "@clearing/"  # money in flight between the two legs of a transfer, per currency
USER_KEY = "@user/"  # key of the user-reservation step (one account per user)
PSP = "@psp/"  # a PSP's balance with us, per PSP and currency (docs/payments.md, "Money")
PAYOUT = "@payout/"  # pay-outs held from accounts and not yet paid by a PSP, per currency


def world_account(currency: str) -> str:
    return WORLD + currency


def clearing_account(currency: str) -> str:
    return CLEARING + currency


def psp_account(psp: str, currency: str) -> str:
    return f"{PSP}{psp}/{currency}"


def payout_account(currency: str) -> str:
    return PAYOUT + currency


def user_key(user: str) -> str:
    return USER_KEY + user


def is_system_account(account: str) -> bool:
    return account.startswith("@")


# --- Commands: what upstream asks for. Each is keyed by ``key`` (the account that decides). ---


@dataclass(frozen=True, slots=True)
class OpenAccount:
    command_id: str
    account: str
    user: str
    currency: str
    ts: int
    digest: str
    command_type = "open_account"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class Deposit:
    command_id: str
    account: str
    amount: str
    ts: int
    digest: str
    command_type = "deposit"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class Withdraw:
    command_id: str
    account: str
    amount: str
    ts: int
    digest: str
    command_type = "withdraw"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class CreateTransfer:
    command_id: str
    from_account: str
    to_account: str
    amount: str
    ts: int
    digest: str
    command_type = "transfer"

    @property
    def key(self) -> str:
        return self.from_account


@dataclass(frozen=True, slots=True)
class BlockAccount:
    command_id: str
    account: str
    reason: str | None
    ts: int
    digest: str
    command_type = "block_account"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class UnblockAccount:
    command_id: str
    account: str
    reason: str | None
    ts: int
    digest: str
    command_type = "unblock_account"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class RelateAccounts:
    command_id: str
    account: str
    related: str
    kind: str
    ts: int
    digest: str
    command_type = "relate_accounts"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class UnrelateAccounts:
    command_id: str
    account: str
    related: str
    ts: int
    digest: str
    command_type = "unrelate_accounts"

    @property
    def key(self) -> str:
        return self.account


# --- Payment commands: sent only by the payments workers (docs/payments.md, "Money"). ---
# Their command ids are ``<payment_order_id>/<step>``; ``reply_to`` (a payment id) asks for
# the outcome on the payments topic as well.


@dataclass(frozen=True, slots=True)
class AuthorizePayin:
    """Check that a pay-in may be credited, and reserve its amount against overflow."""

    command_id: str
    account: str
    payment_order_id: str
    amount: str
    currency: str
    reply_to: str | None
    ts: int
    digest: str
    command_type = "authorize_payin"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class SettlePayin:
    """The PSP collected an authorized pay-in: post it from the PSP to the account."""

    command_id: str
    account: str
    payment_order_id: str
    psp: str
    reply_to: str | None
    ts: int
    digest: str
    command_type = "settle_payin"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class CancelPayin:
    """An authorized pay-in did not happen: drop it."""

    command_id: str
    account: str
    payment_order_id: str
    reason: str | None
    reply_to: str | None
    ts: int
    digest: str
    command_type = "cancel_payin"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class HoldPayout:
    """Hold a pay-out's amount: the account pays it into the pay-out account at once."""

    command_id: str
    account: str
    payment_order_id: str
    amount: str
    currency: str
    reply_to: str | None
    ts: int
    digest: str
    command_type = "hold_payout"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class PostPayout:
    """The PSP paid a held pay-out: the pay-out account pays the PSP's account."""

    command_id: str
    account: str
    payment_order_id: str
    psp: str
    reply_to: str | None
    ts: int
    digest: str
    command_type = "post_payout"

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class VoidPayout:
    """A held pay-out was not paid: the pay-out account pays the amount back."""

    command_id: str
    account: str
    payment_order_id: str
    reason: str | None
    reply_to: str | None
    ts: int
    digest: str
    command_type = "void_payout"

    @property
    def key(self) -> str:
        return self.account


PaymentCommand = AuthorizePayin | SettlePayin | CancelPayin | HoldPayout | PostPayout | VoidPayout

Command = (
    OpenAccount
    | Deposit
    | Withdraw
    | CreateTransfer
    | BlockAccount
    | UnblockAccount
    | RelateAccounts
    | UnrelateAccounts
    | PaymentCommand
)


def reply_to_of(cmd: Command) -> str | None:
    """Where a command's outcome goes besides the outcomes topic (payment commands only)."""
    return cmd.reply_to if isinstance(cmd, PaymentCommand) else None


# --- Saga steps: messages between agents, produced in the same transaction as the step before. ---


@dataclass(frozen=True, slots=True)
class TransferInfo:
    transfer_id: str  # the command id of the CreateTransfer
    command_id: str
    from_account: str
    to_account: str
    currency: str
    amount: int  # minor units, > 0
    ts: int
    digest: str


@dataclass(frozen=True, slots=True)
class ReserveUser:
    """Step 2 of opening: the user-keyed agent reserves user -> account."""

    command_id: str
    digest: str
    user: str
    account: str
    ts: int

    @property
    def key(self) -> str:
        return user_key(self.user)


@dataclass(frozen=True, slots=True)
class UserReservationResult:
    """Step 3 of opening, back at the account: the user was reserved for it, or was taken."""

    command_id: str
    digest: str
    user: str
    account: str
    reserved: bool
    ts: int

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class CreditTransfer:
    """Step 2 of a transfer, at the destination: post it or turn it back."""

    transfer: TransferInfo

    @property
    def key(self) -> str:
        return self.transfer.to_account


@dataclass(frozen=True, slots=True)
class SettleTransfer:
    """Step 3 of a posted transfer, at the source: release the hold."""

    transfer: TransferInfo

    @property
    def key(self) -> str:
        return self.transfer.from_account


@dataclass(frozen=True, slots=True)
class VoidTransfer:
    """Step 3 of a turned-back transfer, at the source: give the held money back."""

    transfer: TransferInfo
    reason: Rejection

    @property
    def key(self) -> str:
        return self.transfer.from_account


@dataclass(frozen=True, slots=True)
class ConfirmRelation:
    """Step 2 of relate/unrelate, at the related account: it must exist too."""

    command_id: str
    command_type: str
    digest: str
    account: str
    related: str
    kind: str | None  # None for unrelate
    ts: int

    @property
    def key(self) -> str:
        return self.related


# What may wait for an opening account: anything addressed to it but the reservation result.
Deferrable = Command | CreditTransfer | ConfirmRelation

SagaStep = (
    ReserveUser
    | UserReservationResult
    | CreditTransfer
    | SettleTransfer
    | VoidTransfer
    | ConfirmRelation
)
Message = Command | SagaStep


# --- State ---


class Status(StrEnum):
    absent = "absent"  # never opened (or opening refused); kept only to remember commands
    opening = "opening"  # waiting for the user reservation
    open = "open"
    blocked = "blocked"


# Limits of the core (documented in the README; base.config.Limits refers to them).
COMMAND_MEMORY_MAX = 32  # recent command ids remembered per account
ID_CHARS_MAX = 128  # account, user and command ids (longer ones are refused, not stored)
DEFERRED_MAX = 64  # messages kept while an account is opening
PAYMENTS_IN_FLIGHT_MAX = 64  # pay-ins, and apart from them pay-outs, in flight per account
PSP_CHARS_MAX = 32  # a PSP name: [a-z0-9_-], 1 to 32 characters

PENDING = "pending"
ACCEPTED = "accepted"


@dataclass(frozen=True, slots=True)
class Remembered:
    command_id: str
    digest: str
    outcome: str  # "pending", "accepted" or a Rejection value


@dataclass(frozen=True, slots=True)
class AccountState:
    account: str
    status: Status
    user: str = ""
    currency: str = ""
    balance: int = 0  # ledger balance in minor units; holds are already debited
    held: int = 0  # part of the debits still in flight (pending transfers)
    seq: int = 0  # number of ledger postings on this account
    recent: tuple[Remembered, ...] = ()  # newest last, bounded by COMMAND_MEMORY_MAX
    # Messages that arrived while the account was opening, replayed once it opens (or not).
    deferred: tuple[Deferrable, ...] = ()
    # Payment orders in flight, (order id, amount in minor units), oldest first, each bounded
    # by PAYMENTS_IN_FLIGHT_MAX: authorized pay-ins not yet settled or cancelled, and held
    # pay-outs (already debited) not yet posted or voided.
    payins: tuple[tuple[str, int], ...] = ()
    payouts: tuple[tuple[str, int], ...] = ()

    @property
    def exists(self) -> bool:
        return self.status in (Status.open, Status.blocked)

    def remembered(self, command_id: str) -> Remembered | None:
        for r in self.recent:
            if r.command_id == command_id:
                return r
        return None

    def payin(self, payment_order_id: str) -> int | None:
        """The amount of an authorized pay-in in flight, or None."""
        return _order_amount(self.payins, payment_order_id)

    def payout(self, payment_order_id: str) -> int | None:
        """The amount of a held pay-out in flight, or None."""
        return _order_amount(self.payouts, payment_order_id)

    # Every credit asks for both totals (decide's room check); most accounts have no payment
    # in flight, and an empty generator still cost 0.25 µs each (measured).
    @property
    def payins_total(self) -> int:
        return sum(amount for _, amount in self.payins) if self.payins else 0

    @property
    def payouts_total(self) -> int:
        return sum(amount for _, amount in self.payouts) if self.payouts else 0


def _order_amount(orders: tuple[tuple[str, int], ...], payment_order_id: str) -> int | None:
    for order, amount in orders:
        if order == payment_order_id:
            return amount
    return None


@dataclass(frozen=True, slots=True)
class UserState:
    user: str
    account: str  # the one account this user may have


State = AccountState | UserState


# --- Events ---


class PostingKind(StrEnum):
    deposit = "deposit"
    withdrawal = "withdrawal"
    transfer_hold = "transfer_hold"
    transfer_post = "transfer_post"
    transfer_void = "transfer_void"
    payin = "payin"  # @psp/<psp>/<CUR> -> account
    payout_hold = "payout_hold"  # account -> @payout/<CUR>
    payout_post = "payout_post"  # @payout/<CUR> -> @psp/<psp>/<CUR>
    payout_void = "payout_void"  # @payout/<CUR> -> account


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a journal entry. ``amount`` is signed from the account's view."""

    account: str
    amount: int
    balance_after: int | None  # None for system accounts (they have no single writer)
    account_seq: int  # 0 for system accounts


@dataclass(frozen=True, slots=True)
class Posted:
    """A journal entry: money leaves ``debit`` and arrives at ``credit``. Always zero-sum."""

    entry_id: str
    command_id: str
    transfer_id: str | None
    kind: PostingKind
    currency: str
    debit: Leg
    credit: Leg
    ts: int


@dataclass(frozen=True, slots=True)
class CommandAccepted:
    command_id: str
    command_type: str
    account: str  # the account the command was keyed by
    digest: str
    ts: int
    remember: bool  # True where the command's home account records it
    reply_to: str | None = None  # a payment id: the outcome also goes to the payments topic


@dataclass(frozen=True, slots=True)
class CommandRejected:
    command_id: str
    command_type: str
    account: str
    digest: str
    reason: Rejection
    ts: int
    remember: bool
    reply_to: str | None = None


@dataclass(frozen=True, slots=True)
class AccountOpeningStarted:
    command_id: str
    digest: str
    account: str
    user: str
    currency: str
    ts: int


@dataclass(frozen=True, slots=True)
class UserReserved:
    command_id: str
    digest: str
    user: str
    account: str
    ts: int


@dataclass(frozen=True, slots=True)
class UserReservationRefused:
    command_id: str
    digest: str
    user: str
    account: str
    holder: str
    ts: int


@dataclass(frozen=True, slots=True)
class AccountOpened:
    command_id: str
    account: str
    user: str
    currency: str
    ts: int


@dataclass(frozen=True, slots=True)
class AccountOpeningAbandoned:
    command_id: str
    account: str
    ts: int


@dataclass(frozen=True, slots=True)
class TransferHeld:
    transfer: TransferInfo


@dataclass(frozen=True, slots=True)
class TransferPosted:
    transfer: TransferInfo


@dataclass(frozen=True, slots=True)
class TransferTurnedBack:
    transfer: TransferInfo
    reason: Rejection


@dataclass(frozen=True, slots=True)
class TransferVoided:
    transfer: TransferInfo
    reason: Rejection


@dataclass(frozen=True, slots=True)
class TransferSettled:
    transfer: TransferInfo


@dataclass(frozen=True, slots=True)
class AccountBlocked:
    command_id: str
    account: str
    reason: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class AccountUnblocked:
    command_id: str
    account: str
    reason: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class RelationRequested:
    command_id: str
    command_type: str
    digest: str
    account: str
    related: str
    kind: str | None  # None: unrelate
    ts: int


@dataclass(frozen=True, slots=True)
class AccountsRelated:
    command_id: str
    account: str
    related: str
    kind: str
    ts: int


@dataclass(frozen=True, slots=True)
class AccountsUnrelated:
    command_id: str
    account: str
    related: str
    ts: int


# Payment orders at an account (docs/payments.md, "Money"). The postings are separate
# ``Posted`` events; these only change which orders the account holds.


@dataclass(frozen=True, slots=True)
class PayinAuthorized:
    command_id: str
    account: str
    payment_order_id: str
    amount: int  # minor units, > 0
    ts: int


@dataclass(frozen=True, slots=True)
class PayinSettled:
    command_id: str
    account: str
    payment_order_id: str
    psp: str
    amount: int
    ts: int


@dataclass(frozen=True, slots=True)
class PayinCancelled:
    command_id: str
    account: str
    payment_order_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class PayoutHeld:
    command_id: str
    account: str
    payment_order_id: str
    amount: int  # minor units, > 0
    ts: int


@dataclass(frozen=True, slots=True)
class PayoutPosted:
    command_id: str
    account: str
    payment_order_id: str
    psp: str
    amount: int
    ts: int


@dataclass(frozen=True, slots=True)
class PayoutVoided:
    command_id: str
    account: str
    payment_order_id: str
    amount: int
    ts: int


@dataclass(frozen=True, slots=True)
class MessageDeferred:
    """The account is still opening: keep the message and decide it once the opening ends."""

    message: Deferrable


Event = (
    MessageDeferred
    | Posted
    | CommandAccepted
    | CommandRejected
    | AccountOpeningStarted
    | UserReserved
    | UserReservationRefused
    | AccountOpened
    | AccountOpeningAbandoned
    | TransferHeld
    | TransferPosted
    | TransferTurnedBack
    | TransferVoided
    | TransferSettled
    | AccountBlocked
    | AccountUnblocked
    | RelationRequested
    | AccountsRelated
    | AccountsUnrelated
    | PayinAuthorized
    | PayinSettled
    | PayinCancelled
    | PayoutHeld
    | PayoutPosted
    | PayoutVoided
)
