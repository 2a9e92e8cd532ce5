"""PSP webhooks: ``POST /psp/webhooks/{psp}``, verified, matched to their attempt, and put in
the payments log as a ``PspResult`` (kind ``notified``) for the payments workers to decide.

The API decides nothing: the worker applies a notification only when it moves the order
forward (a late ``pending`` never overwrites ``succeeded``), so a duplicated, delayed or
reordered webhook is harmless. Duplicates are also de-duplicated by event id here, as far as
this process remembers (``api_webhook_event_ids_max``): one already put in the log is answered
200 ``duplicate`` without writing it again. The answer to the PSP is 2xx once the record is in
the log (a PSP retries anything else), 401 for a bad signature or timestamp.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from connectors.psp.base import PspConnector, WebhookEvent
from connectors.psp.errors import WebhookRejected
from schemas import now_micros
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.payments import model as pm

from .errors import ApiError

log = logging.getLogger(__name__)


class View(Protocol):
    def payment(self, payment_id: str) -> pm.PaymentState | None: ...


class Sink(Protocol):
    async def send(self, topic: str, partition: int, key: str, value: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class Received:
    status: int
    body: dict[str, Any]


class Webhooks:
    def __init__(
        self,
        connectors: Mapping[str, PspConnector],
        view: View,
        sink: Sink,
        topic: str,
        partitions: int,
        codec: Codec | None = None,
        event_ids_max: int = 100_000,
    ) -> None:
        self.connectors = connectors
        self.view = view
        self.sink = sink
        self.topic = topic
        self.partitions = partitions
        self.codec = codec or Codec.default()
        self.event_ids_max = event_ids_max
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.duplicates = 0

    async def receive(self, psp: str, headers: Mapping[str, str], body: bytes) -> Received:
        connector = self.connectors.get(psp)
        if connector is None:
            raise ApiError(404, "psp_not_found", f"no PSP named {psp[:40]!r}")
        try:
            event = connector.parse_webhook(headers, body)
        except WebhookRejected as exc:
            log.warning("webhook from %s refused: %s (%s)", psp, exc.code, exc)
            raise ApiError(
                401, "webhook_rejected", f"{exc.code}: the webhook is not verified"
            ) from None
        seen = (psp, event.event_id)
        if seen in self._seen:
            self._seen.move_to_end(seen)
            self.duplicates += 1
            log.info("webhook %s from %s: a duplicate, already in the log", event.event_id, psp)
            return Received(200, {"status": "duplicate", "event_id": event.event_id})
        payment_id = pm.payment_id_of(event.merchant_reference)
        p = self.view.payment(payment_id)
        attempt = _attempt_of(p, psp, event.token)
        if attempt is None:
            # Not (yet) a token we know: the worker has not recorded it, or it is not ours.
            # 202 and no record: a PSP's retry, or the poller and the janitor, will bring it.
            log.info(
                "webhook %s from %s for unknown token of %s: ignored",
                event.event_id,
                psp,
                payment_id,
            )
            return Received(202, {"status": "ignored", "reason": "unknown_token"})
        record = _result_record(payment_id, event, psp, attempt)
        value = self.codec.encode("PspResult", record)
        await self.sink.send(
            self.topic, partition_for(payment_id, self.partitions), payment_id, value
        )
        self._seen[seen] = None
        while len(self._seen) > self.event_ids_max:
            self._seen.popitem(last=False)
        log.info(
            "payment=%s webhook %s from %s: %s (attempt %d)",
            payment_id,
            event.event_id,
            psp,
            event.status,
            attempt,
        )
        return Received(200, {"status": "received", "event_id": event.event_id})


def _attempt_of(p: pm.PaymentState | None, psp: str, token: str) -> int | None:
    if p is None:
        return None
    for a in p.attempts:
        if a.psp == psp and a.token == token:
            return a.n
    return None


def _result_record(payment_id: str, e: WebhookEvent, psp: str, attempt: int) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "payment_order_id": e.merchant_reference,
        "attempt": attempt,
        "psp": psp,
        "kind": "notified",
        "token": e.token,
        "status": e.status,
        "code": e.code,
        "psp_reference": e.psp_reference,
        "retryable": False,
        "http_status": None,
        "latency_us": None,
        "detail": f"{e.type} at {e.occurred_at}",
        "event_id": e.event_id,
        "source": "webhook",
        "ts": now_micros(),
    }
