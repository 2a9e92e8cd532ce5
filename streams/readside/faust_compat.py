"""What paystream changes in faust 0.15.3, in one place, pinned to that version.

* read_committed for an at-least-once app (faust reads committed only under exactly-once);
* a compact JSON value codec for the tables (faust's "json" adds an encoder pass);
* setting faust's "current event", which tables read to pick a changelog partition.

Each patch reaches into faust's internals, so ``tests/unit/test_faust_compat.py`` fails as
soon as faust is another version: check these against it before moving the pin.
"""

from __future__ import annotations

import json
import weakref
from typing import Any

import faust
from faust.serializers import codecs
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import EventT

FAUST_VERSION = "0.15.3"  # the version these patches were written and checked against

Event = EventT[bytes]

# --- read_committed -----------------------------------------------------------------------
#
# faust 0.15.3 has no isolation-level setting: its aiokafka consumer reads read_committed only
# with processing_guarantee="exactly_once" (see AIOKafkaConsumerThread._create_worker_consumer).
# The write side is transactional, so an at-least-once reader must still skip aborted and
# open transactions: set the level on the consumer before it starts (its fetcher is created
# in start() from this attribute) and check the fetcher afterwards.


class _ReadCommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"
        return consumer

    async def on_start(self) -> None:
        await super().on_start()
        fetcher = getattr(self._consumer, "_fetcher", None)
        level = getattr(fetcher, "_isolation_level", None)
        if level != 1:  # aiokafka.consumer.fetcher.READ_COMMITTED
            raise RuntimeError(f"consumer is not read_committed (fetcher level {level!r})")


class _ReadCommittedConsumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ReadCommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _ReadCommittedConsumer


class App(faust.App):
    """faust.App with the read_committed transport."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)


# --- table values: compact JSON (faust's "json" codec adds a custom encoder pass) ----------


class _CompactJson(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    def _loads(self, s: bytes) -> Any:
        return json.loads(s)


VALUE_CODEC = "paystream_json"
COMPACT = _CompactJson()
codecs.register(VALUE_CODEC, COMPACT)


def set_current_event(event: Event | None) -> None:
    # Tables choose the changelog partition and the RocksDB shard from faust's current event.
    # take_events() buffers in another task, so the agent sets it for the event whose key it
    # writes (the same partition as the key, the topics being co-partitioned).
    _current_event.set(weakref.ref(event) if event is not None else None)
