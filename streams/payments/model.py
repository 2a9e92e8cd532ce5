"""The payments' vocabulary: messages in, state, events out (docs/payments.md).

Pure data: no I/O, no clocks. Every message brings its log time (``ts``, microseconds), so
deciding the same input twice gives the same events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

IDEM = "@idem/"  # key prefix of an idempotency key's agent
ORDER_SUFFIX = "/1"  # one order per payment today: <payment_id>/1


def idem_key(scope: str, key: str) -> str:
    return f"{IDEM}{scope}/{key}"


def order_id_of(payment_id: str) -> str:
    return payment_id + ORDER_SUFFIX


def payment_id_of(order_id: str) -> str:
    return order_id.rsplit("/", 1)[0]


class PaymentType(StrEnum):
    pay_in = "pay_in"
    pay_out = "pay_out"


class PaymentOption(StrEnum):
    card = "card"
    bank_account = "bank_account"
    paypal = "paypal"
    apple_pay = "apple_pay"
    google_pay = "google_pay"


class Status(StrEnum):
    """A payment's status (its one order has the same). Table in docs/payments.md."""

    received = "received"
    risk_check = "risk_check"
    review = "review"
    authorizing = "authorizing"
    processing = "processing"
    pending = "pending"
    unknown = "unknown"
    posting = "posting"
    reversing = "reversing"
    succeeded = "succeeded"
    failed = "failed"
    rejected = "rejected"


class Phase(StrEnum):
    """Where one PSP attempt stands."""

    token_requested = "token_requested"
    token_created = "token_created"
    token_failed = "token_failed"
    executing = "executing"
    answered = "answered"


class PspStatus(StrEnum):
    """What a PSP said of an executed token."""

    succeeded = "succeeded"
    declined = "declined"
    pending = "pending"
    unknown = "unknown"


# Why a payment failed when the PSP gave no code of its own.
PSP_UNAVAILABLE = "psp_unavailable"
NO_ELIGIBLE_PSP = "no_eligible_psp"
# A status answer's code when the PSP has the token and never executed it (no money moved).
NOT_EXECUTED = "not_executed"


class PspRequestKind(StrEnum):
    """Work for the executor (docs/psp-executor.md)."""

    create_token = "create_token"  # phase one: no money moves
    execute = "execute"  # phase two, with the recorded token
    status = "status"  # the poller: what the PSP says of the token now
    resolve = "resolve"  # the janitor: the status, and execute the token if it never was


# Why the risk engine stopped a payment (docs/risk.md).
RISK_BLOCKED = "risk_blocked"
RISK_DECLINED = "risk_declined"
REVIEW_KIND = "risk"  # the review queue's kind of the risk engine's items


def review_id_of(payment_id: str) -> str:
    """The review item of a payment held for review."""
    return f"{REVIEW_KIND}:{payment_id}"


# An order the poller or the janitor could not resolve goes to the same review queue, as a
# reconciliation item of this category (docs/psp-resilience.md); it stays pending or unknown.
PSP_REVIEW_KIND = "recon"
PSP_REVIEW_CATEGORY = "psp_unresolved"


def psp_review_id_of(payment_id: str, attempt: int, checks: int) -> str:
    """The review item of an order handed over after ``checks`` polls or janitor checks."""
    return f"{PSP_REVIEW_KIND}:psp/{order_id_of(payment_id)}/{attempt}/{checks}"


# --- Messages ---


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """What the client asked for (the API validated its shape)."""

    payment_id: str
    user_id: str
    type: PaymentType
    from_acct: str
    to_acct: str
    amount: str
    currency: str
    payment_option: PaymentOption

    @property
    def account(self) -> str:
        """The user's account: where a pay-in lands, where a pay-out leaves from."""
        return self.to_acct if self.type is PaymentType.pay_in else self.from_acct

    @property
    def instrument(self) -> str:
        """The external side, as the PSP knows it."""
        return self.from_acct if self.type is PaymentType.pay_in else self.to_acct


@dataclass(frozen=True, slots=True)
class ReserveKey:
    """Stage 1 of admission, at ``@idem/<scope>/<key>``: the first request in the log wins."""

    scope: str
    idempotency_key: str
    digest: str
    request: PaymentRequest
    ts: int

    @property
    def key(self) -> str:
        return idem_key(self.scope, self.idempotency_key)


@dataclass(frozen=True, slots=True)
class CreatePayment:
    """Stage 2 of admission, at the payment id, for the key that won stage 1."""

    scope: str
    idempotency_key: str
    digest: str
    request: PaymentRequest
    ts: int

    @property
    def key(self) -> str:
        return self.request.payment_id


@dataclass(frozen=True, slots=True)
class LedgerReplied:
    """The ledger's outcome of a command this payment issued (``reply_to``)."""

    payment_id: str
    command_id: str
    accepted: bool
    reason: str | None
    ts: int

    @property
    def key(self) -> str:
        return self.payment_id


@dataclass(frozen=True, slots=True)
class PspReported:
    """What a PSP said about one attempt: from the executor, a webhook or a poll."""

    payment_id: str
    attempt: int
    psp: str
    kind: str  # token_created | token_failed | answered | notified
    token: str | None
    status: PspStatus | None
    code: str | None
    psp_reference: str | None
    retryable: bool
    source: str
    ts: int
    # The poll or janitor check answered (0: the order's own create_token or execute).
    check: int = 0

    @property
    def key(self) -> str:
        return self.payment_id


@dataclass(frozen=True, slots=True)
class RiskDecided:
    """The risk engine's live decision on this payment: allow, review or block."""

    payment_id: str
    action: str  # allow | review | block
    rules: tuple[str, ...]  # the matching rules
    score: str
    version: str  # the rule set's
    evidence: str  # what the engine saw (JSON), for a reviewer
    ts: int

    @property
    def key(self) -> str:
        return self.payment_id


@dataclass(frozen=True, slots=True)
class ReviewDecided:
    """A reviewer's decision on the payment's review item (first decision wins)."""

    payment_id: str
    item_id: str
    approved: bool
    reviewer: str
    note: str
    ts: int

    @property
    def key(self) -> str:
        return self.payment_id


Message = ReserveKey | CreatePayment | LedgerReplied | PspReported | RiskDecided | ReviewDecided

# --- State ---


@dataclass(frozen=True, slots=True)
class KeyState:
    """An idempotency key, bound to the first request that used it."""

    scope: str
    idempotency_key: str
    payment_id: str
    digest: str
    ts: int


@dataclass(frozen=True, slots=True)
class Attempt:
    n: int
    psp: str
    candidates: tuple[str, ...]
    routing_reason: str
    started_at: int
    phase: Phase = Phase.token_requested
    token: str | None = None
    outcome: PspStatus | None = None
    code: str | None = None
    psp_reference: str | None = None
    updated_at: int = 0
    version: int = 1
    # Polls and janitor checks asked so far (their numbers: 1, 2, ...), and how many were asked
    # before the current chain began (a chain restarts when pending and unknown alternate).
    checks: int = 0
    chain_from: int = 0
    review: bool = False  # handed to the review queue (a recon item, psp_unresolved)


@dataclass(frozen=True, slots=True)
class RiskSummary:
    """The risk engine's decision on the payment, and a reviewer's, if it went to review."""

    action: str
    rules: tuple[str, ...]
    score: str
    version: str
    decided_at: int
    review_id: str | None = None
    review_decision: str | None = None  # approved | declined
    reviewer: str | None = None
    note: str | None = None
    reviewed_at: int | None = None


@dataclass(frozen=True, slots=True)
class PaymentState:
    request: PaymentRequest
    scope: str
    idempotency_key: str
    digest: str
    created_at: int
    status: Status = Status.received
    reason: str | None = None
    candidates: tuple[str, ...] = ()  # eligible PSPs at creation, best first
    routing_reason: str = ""  # why the first candidate
    attempts: tuple[Attempt, ...] = ()
    ledger_updated: bool = False
    wallet_updated: bool = False
    history: tuple[tuple[Status, int], ...] = ()
    version: int = 0  # of the last PaymentStatusChanged snapshot
    risk: RiskSummary | None = None

    @property
    def payment_id(self) -> str:
        return self.request.payment_id

    @property
    def order_id(self) -> str:
        return order_id_of(self.request.payment_id)

    @property
    def attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def psp_status(self) -> str | None:
        a = self.attempt
        if a is None:
            return None
        return a.outcome.value if a.outcome is not None else a.phase.value


State = KeyState | PaymentState

# --- Events ---


class LedgerStep(StrEnum):
    """The ledger commands a payment issues; the step names end their command ids."""

    authorize = "authorize"  # authorize_payin
    settle = "settle"  # settle_payin
    cancel = "cancel"  # cancel_payin
    hold = "hold"  # hold_payout
    post = "post"  # post_payout
    void = "void"  # void_payout


@dataclass(frozen=True, slots=True)
class KeyReserved:
    state: KeyState
    request: PaymentRequest


@dataclass(frozen=True, slots=True)
class PaymentCreated:
    state: PaymentState


@dataclass(frozen=True, slots=True)
class StatusChanged:
    status: Status
    reason: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class LedgerCommandIssued:
    """A ledger command for this payment; ``psp`` for settle and post, ``reason`` for
    cancel and void."""

    step: LedgerStep
    payment: PaymentRequest
    psp: str | None
    reason: str | None
    ts: int

    @property
    def command_id(self) -> str:
        return f"{order_id_of(self.payment.payment_id)}/{self.step.value}"


@dataclass(frozen=True, slots=True)
class LedgerUpdated:
    """The ledger acknowledged the payment's last money step: balances reflect it."""

    ts: int


@dataclass(frozen=True, slots=True)
class LedgerRefused:
    """The ledger refused a step that should not fail (settle, cancel, post, void): the order
    keeps its status and reconciliation takes it up."""

    command_id: str
    reason: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class AttemptStarted:
    payment_id: str
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class AttemptChanged:
    """The current attempt after a change (a full copy: attempts are small)."""

    payment_id: str
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class PspRequested:
    """Work for the executor: ``create_token``, ``execute`` (with the token), ``status`` (a
    poll) or ``resolve`` (a janitor check). ``check`` numbers a poll or a check; ``delay_us``
    is how long after ``ts`` the executor may start it (never earlier); ``fallback``: another
    PSP would take the order if this one cannot create a token."""

    kind: PspRequestKind
    attempt: Attempt
    payment: PaymentRequest
    ts: int
    check: int = 0
    delay_us: int = 0
    fallback: bool = False


@dataclass(frozen=True, slots=True)
class ReviewRequested:
    """The poller or the janitor gave up on an order: a person looks at it (an item of kind
    ``recon``, category ``psp_unresolved``, on the review queue, paystream.reviews.v1)."""

    payment: PaymentState
    attempt: Attempt
    reason: str
    ts: int


@dataclass(frozen=True, slots=True)
class RiskRequested:
    """Ask the risk engine (keyed by the user) to decide the payment."""

    payment: PaymentRequest
    ts: int


@dataclass(frozen=True, slots=True)
class RiskRecorded:
    """The risk decision (or the review's) as the payment keeps it."""

    summary: RiskSummary


@dataclass(frozen=True, slots=True)
class ReviewOpened:
    """The payment waits for a reviewer: an item in the review queue."""

    item_id: str
    payment: PaymentRequest
    rules: tuple[str, ...]
    evidence: str
    ts: int


@dataclass(frozen=True, slots=True)
class OutcomeReported:
    """The payment ended failed or rejected: the risk engine counts it as a decline."""

    payment: PaymentRequest
    status: Status
    reason: str | None
    ts: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The payment as it stands after this decision (a PaymentStatusChanged record)."""

    state: PaymentState = field(repr=False)


Event = (
    KeyReserved
    | PaymentCreated
    | StatusChanged
    | LedgerCommandIssued
    | LedgerUpdated
    | LedgerRefused
    | AttemptStarted
    | AttemptChanged
    | PspRequested
    | ReviewRequested
    | RiskRequested
    | RiskRecorded
    | ReviewOpened
    | OutcomeReported
    | Snapshot
)
