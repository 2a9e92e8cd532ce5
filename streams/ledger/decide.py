"""decide(state, message) -> events: the ledger's rules, as a pure function.

The state is that of the message's key (an account, or a user for the reservation step).
Deciding uses nothing but its arguments, so a redo after an aborted transaction produces the
same events with the same ids.
"""

from __future__ import annotations

from .errors import InvariantViolation
from .evolve import evolve_all
from .invariants import BALANCE_MAX
from .model import (
    ACCEPTED,
    DEFERRED_MAX,
    ID_CHARS_MAX,
    PAYMENTS_IN_FLIGHT_MAX,
    PSP_CHARS_MAX,
    AccountBlocked,
    AccountOpened,
    AccountOpeningAbandoned,
    AccountOpeningStarted,
    AccountsRelated,
    AccountState,
    AccountsUnrelated,
    AccountUnblocked,
    AuthorizePayin,
    BlockAccount,
    CancelPayin,
    Command,
    CommandAccepted,
    CommandRejected,
    ConfirmRelation,
    CreateTransfer,
    CreditTransfer,
    Deferrable,
    Deposit,
    Event,
    HoldPayout,
    Leg,
    Message,
    MessageDeferred,
    OpenAccount,
    PayinAuthorized,
    PayinCancelled,
    PayinSettled,
    PaymentCommand,
    PayoutHeld,
    PayoutPosted,
    PayoutVoided,
    Posted,
    PostingKind,
    PostPayout,
    RelateAccounts,
    RelationRequested,
    ReserveUser,
    SettlePayin,
    SettleTransfer,
    State,
    Status,
    TransferHeld,
    TransferInfo,
    TransferPosted,
    TransferSettled,
    TransferTurnedBack,
    TransferVoided,
    UnblockAccount,
    UnrelateAccounts,
    UserReservationRefused,
    UserReservationResult,
    UserReserved,
    UserState,
    VoidPayout,
    VoidTransfer,
    Withdraw,
    clearing_account,
    is_system_account,
    payout_account,
    psp_account,
    reply_to_of,
    world_account,
)
from .money import CURRENCY_EXPONENTS, AmountError, parse_amount
from .rejections import Rejection


def decide(state: State | None, msg: Message) -> list[Event]:
    match msg:
        case ReserveUser():
            return _reserve_user(_user(state), msg)
        case UserReservationResult():
            return _reservation_result(_account(state), msg)
        case CreditTransfer():
            acct = _account(state)
            if _opening(acct):
                return _defer(
                    acct, msg, TransferTurnedBack(msg.transfer, Rejection.credit_account_not_found)
                )
            return _credit(acct, msg.transfer)
        case SettleTransfer():
            return [TransferSettled(msg.transfer)]
        case VoidTransfer():
            return _void(_account(state), msg.transfer, msg.reason)
        case ConfirmRelation():
            acct = _account(state)
            if _opening(acct):
                return _defer(acct, msg, None)
            return _confirm_relation(acct, msg)
        case _:
            return _command(_account(state), msg)


def _account(state: State | None) -> AccountState | None:
    if isinstance(state, UserState):  # keys are namespaced, so this is a routing bug
        raise InvariantViolation(f"account step routed to user state {state.user!r}")
    return state


def _user(state: State | None) -> UserState | None:
    if isinstance(state, AccountState):
        raise InvariantViolation(f"user step routed to account state {state.account!r}")
    return state


def _opening(state: AccountState | None) -> bool:
    return state is not None and state.status is Status.opening


def _defer(state: AccountState | None, msg: Deferrable, overflow: Event | None) -> list[Event]:
    """Keep a message for an opening account; past DEFERRED_MAX it is decided as if absent."""
    if state is not None and len(state.deferred) < DEFERRED_MAX:
        return [MessageDeferred(msg)]
    if overflow is not None:
        return [overflow]
    if isinstance(msg, ConfirmRelation):
        return _confirm_relation(None, msg)
    if isinstance(msg, CreditTransfer):
        return _credit(None, msg.transfer)
    return _command(None, msg)


def _valid_id(value: str) -> bool:
    return 0 < len(value) <= ID_CHARS_MAX and not is_system_account(value)


# --- Commands, at the account they are keyed by ---


def _command(state: AccountState | None, cmd: Command) -> list[Event]:
    if not 0 < len(cmd.command_id) <= ID_CHARS_MAX:
        return [_reject(cmd, Rejection.command_id_invalid, remember=False)]
    if not _valid_id(cmd.key):
        return [_reject(cmd, Rejection.account_id_invalid, remember=False)]
    if state is not None:
        seen = state.remembered(cmd.command_id)
        if seen is not None:
            if seen.digest == cmd.digest:
                return []  # a duplicate: the original outcome stands
            return [_reject(cmd, Rejection.exists_with_different_payload, remember=False)]
    if isinstance(cmd, PaymentCommand) and not _valid_id(cmd.payment_order_id):
        # The order id is part of the command's identity (``<payment_order_id>/<step>``).
        return [_reject(cmd, Rejection.command_id_invalid)]
    if _opening(state) and not isinstance(cmd, OpenAccount):
        return _defer(state, cmd, None)
    match cmd:
        case OpenAccount():
            return _open(state, cmd)
        case Deposit():
            return _deposit(state, cmd)
        case Withdraw():
            return _withdraw(state, cmd)
        case CreateTransfer():
            return _transfer(state, cmd)
        case BlockAccount():
            return _block(state, cmd)
        case UnblockAccount():
            return _unblock(state, cmd)
        case RelateAccounts() | UnrelateAccounts():
            return _relate(state, cmd)
        case _:
            return _payment(state, cmd)


def _reject(cmd: Command, reason: Rejection, *, remember: bool = True) -> CommandRejected:
    return CommandRejected(
        cmd.command_id,
        cmd.command_type,
        cmd.key,
        cmd.digest,
        reason,
        cmd.ts,
        remember,
        reply_to_of(cmd),
    )


def _accept(cmd: Command) -> CommandAccepted:
    return CommandAccepted(
        cmd.command_id, cmd.command_type, cmd.key, cmd.digest, cmd.ts, True, reply_to_of(cmd)
    )


def _open(state: AccountState | None, cmd: OpenAccount) -> list[Event]:
    if state is not None and state.status is not Status.absent:
        return [_reject(cmd, Rejection.account_exists)]
    if cmd.currency not in CURRENCY_EXPONENTS:
        return [_reject(cmd, Rejection.currency_not_supported)]
    if not _valid_id(cmd.user):
        return [_reject(cmd, Rejection.user_id_invalid)]
    return [
        AccountOpeningStarted(
            cmd.command_id, cmd.digest, cmd.account, cmd.user, cmd.currency, cmd.ts
        )
    ]


def _amount(
    cmd: Deposit | Withdraw | CreateTransfer | AuthorizePayin | HoldPayout, currency: str
) -> int | Rejection:
    try:
        return parse_amount(cmd.amount, currency)
    except AmountError as exc:
        return exc.reason


def _entry_id(cmd_key: str, command_id: str, kind: PostingKind) -> str:
    # Command ids are deduplicated per account, so the account is part of every event id.
    return f"{cmd_key}/{command_id}/{kind.value}"


def _room(state: AccountState) -> int:
    """How much more may be credited to the account. Money in flight may still arrive or come
    back without any check (a settled pay-in, a voided pay-out or transfer: it already moved),
    so every credit that can be refused leaves room for it."""
    return BALANCE_MAX - state.balance - state.held - state.payins_total - state.payouts_total


def _deposit(state: AccountState | None, cmd: Deposit) -> list[Event]:
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    if state.status is Status.blocked:
        return [_reject(cmd, Rejection.account_blocked)]
    amount = _amount(cmd, state.currency)
    if isinstance(amount, Rejection):
        return [_reject(cmd, amount)]
    if amount > _room(state):
        return [_reject(cmd, Rejection.balance_would_overflow)]
    entry = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.deposit),
        cmd.command_id,
        None,
        PostingKind.deposit,
        state.currency,
        Leg(world_account(state.currency), -amount, None, 0),
        Leg(state.account, amount, state.balance + amount, state.seq + 1),
        cmd.ts,
    )
    return [entry, _accept(cmd)]


def _withdraw(state: AccountState | None, cmd: Withdraw) -> list[Event]:
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    if state.status is Status.blocked:
        return [_reject(cmd, Rejection.account_blocked)]
    amount = _amount(cmd, state.currency)
    if isinstance(amount, Rejection):
        return [_reject(cmd, amount)]
    if state.balance < amount:
        return [_reject(cmd, Rejection.insufficient_funds)]
    entry = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.withdrawal),
        cmd.command_id,
        None,
        PostingKind.withdrawal,
        state.currency,
        Leg(state.account, -amount, state.balance - amount, state.seq + 1),
        Leg(world_account(state.currency), amount, None, 0),
        cmd.ts,
    )
    return [entry, _accept(cmd)]


def _transfer(state: AccountState | None, cmd: CreateTransfer) -> list[Event]:
    """Step 1, at the source: hold the money in clearing and ask the destination to credit."""
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.debit_account_not_found)]
    if cmd.to_account == cmd.from_account:
        return [_reject(cmd, Rejection.accounts_must_be_different)]
    if state.status is Status.blocked:
        return [_reject(cmd, Rejection.debit_account_blocked)]
    if not _valid_id(cmd.to_account):
        return [_reject(cmd, Rejection.credit_account_not_found)]
    amount = _amount(cmd, state.currency)
    if isinstance(amount, Rejection):
        return [_reject(cmd, amount)]
    if state.balance < amount:
        return [_reject(cmd, Rejection.insufficient_funds)]
    transfer = TransferInfo(
        cmd.command_id,
        cmd.command_id,
        cmd.from_account,
        cmd.to_account,
        state.currency,
        amount,
        cmd.ts,
        cmd.digest,
    )
    hold = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.transfer_hold),
        cmd.command_id,
        transfer.transfer_id,
        PostingKind.transfer_hold,
        state.currency,
        Leg(state.account, -amount, state.balance - amount, state.seq + 1),
        Leg(clearing_account(state.currency), amount, None, 0),
        cmd.ts,
    )
    return [hold, TransferHeld(transfer)]


def _credit(state: AccountState | None, t: TransferInfo) -> list[Event]:
    """Step 2, at the destination: post from clearing, or turn the transfer back."""
    reason: Rejection | None = None
    if state is None or not state.exists:
        reason = Rejection.credit_account_not_found
    elif state.status is Status.blocked:
        reason = Rejection.credit_account_blocked
    elif state.currency != t.currency:
        reason = Rejection.currency_mismatch
    elif t.amount > _room(state):
        reason = Rejection.balance_would_overflow
    if reason is not None or state is None:
        return [TransferTurnedBack(t, reason or Rejection.credit_account_not_found)]
    post = _from_clearing(state, t, PostingKind.transfer_post)
    accepted = CommandAccepted(
        t.command_id, CreateTransfer.command_type, t.from_account, t.digest, t.ts, False
    )
    return [post, TransferPosted(t), accepted]


def _from_clearing(state: AccountState, t: TransferInfo, kind: PostingKind) -> Posted:
    """Clearing pays a transfer's amount to ``state``: the destination, or back to the source."""
    return Posted(
        _entry_id(t.from_account, t.command_id, kind),
        t.command_id,
        t.transfer_id,
        kind,
        t.currency,
        Leg(clearing_account(t.currency), -t.amount, None, 0),
        Leg(state.account, t.amount, state.balance + t.amount, state.seq + 1),
        t.ts,
    )


def _void(state: AccountState | None, t: TransferInfo, reason: Rejection) -> list[Event]:
    """Step 3 of a turned-back transfer, at the source: clearing pays the money back."""
    if state is None or state.held < t.amount:
        raise InvariantViolation(f"void of {t.transfer_id!r} without its hold at the source")
    back = _from_clearing(state, t, PostingKind.transfer_void)
    rejected = CommandRejected(
        t.command_id, CreateTransfer.command_type, t.from_account, t.digest, reason, t.ts, True
    )
    return [back, TransferVoided(t, reason), rejected]


def _block(state: AccountState | None, cmd: BlockAccount) -> list[Event]:
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    if state.status is Status.blocked:
        return [_reject(cmd, Rejection.account_already_blocked)]
    return [AccountBlocked(cmd.command_id, cmd.account, cmd.reason, cmd.ts), _accept(cmd)]


def _unblock(state: AccountState | None, cmd: UnblockAccount) -> list[Event]:
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    if state.status is not Status.blocked:
        return [_reject(cmd, Rejection.account_not_blocked)]
    return [AccountUnblocked(cmd.command_id, cmd.account, cmd.reason, cmd.ts), _accept(cmd)]


def _relate(state: AccountState | None, cmd: RelateAccounts | UnrelateAccounts) -> list[Event]:
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    if cmd.related == cmd.account:
        return [_reject(cmd, Rejection.accounts_must_be_different)]
    if not _valid_id(cmd.related):
        return [_reject(cmd, Rejection.related_account_not_found)]
    kind = cmd.kind if isinstance(cmd, RelateAccounts) else None
    if isinstance(cmd, RelateAccounts) and not cmd.kind.strip():
        return [_reject(cmd, Rejection.relation_kind_invalid)]
    return [
        RelationRequested(
            cmd.command_id, cmd.command_type, cmd.digest, cmd.account, cmd.related, kind, cmd.ts
        )
    ]


# --- Payment commands (docs/payments.md, "Money") ---

# A PSP name is a short slug ([a-z0-9_-]{1,32}): it becomes part of "@psp/<psp>/<CUR>".
_PSP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _valid_psp(psp: str) -> bool:
    return 0 < len(psp) <= PSP_CHARS_MAX and set(psp) <= _PSP_CHARS


def _payment(state: AccountState | None, cmd: PaymentCommand) -> list[Event]:
    match cmd:
        case AuthorizePayin():
            return _authorize_payin(state, cmd)
        case SettlePayin():
            return _settle_payin(state, cmd)
        case CancelPayin():
            return _cancel_payin(state, cmd)
        case HoldPayout():
            return _hold_payout(state, cmd)
        case PostPayout():
            return _post_payout(state, cmd)
        case VoidPayout():
            return _void_payout(state, cmd)


def _held_again(cmd: AuthorizePayin | HoldPayout, state: AccountState, held: int) -> list[Event]:
    """The account already holds this order (a redo whose command id was forgotten): the
    original outcome stands. Another amount or currency for the same order is not a redo."""
    if cmd.currency != state.currency or _amount(cmd, state.currency) != held:
        return [_reject(cmd, Rejection.exists_with_different_payload, remember=False)]
    return [_accept(cmd)]


def _authorize_payin(state: AccountState | None, cmd: AuthorizePayin) -> list[Event]:
    """Check the account can take the pay-in and reserve its amount; nothing is posted."""
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    held = state.payin(cmd.payment_order_id)
    if held is not None:
        return _held_again(cmd, state, held)
    if state.status is Status.blocked:
        return [_reject(cmd, Rejection.account_blocked)]
    if cmd.currency != state.currency:
        return [_reject(cmd, Rejection.currency_mismatch)]
    amount = _amount(cmd, state.currency)
    if isinstance(amount, Rejection):
        return [_reject(cmd, amount)]
    if amount > _room(state):
        return [_reject(cmd, Rejection.balance_would_overflow)]
    if len(state.payins) >= PAYMENTS_IN_FLIGHT_MAX:
        return [_reject(cmd, Rejection.too_many_payments_in_flight)]
    authorized = PayinAuthorized(cmd.command_id, cmd.account, cmd.payment_order_id, amount, cmd.ts)
    return [authorized, _accept(cmd)]


def _settle_payin(state: AccountState | None, cmd: SettlePayin) -> list[Event]:
    """The PSP collected the money: book it, even on a blocked account (it already moved)."""
    if not _valid_psp(cmd.psp):
        return [_reject(cmd, Rejection.psp_invalid)]
    amount = None if state is None else state.payin(cmd.payment_order_id)
    if state is None or amount is None:
        return [_reject(cmd, Rejection.payment_order_not_found)]
    entry = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.payin),
        cmd.command_id,
        None,
        PostingKind.payin,
        state.currency,
        Leg(psp_account(cmd.psp, state.currency), -amount, None, 0),
        Leg(state.account, amount, state.balance + amount, state.seq + 1),
        cmd.ts,
    )
    settled = PayinSettled(
        cmd.command_id, cmd.account, cmd.payment_order_id, cmd.psp, amount, cmd.ts
    )
    return [entry, settled, _accept(cmd)]


def _cancel_payin(state: AccountState | None, cmd: CancelPayin) -> list[Event]:
    if state is None or state.payin(cmd.payment_order_id) is None:
        return [_reject(cmd, Rejection.payment_order_not_found)]
    cancelled = PayinCancelled(cmd.command_id, cmd.account, cmd.payment_order_id, cmd.ts)
    return [cancelled, _accept(cmd)]


def _hold_payout(state: AccountState | None, cmd: HoldPayout) -> list[Event]:
    """Take the pay-out's amount from the account at once, into the pay-out account."""
    if state is None or not state.exists:
        return [_reject(cmd, Rejection.account_not_found)]
    held = state.payout(cmd.payment_order_id)
    if held is not None:
        return _held_again(cmd, state, held)
    if state.status is Status.blocked:
        return [_reject(cmd, Rejection.account_blocked)]
    if cmd.currency != state.currency:
        return [_reject(cmd, Rejection.currency_mismatch)]
    amount = _amount(cmd, state.currency)
    if isinstance(amount, Rejection):
        return [_reject(cmd, amount)]
    if state.balance < amount:
        return [_reject(cmd, Rejection.insufficient_funds)]
    if len(state.payouts) >= PAYMENTS_IN_FLIGHT_MAX:
        return [_reject(cmd, Rejection.too_many_payments_in_flight)]
    entry = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.payout_hold),
        cmd.command_id,
        None,
        PostingKind.payout_hold,
        state.currency,
        Leg(state.account, -amount, state.balance - amount, state.seq + 1),
        Leg(payout_account(state.currency), amount, None, 0),
        cmd.ts,
    )
    held_now = PayoutHeld(cmd.command_id, cmd.account, cmd.payment_order_id, amount, cmd.ts)
    return [entry, held_now, _accept(cmd)]


def _post_payout(state: AccountState | None, cmd: PostPayout) -> list[Event]:
    """The PSP paid it: the pay-out account pays the PSP's account (two system accounts, so
    the customer account's balance and sequence do not change)."""
    if not _valid_psp(cmd.psp):
        return [_reject(cmd, Rejection.psp_invalid)]
    amount = None if state is None else state.payout(cmd.payment_order_id)
    if state is None or amount is None:
        return [_reject(cmd, Rejection.payment_order_not_found)]
    entry = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.payout_post),
        cmd.command_id,
        None,
        PostingKind.payout_post,
        state.currency,
        Leg(payout_account(state.currency), -amount, None, 0),
        Leg(psp_account(cmd.psp, state.currency), amount, None, 0),
        cmd.ts,
    )
    posted = PayoutPosted(
        cmd.command_id, cmd.account, cmd.payment_order_id, cmd.psp, amount, cmd.ts
    )
    return [entry, posted, _accept(cmd)]


def _void_payout(state: AccountState | None, cmd: VoidPayout) -> list[Event]:
    """Nothing was paid out: give the money back, even on a blocked account (it is theirs)."""
    amount = None if state is None else state.payout(cmd.payment_order_id)
    if state is None or amount is None:
        return [_reject(cmd, Rejection.payment_order_not_found)]
    entry = Posted(
        _entry_id(cmd.key, cmd.command_id, PostingKind.payout_void),
        cmd.command_id,
        None,
        PostingKind.payout_void,
        state.currency,
        Leg(payout_account(state.currency), -amount, None, 0),
        Leg(state.account, amount, state.balance + amount, state.seq + 1),
        cmd.ts,
    )
    voided = PayoutVoided(cmd.command_id, cmd.account, cmd.payment_order_id, amount, cmd.ts)
    return [entry, voided, _accept(cmd)]


# --- Saga steps ---


def _reserve_user(state: UserState | None, step: ReserveUser) -> list[Event]:
    if state is None or state.account == step.account:
        return [UserReserved(step.command_id, step.digest, step.user, step.account, step.ts)]
    return [
        UserReservationRefused(
            step.command_id, step.digest, step.user, step.account, state.account, step.ts
        )
    ]


def _reservation_result(state: AccountState | None, step: UserReservationResult) -> list[Event]:
    if state is None or state.status is not Status.opening:
        # Only the opening command can have sent this; anything else is a routing bug.
        raise InvariantViolation(f"reservation result for {step.account!r}, which is not opening")
    pending = state.remembered(step.command_id)
    if pending is None or pending.outcome == ACCEPTED:
        raise InvariantViolation(f"reservation result for unknown command {step.command_id!r}")
    if step.reserved:
        events: list[Event] = [
            AccountOpened(step.command_id, step.account, step.user, state.currency, step.ts),
            CommandAccepted(
                step.command_id, OpenAccount.command_type, step.account, step.digest, step.ts, True
            ),
        ]
    else:
        events = _abandon(step)
    # Decide what waited for the opening, in arrival order, on the state as it now is.
    current = evolve_all(state, events)
    for msg in state.deferred:
        more = decide(current, msg)
        current = evolve_all(current, more)
        events += more
    return events


def _abandon(step: UserReservationResult) -> list[Event]:
    return [
        AccountOpeningAbandoned(step.command_id, step.account, step.ts),
        CommandRejected(
            step.command_id,
            OpenAccount.command_type,
            step.account,
            step.digest,
            Rejection.user_has_account,
            step.ts,
            True,
        ),
    ]


def _confirm_relation(state: AccountState | None, step: ConfirmRelation) -> list[Event]:
    if state is None or not state.exists:
        return [
            CommandRejected(
                step.command_id,
                step.command_type,
                step.account,
                step.digest,
                Rejection.related_account_not_found,
                step.ts,
                False,
            )
        ]
    done: Event = (
        AccountsRelated(step.command_id, step.account, step.related, step.kind, step.ts)
        if step.kind is not None
        else AccountsUnrelated(step.command_id, step.account, step.related, step.ts)
    )
    return [
        done,
        CommandAccepted(
            step.command_id, step.command_type, step.account, step.digest, step.ts, False
        ),
    ]
