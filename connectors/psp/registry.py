"""Connectors are found through the ``paystream.psp_connectors`` entry-point group.

A package adds a PSP integration by declaring, in its ``pyproject.toml``::

    [project.entry-points."paystream.psp_connectors"]
    acme = "acme_paystream.connector:AcmeConnector"

and a ``psps.toml`` table with ``connector = "acme"``. The loaded object is called as
``factory(config, limits)`` and must give a ``PspConnector``.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import cast

from connectors.psp.base import ConnectorFactory, PspConnector
from connectors.psp.config import PspConfig
from connectors.psp.errors import UnknownConnector
from connectors.psp.limits import ExecutorLimits

ENTRY_POINT_GROUP = "paystream.psp_connectors"


def connector_names() -> list[str]:
    """The registered connectors (entry point names), sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def connector_factory(name: str) -> ConnectorFactory:
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(connector_names()) or "none: is paystream installed (pip install -e .)?"
        raise UnknownConnector(f"no PSP connector named {name!r} (registered: {known})")
    try:
        loaded = matches[0].load()
    except (ImportError, AttributeError) as exc:
        raise UnknownConnector(
            f"PSP connector {name!r} ({matches[0].value}) cannot be loaded: {exc}"
        ) from exc
    if not callable(loaded):
        raise UnknownConnector(f"PSP connector {name!r} ({matches[0].value}) is not callable")
    return cast(ConnectorFactory, loaded)


def build_connectors(
    psps: Iterable[PspConfig], limits: ExecutorLimits | None = None
) -> dict[str, PspConnector]:
    """One connector per configured PSP, by PSP name. Opens no connection yet."""
    limits = limits or ExecutorLimits()
    built: dict[str, PspConnector] = {}
    for psp in psps:
        try:
            factory = connector_factory(psp.connector)
        except UnknownConnector as exc:
            raise UnknownConnector(f'psp "{psp.name}": connector: {exc}') from None
        built[psp.name] = factory(psp, limits)
    return built
