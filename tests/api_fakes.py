"""An in-process stand-in for the payments workers and the API's view, for the API's unit
tests: the real pure core (decide/evolve) behind a fake log, with a configurable delay."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from decimal import Decimal
from typing import Any

from schemas.codec import Codec
from streams.payments import decide, evolve_all
from streams.payments import model as pm
from streams.payments.routing import PspInfo
from streams.payments_agent import to_request

PSPS = (
    PspInfo(
        "cardco",
        frozenset({"card", "apple_pay", "google_pay"}),
        frozenset({"USD", "EUR"}),
        1,
        Decimal("2.9"),
        30,
    ),
    PspInfo("bankco", frozenset({"bank_account"}), frozenset({"USD", "EUR"}), 1, Decimal("0.8"), 0),
    PspInfo("walletco", frozenset({"paypal"}), frozenset({"USD", "EUR"}), 1, Decimal("3.4"), 35),
)


class FakeView:
    """The view's interface over a dict, woken as the real one is."""

    def __init__(self) -> None:
        self.states: dict[str, pm.State] = {}
        self.partitions = 4
        self.records_applied = 0
        self.failure: BaseException | None = None
        self._waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def key_state(self, scope: str, key: str) -> pm.KeyState | None:
        s = self.states.get(pm.idem_key(scope, key))
        return s if isinstance(s, pm.KeyState) else None

    def payment(self, payment_id: str) -> pm.PaymentState | None:
        s = self.states.get(payment_id)
        return s if isinstance(s, pm.PaymentState) else None

    def watch(self, keys: list[str]) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for k in keys:
            self._waiters[k].add(fut)
        return fut

    def unwatch(self, keys: list[str], fut: asyncio.Future[None]) -> None:
        for k in keys:
            self._waiters[k].discard(fut)

    def put(self, key: str, state: pm.State) -> None:
        self.states[key] = state
        self.records_applied += 1
        for fut in self._waiters.pop(key, set()):
            if not fut.done():
                fut.set_result(None)


class FakeWorker:
    """The sink: decodes the API's record and runs the payments core on it after ``delay_s``
    (``None``: never, as with no worker running). ``fail``: the broker refuses it."""

    def __init__(self, view: FakeView, delay_s: float | None = 0.0) -> None:
        self.view = view
        self.delay_s = delay_s
        self.fail = False
        self.sent: list[tuple[str, int, str, dict[str, Any]]] = []
        self.codec = Codec.default()
        self.ts = 1_700_000_000_000_000

    async def send(self, topic: str, partition: int, key: str, value: bytes) -> None:
        from paystream.api.errors import NotDelivered

        if self.fail:
            raise NotDelivered("broker down")
        schema, record = self.codec.decode(value)
        assert schema.endswith("RequestPayment")
        self.sent.append((topic, partition, key, record))
        if self.delay_s is not None:
            asyncio.get_running_loop().call_later(self.delay_s, self.process, record)

    def process(self, record: dict[str, Any]) -> None:
        self.ts += 1000
        work: list[pm.Message] = [to_request(record, self.ts)]
        while work:
            msg = work.pop()
            state = self.view.states.get(msg.key)
            events = decide(state, msg, PSPS)
            if not events:
                continue
            new = evolve_all(state, events)
            if new is not None:
                self.view.put(msg.key, new)
            for e in events:
                if isinstance(e, pm.KeyReserved):
                    k = e.state
                    work.append(
                        pm.CreatePayment(k.scope, k.idempotency_key, k.digest, e.request, k.ts)
                    )
