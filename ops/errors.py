"""Errors raised by the operations layer (broker setup, process supervision)."""

from __future__ import annotations


class OpsError(Exception):
    """Base class for operations errors; the CLI turns these into a message and exit code."""


class KafkaSetupError(OpsError):
    """The embedded Kafka cannot be prepared: no java/mvn, Maven failed, storage format failed."""


class KafkaStartError(OpsError):
    """A broker process died during start, or the cluster was not ready in time."""
