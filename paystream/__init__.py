"""paystream: a Kafka-native, exactly-once payment ledger with an audit warehouse."""

__version__ = "0.1.0"
