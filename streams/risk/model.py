"""The risk engine's vocabulary: messages in, state, events out (docs/risk.md). Pure data.

Keys: a user (payment requests, their outcomes, facts about the user's accounts), an account
(the ledger's account events, to learn whose it is), and one context key per partition (the
rule set, shadow rule set and model live in that partition from the activation's position on).
Every message brings its log time (``ts``, microseconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .rules import Action


class Mode(StrEnum):
    live = "live"  # the decision the payment follows
    shadow = "shadow"  # what a candidate rule set would have decided: recorded, never acted on


class ActivationKind(StrEnum):
    rules = "rules"  # the live rule set from here on
    shadow = "shadow"  # a candidate run beside it
    shadow_off = "shadow_off"
    model = "model"  # the model that scores every payment from here on
    model_off = "model_off"


# --- messages ---


@dataclass(frozen=True, slots=True)
class RiskRequest:
    """A payment to decide, from the payments workers (keyed by its user)."""

    user_id: str
    payment_id: str
    type: str  # pay_in | pay_out | transfer
    amount: str  # a decimal string (the API checked its shape)
    currency: str
    payment_option: str
    from_acct: str
    to_acct: str
    ts: int  # the payment's log time

    @property
    def key(self) -> str:
        return self.user_id

    @property
    def account(self) -> str:
        """The user's account: where a pay-in lands, where a pay-out leaves from."""
        return self.to_acct if self.type == "pay_in" else self.from_acct

    @property
    def instrument(self) -> str:
        """The external side (a card, a bank account...)."""
        return self.from_acct if self.type == "pay_in" else self.to_acct


@dataclass(frozen=True, slots=True)
class PaymentEnded:
    """A payment of the user reached a terminal status (from the payments workers)."""

    user_id: str
    payment_id: str
    status: str  # succeeded | failed | rejected
    reason: str | None
    ts: int

    @property
    def key(self) -> str:
        return self.user_id

    @property
    def declined(self) -> bool:
        return self.status in ("failed", "rejected")


@dataclass(frozen=True, slots=True)
class AccountSeen:
    """The ledger's account event (paystream.accounts.v1), keyed by the account."""

    account: str
    kind: str  # opened | blocked | unblocked (others are ignored)
    user_id: str | None  # set when opened
    ts: int

    @property
    def key(self) -> str:
        return self.account


@dataclass(frozen=True, slots=True)
class AccountFact:
    """A fact about one of the user's accounts, handed from the account's key to the user's."""

    user_id: str
    account: str
    kind: str  # opened | blocked | unblocked
    ts: int

    @property
    def key(self) -> str:
        return self.user_id


@dataclass(frozen=True, slots=True)
class Activate:
    """A published version, in every partition's input at one position (the context key)."""

    key: str
    kind: ActivationKind
    version: str
    sha256: str
    ts: int


Message = RiskRequest | PaymentEnded | AccountSeen | AccountFact | Activate

# --- state ---


@dataclass(frozen=True, slots=True)
class Entry:
    """One payment request counted in the user's windows."""

    t: int  # the user's log time when it came (never decreasing)
    payment_id: str
    amount: str
    currency: str
    instrument: str


@dataclass(frozen=True, slots=True)
class AccountInfo:
    account: str
    opened_at: int | None  # the user's log time of the opening, if seen
    blocked: bool


@dataclass(frozen=True, slots=True)
class UserState:
    clock: int = 0  # the latest log time seen for the user: windows end here
    requests: tuple[Entry, ...] = ()  # the last 24 h, oldest first
    declines: tuple[int, ...] = ()  # times of the user's payments that ended failed/rejected
    accounts: tuple[AccountInfo, ...] = ()
    saturated: bool = False  # USER_EVENTS_MAX was reached: some old entries were dropped


@dataclass(frozen=True, slots=True)
class AccountLink:
    """Whose account this is (from its opening)."""

    user_id: str
    opened_at: int


@dataclass(frozen=True, slots=True)
class Ref:
    """A published version: its name and the SHA-256 of its content (the content's key)."""

    version: str
    sha256: str


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What decides in a partition from the last activation on (None: the built-in default)."""

    rules: Ref | None = None
    shadow: Ref | None = None
    model: Ref | None = None
    activations: int = 0
    since: int = 0  # log time of the last activation


@dataclass(frozen=True, slots=True)
class KeyState:
    """A key's state: a user id and an account id may be the same string, so one key may hold
    both parts; a context key holds only its context."""

    user: UserState | None = None
    link: AccountLink | None = None
    context: RiskContext | None = None


# --- decisions and events ---


Feature = str | int | bool  # numbers as exact decimal strings or integers


@dataclass(frozen=True, slots=True)
class Decision:
    payment_id: str
    user_id: str
    payment_type: str
    amount: str
    currency: str
    mode: Mode
    action: Action
    score: str  # a decimal string: rule scores + model_weight x model_score
    escalated: bool  # a score threshold raised the action above the rules'
    rules_version: str
    rules_sha256: str
    matched: tuple[str, ...]  # the matching rules' names, in file order
    features: tuple[tuple[str, Feature], ...]  # every symbol's value, sorted by name
    model_version: str | None
    model_score: str  # 0..1, six decimals ("0" without a model)
    contributions: tuple[tuple[str, str], ...]  # the model's top features and their shares
    ts: int

    @property
    def decision_id(self) -> str:
        if self.mode is Mode.live:
            return f"{self.payment_id}/risk"
        return f"{self.payment_id}/risk/shadow/{self.rules_sha256[:12]}"


@dataclass(frozen=True, slots=True)
class Decided:
    decision: Decision


@dataclass(frozen=True, slots=True)
class RequestCounted:
    entry: Entry


@dataclass(frozen=True, slots=True)
class DeclineCounted:
    t: int


@dataclass(frozen=True, slots=True)
class AccountNoted:
    info: AccountInfo
    t: int


@dataclass(frozen=True, slots=True)
class Linked:
    link: AccountLink


@dataclass(frozen=True, slots=True)
class FactForwarded:
    """A step to the user's key (the processor takes it at once when it owns that key)."""

    fact: AccountFact


@dataclass(frozen=True, slots=True)
class ContextChanged:
    context: RiskContext
    activation: Activate


Event = (
    Decided
    | RequestCounted
    | DeclineCounted
    | AccountNoted
    | Linked
    | FactForwarded
    | ContextChanged
)
