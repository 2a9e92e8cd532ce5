"""A deterministic simulation of the scheduler: its real main loop (streams/scheduler/loop.py)
against the in-memory Kafka of tests/sim/fakekafka.py, a manual clock, and a fake payment API
that keeps the real one's contract (a payment id is created once; a second submission of it
is answered with the original) and settles each payment at once by its instrument.

Crashes (kill -9) land at any transaction call; a restarted scheduler is a new process on the
same broker: a new loop, a new submitter, the state rebuilt from the store topic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from base.config import Settings
from base.topics import TopicNames
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.processor import Clients
from streams.scheduler import wire
from streams.scheduler.clock import ManualClock
from streams.scheduler.loop import GROUP, Scheduler
from streams.scheduler.submit import ADMITTED, REFUSED, Job
from streams.schedules import model as sm
from tests.sim.fakekafka import FakeBroker, FakeConsumer, FakeProducer, Record
from tests.sim.fakekafka import Scheduler as CallCounter

PARTITIONS = 4
# Instruments and what the fake API makes of them.
OK = "card_4242424242424242"
DECLINED = "card_4000000000000002"
REFUSED_INSTRUMENT = "card_refused"  # the API refuses it for good (400)


@dataclass
class Created:
    body: dict[str, str]
    at_us: int  # the clock when the payment was created


@dataclass
class FakePaymentApi:
    broker: FakeBroker
    clock: ManualClock
    topic: str
    payments: dict[str, Created] = field(default_factory=dict)
    replays: int = 0
    codec: Codec = field(default_factory=Codec.default)

    def send(self, job: Job) -> tuple[str, str | None]:
        body = job.body
        pid = body["payment_id"]
        if body["from_acct"] == REFUSED_INSTRUMENT:
            return REFUSED, "invalid_field"
        if pid in self.payments:
            self.replays += 1  # the original answer: nothing new
            return ADMITTED, None
        self.payments[pid] = Created(dict(body), self.clock.now)
        failed = body["from_acct"] == DECLINED
        record = {
            "event_id": f"{pid}/v3", "version": 3, "payment_id": pid,
            "user_id": body["user_id"], "type": body["type"], "from_acct": body["from_acct"],
            "to_acct": body["to_acct"], "amount": body["amount"], "currency": body["currency"],
            "payment_option": body["payment_option"], "payment_order_id": pid + "/1",
            "status": "failed" if failed else "succeeded",
            "reason": "card_declined" if failed else None, "psp": "cardco", "psp_status": None,
            "ledger_updated": True, "wallet_updated": True, "is_complete": True,
            "ts": self.clock.now,
        }  # fmt: skip
        value = self.codec.encode("PaymentStatusChanged", record)
        p = partition_for(pid, PARTITIONS)
        self.broker.append(self.topic, p, Record(pid.encode(), value, self.clock.now // 1000))
        return ADMITTED, None


class InlinePool:
    """The submitter, answered at once by the fake API (answers wait for ``drain``)."""

    def __init__(self, api: FakePaymentApi, clock: ManualClock) -> None:
        self.api = api
        self.clock = clock
        self._answers: list[sm.Submitted] = []

    @property
    def in_flight(self) -> int:
        return len(self._answers)

    def start(self) -> None:
        pass

    def submit(self, job: Job) -> None:
        outcome, code = self.api.send(job)
        self._answers.append(
            sm.Submitted(
                job.schedule_id, job.at, outcome == ADMITTED, self.clock.now, job.due_at,
                job.backfill, code,
            )
        )  # fmt: skip

    def drain(self) -> list[sm.Submitted]:
        out, self._answers = self._answers, []
        return out

    def close(self) -> None:
        pass


class Sim:
    def __init__(self, settings: Settings, now_us: int, crash_at: dict[str, set[int]]) -> None:
        self.settings = settings
        self.topics = TopicNames(settings.topic_prefix)
        self.calls = CallCounter(crash_at=crash_at)
        names = [
            self.topics.schedule_commands,
            self.topics.schedules,
            self.topics.schedule_events,
            self.topics.payment_events,
            self.topics.deadletter,
        ]
        self.broker = FakeBroker(names, PARTITIONS, self.calls)
        self.clock = ManualClock(now_us)
        self.api = FakePaymentApi(self.broker, self.clock, self.topics.payment_events)
        self.codec = Codec.default()
        self.restarts = 0
        self.commands = 0
        self.scheduler = self._new()

    def _new(self) -> Scheduler:
        group = self.settings.topic_prefix + GROUP
        consumer = FakeConsumer(self.broker, group)
        consumer.idle_polls_max = 1 << 60
        clients = Clients(
            consumer, FakeProducer(self.broker, f"{group}-1"), FakeConsumer(self.broker, "r", True)
        )
        s = Scheduler(
            self.settings, InlinePool(self.api, self.clock), clock=self.clock, clients=clients
        )
        s.start()
        return s

    def restart(self) -> None:
        """kill -9, then a new process: nothing of the old one's memory survives."""
        self.scheduler.watchdog.stop()
        self.restarts += 1
        self.scheduler = self._new()

    def send(self, record: dict[str, Any]) -> None:
        """A request from the API, written at the clock's time."""
        self.commands += 1
        sid = record["schedule_id"]
        value = self.codec.encode(wire.COMMAND_SCHEMA, {**record, "ts": self.clock.now})
        self.broker.append(
            self.topics.schedule_commands,
            partition_for(sid, PARTITIONS),
            Record(sid.encode(), value, self.clock.now // 1000),
        )

    def run(self, seconds: float, step_s: float = 5.0) -> None:
        """Cycles every ``step_s`` of the clock for ``seconds``, restarting after any crash."""
        end = self.clock.now + round(seconds * sm.US)
        while self.clock.now < end:
            self.cycles(3)
            self.clock.advance(round(step_s * sm.US))

    def cycles(self, n: int) -> None:
        from tests.sim.fakekafka import Crash

        for _ in range(n):
            try:
                self.scheduler.cycle()
            except Crash:
                self.restart()

    def state(self, sid: str) -> sm.ScheduleState | None:
        """The schedule as the store has it (its latest committed record)."""
        out = None
        for _, _, r in self.broker.records(self.topics.schedules):
            if r.key == sid.encode() and r.value is not None:
                out = wire.decode_state(r.value)
        return out

    def occurrences(self) -> list[dict[str, Any]]:
        out = []
        for _, _, r in self.broker.records(self.topics.schedule_events):
            schema, record = self.codec.decode(r.value or b"")
            if schema == wire.OCCURRENCE_SCHEMA:
                out.append(record)
        return out
