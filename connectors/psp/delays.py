"""The delay topics' gate: a partition of a delay topic is paused at its first record that
is not ready yet (``connectors.psp.retry.ready_at_us``) and resumed when it is. Records are
read in order, so nothing behind that record can be taken early either; a waiting record holds
no task and no memory, only its offset. Used by the executor's loop (one thread).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import TopicPartition

from connectors.psp.offsets import TopicPartitionKey


class DelayGate:
    def __init__(self, consumer: Any, clock: Callable[[], int]) -> None:
        self.consumer = consumer
        self.clock = clock
        # Paused partitions and when to resume them (µs since the epoch).
        self.held: dict[TopicPartitionKey, int] = {}
        self.holds = 0

    def __contains__(self, tp: TopicPartitionKey) -> bool:
        """Is this partition held? A record of it that still arrives was fetched before the
        pause: it comes again on resume, from the held offset."""
        return tp in self.held

    def hold(self, tp: TopicPartitionKey, offset: int, ready_us: int) -> None:
        at = TopicPartition(tp[0], tp[1], offset)
        self.consumer.pause([at])
        self.consumer.seek(at)
        self.held[tp] = ready_us
        self.holds += 1

    def release(self, resume: bool) -> None:
        """Forget the partitions whose time has come; resume them unless the consumer is
        paused whole (it resumes every partition not held when it has room again)."""
        if not self.held:
            return
        now = self.clock()
        due = [tp for tp, ready in self.held.items() if ready <= now]
        for tp in due:
            del self.held[tp]
        if due and resume:
            self.consumer.resume([TopicPartition(t, p) for t, p in due])

    def unheld(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [tp for tp in partitions if (tp.topic, tp.partition) not in self.held]

    def forget(self, keys: list[TopicPartitionKey]) -> None:
        """Partitions revoked or lost: whoever owns them next holds them anew."""
        for k in keys:
            self.held.pop(k, None)
