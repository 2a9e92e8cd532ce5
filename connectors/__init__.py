"""Connectors: the warehouse sink and the ClickHouse HTTP front of the embedded warehouse."""
