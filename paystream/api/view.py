"""The API's read model of ``paystream.payments-state.v1``, the payments workers' changelog
(a ``ChangelogView``: rocksdict stores under ``$PAYSTREAM_HOME/state/api-<port>/``, kept
current by a read_committed consumer that wakes the admissions waiting for a key)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from base.config import Settings
from base.topics import TopicNames
from streams.payments import model as pm
from streams.payments_state import decode_state, encode_state

from .changelog import ChangelogView


class PaymentsView(ChangelogView[pm.State]):
    """Key -> payments state (a payment, or an idempotency key), as the changelog has it."""

    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        topic = TopicNames(settings.topic_prefix).payments_state
        super().__init__(settings, state_dir, topic, encode_state, decode_state, on_failure)

    def key_state(self, scope: str, key: str) -> pm.KeyState | None:
        state = self.get(pm.idem_key(scope, key))
        return state if isinstance(state, pm.KeyState) else None

    def payment(self, payment_id: str) -> pm.PaymentState | None:
        state = self.get(payment_id)
        return state if isinstance(state, pm.PaymentState) else None
