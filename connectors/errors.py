"""Errors raised by the connectors (warehouse sink, HTTP front of the embedded warehouse)."""

from __future__ import annotations


class ConnectorError(Exception):
    """Base class of every error a connector raises on purpose."""


class WarehouseError(ConnectorError):
    """The warehouse (chDB or ClickHouse) could not be opened or refused an operation."""


class PoisonRecord(ValueError):
    """A committed record the warehouse cannot take; it goes to the dead-letter topic."""
