"""The faust patches (``streams/readside/faust_compat.py``) are pinned to the faust they fit."""

from __future__ import annotations

import faust
from faust.serializers import codecs
from faust.streams import _current_event
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.readside import faust_compat


def test_faust_is_the_version_the_patches_were_written_for() -> None:
    assert faust.__version__ == faust_compat.FAUST_VERSION, (
        "streams/readside/faust_compat.py reaches into faust's internals: check every patch "
        f"against faust {faust.__version__}, then move FAUST_VERSION"
    )


def test_the_internals_the_patches_use_are_there() -> None:
    assert callable(faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer)
    assert callable(faust_aiokafka.Consumer._new_consumer_thread)
    assert callable(faust.App._new_transport)
    assert _current_event.get(None) is None  # a ContextVar of weak references to events
    assert isinstance(codecs.get_codec(faust_compat.VALUE_CODEC), type(faust_compat.COMPACT))


def test_the_compact_codec_round_trips() -> None:
    value = {"account": "a", "related": {"b": "family"}, "seq": 3, "balance": None}
    raw = faust_compat.COMPACT.dumps(value)
    assert raw == b'{"account":"a","related":{"b":"family"},"seq":3,"balance":null}'
    assert faust_compat.COMPACT.loads(raw) == value
