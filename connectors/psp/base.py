"""The connector interface: what paystream needs from any PSP, and the values it returns.

A connector turns a PSP's own API into these few calls. Definitive answers come back as
values (``TokenResult``, ``PspAnswer``); a call that ends without one raises
``PspCallError``, classed retryable or final by the connector's ``ErrorTable``. Connectors are
found through the ``paystream.psp_connectors`` entry points (``connectors.psp.registry``) and
built as ``cls(config, limits)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from connectors.psp.config import PspConfig
from connectors.psp.limits import ExecutorLimits

# What a PSP says about a token's payment. "pending": accepted, completed later (webhook or
# poll); "created": the token exists and was never executed, so no money moved (only a
# status call can say it). There is no "unknown": that is the executor's verdict when no
# answer came.
AnswerStatus = Literal["succeeded", "declined", "pending", "created"]
ANSWER_STATUSES: tuple[AnswerStatus, ...] = ("succeeded", "declined", "pending", "created")


@dataclass(frozen=True, slots=True)
class Capabilities:
    psp: str
    payment_options: tuple[str, ...]
    currencies: tuple[str, ...]
    asynchronous: bool


@dataclass(frozen=True, slots=True)
class TokenOrder:
    """Phase one: what the PSP needs to know about a payment order before any money moves."""

    merchant_reference: str  # our payment order id; the PSP's idempotency key
    direction: str  # pay_in or pay_out
    amount: str  # decimal string, at most the currency's minor units
    currency: str
    payment_option: str
    instrument: str  # the external side: from_acct of a pay-in, to_acct of a pay-out
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class TokenResult:
    token: str
    created: bool  # False: the PSP already had a token for this reference (a repeat)
    http_status: int
    latency_us: int


@dataclass(frozen=True, slots=True)
class PspAnswer:
    """A definitive HTTP answer about a token's payment (execute or status)."""

    token: str
    status: AnswerStatus
    code: str | None  # the decline reason
    psp_reference: str | None
    http_status: int
    latency_us: int
    already_executed: bool = False  # execute: the PSP answered its original result

    @property
    def definitive(self) -> bool:
        """Succeeded or declined: it will never change."""
        return self.status in ("succeeded", "declined")


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified webhook."""

    event_id: str  # the same on every retry and redelivery: deduplicate on it
    type: str  # e.g. payment.succeeded
    token: str
    merchant_reference: str
    status: AnswerStatus
    code: str | None
    psp_reference: str | None
    occurred_at: str  # the event's own time (ISO 8601), not the delivery attempt's
    sent_at_s: int  # the delivery attempt's signed timestamp, in seconds since the epoch


@dataclass(frozen=True, slots=True)
class ErrorTable:
    """A connector's classing of error codes: retryable (the same call may succeed later)
    or final. Codes in neither set are classed by their HTTP status: 408, 425, 429 and 5xx
    retryable, other 4xx final; a transport failure without a status is retryable.

    ``ambiguous`` (a subset of ``retryable``): the call reached the PSP and no answer we can
    read came back (a timeout, a dropped connection), so what the PSP did is unknown. An
    execute that ends so is not sent again at once: the order becomes ``unknown`` and the
    janitor asks the PSP for the token's status. The other retryable codes are the PSP's
    own "not now" (5xx, 429, 503 with Retry-After, ``lock_timeout``) or failures that never
    reached it: the same call is retried through the delay topics.
    """

    retryable: frozenset[str]
    final: frozenset[str]
    ambiguous: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        both = self.retryable & self.final
        if both:
            raise ValueError(f"codes classed both retryable and final: {sorted(both)}")
        loose = self.ambiguous - self.retryable
        if loose:
            raise ValueError(f"ambiguous codes must be retryable: {sorted(loose)}")

    def outcome_unknown(self, code: str, http_status: int | None, sent: bool) -> bool:
        """Did a failed call leave the PSP's side unknown? Never when it was not sent."""
        if not sent:
            return False
        if code in self.ambiguous:
            return True
        if code in self.retryable or code in self.final:
            return False
        return http_status is None

    def is_retryable(self, code: str, http_status: int | None = None) -> bool:
        if code in self.final:
            return False
        if code in self.retryable:
            return True
        if http_status is None:
            return True
        return http_status in (408, 425, 429) or http_status >= 500


class PspConnector(Protocol):
    """One PSP. Async and safe to share between tasks; ``aclose`` releases its connections."""

    @property
    def name(self) -> str: ...

    @property
    def errors(self) -> ErrorTable: ...

    async def capabilities(self) -> Capabilities: ...

    async def create_token(self, order: TokenOrder) -> TokenResult:
        """Phase one (no money moves). Idempotent on ``order.merchant_reference``."""
        ...

    async def execute(self, token: str) -> PspAnswer:
        """Phase two. At most once per token at the PSP: a repeat answers the original result."""
        ...

    async def get_status(self, token: str) -> PspAnswer:
        """The token's payment as the PSP sees it now; ``PspCallError`` if never executed."""
        ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> WebhookEvent:
        """Verify (signature, timestamp tolerance) and parse; ``WebhookRejected`` otherwise."""
        ...

    async def aclose(self) -> None: ...


class ConnectorFactory(Protocol):
    """What an entry point of ``paystream.psp_connectors`` loads: usually the class itself."""

    def __call__(self, config: PspConfig, limits: ExecutorLimits) -> PspConnector: ...
