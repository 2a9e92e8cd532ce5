"""The scheduler process (docs/schedules.md): schedules of its partitions in memory, rebuilt
from the compacted schedule store; due occurrences submitted to the payment API; every change
committed with its input in one Kafka transaction.

``wire`` maps records to the core (``streams.schedules``) and back, ``timers`` keeps the due
times, ``submit`` sends payments off the main loop, ``loop`` is the process's main loop.
"""
