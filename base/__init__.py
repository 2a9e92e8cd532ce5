"""The bottom layer: settings, limits, topic names and the Kafka helpers every package shares.

It imports nothing from paystream's other packages (an import-linter contract holds it to
that), so ``streams``, ``producers``, ``connectors``, ``ops`` and the CLI can all depend on it.
"""
