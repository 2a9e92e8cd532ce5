"""The delay topics' gate (connectors.psp.delays) against a fake consumer: a held partition
is paused at its record and resumed only once that record is ready."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from connectors.psp.delays import DelayGate


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: set[tuple[str, int]] = set()
        self.seeks: list[tuple[str, int, int]] = []

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in tps}

    def resume(self, tps: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in tps}

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def test_a_held_partition_resumes_when_its_record_is_ready() -> None:
    now = [1_000]
    consumer = FakeConsumer()
    gate = DelayGate(consumer, lambda: now[0])
    gate.hold(("retry-5s", 0), 42, ready_us=2_000)
    assert ("retry-5s", 0) in gate and consumer.paused == {("retry-5s", 0)}
    assert consumer.seeks == [("retry-5s", 0, 42)]
    gate.release(resume=True)
    assert ("retry-5s", 0) in gate  # not ready yet
    now[0] = 2_000
    gate.release(resume=True)
    assert ("retry-5s", 0) not in gate and consumer.paused == set()
    assert gate.holds == 1


def test_a_consumer_paused_whole_resumes_the_released_partitions_itself() -> None:
    consumer = FakeConsumer()
    gate = DelayGate(consumer, lambda: 5)
    gate.hold(("retry-30s", 1), 7, ready_us=5)
    gate.hold(("retry-30s", 2), 9, ready_us=6)
    gate.release(resume=False)
    assert ("retry-30s", 1) not in gate and ("retry-30s", 1) in consumer.paused
    assignment = [TopicPartition("retry-30s", 1), TopicPartition("retry-30s", 2)]
    assert [(tp.topic, tp.partition) for tp in gate.unheld(assignment)] == [("retry-30s", 1)]


def test_revoked_partitions_are_forgotten() -> None:
    gate = DelayGate(FakeConsumer(), lambda: 0)
    gate.hold(("retry-5m", 3), 1, ready_us=10)
    gate.forget([("retry-5m", 3)])
    assert ("retry-5m", 3) not in gate
