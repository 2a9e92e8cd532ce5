"""psps.toml: the embedded default, validation with errors that name the PSP and the field,
and connectors loaded through the paystream.psp_connectors entry points."""

from __future__ import annotations

import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.psp.config import (
    SIMULATED_PSPS,
    PspConfig,
    embedded_psps_toml,
    load_psps,
    parse_psps,
    psps_path,
)
from connectors.psp.errors import PspConfigError, UnknownConnector
from connectors.psp.registry import ENTRY_POINT_GROUP, build_connectors, connector_names
from connectors.psp.simulator import SimulatorConnector
from pspsim.psps import DEFAULT_PORTS, DEFAULT_PSPS

PORTS = {"cardco": 8091, "bankco": 8092, "walletco": 8093, "backupcard": 8094}
GOOD = """
[[psp]]
name = "cardco"
connector = "simulator"
base_url = "http://127.0.0.1:8091/"
priority = 1
commission_percent = "2.9"
commission_fixed_minor = 30
payment_options = ["card"]
currencies = ["USD"]
asynchronous = false
webhook_secret_file = "secrets/cardco"
timeout_ms = 5000
"""


def parse(text: str) -> tuple[PspConfig, ...]:
    return parse_psps(text, "psps.toml", Path("/etc/paystream"))


def error(text: str) -> str:
    with pytest.raises(PspConfigError) as info:
        parse(text)
    return str(info.value)


def test_embedded_default_is_the_simulators_contract(tmp_path: Path) -> None:
    text = embedded_psps_toml(PORTS, tmp_path / "secrets")
    psps = {p.name: p for p in parse_psps(text, "psps.toml", tmp_path)}
    assert list(psps) == list(DEFAULT_PSPS) == list(SIMULATED_PSPS)
    for name, spec in DEFAULT_PSPS.items():
        p = psps[name]
        assert p.connector == "simulator"
        assert p.base_url == f"http://127.0.0.1:{DEFAULT_PORTS[name]}"
        assert (p.payment_options, p.currencies) == (spec.payment_options, spec.currencies)
        assert (p.asynchronous, p.priority) == (spec.asynchronous, spec.priority)
        assert p.commission_percent == spec.commission.percent
        assert p.commission_fixed_minor == spec.commission.fixed_minor
        assert p.commission_max_minor == spec.commission.max_minor
        assert p.webhook_secret_file == tmp_path / "secrets" / name
        assert p.timeout_ms == 10_000
        for amount in (1, 500, 1234, 99_999, 10**9):
            assert p.commission_minor(amount) == spec.commission.of(amount)


def test_embedded_subset_timeouts_and_odd_paths(tmp_path: Path) -> None:
    odd = tmp_path / 'se"cr\\ets é'
    text = embedded_psps_toml({"bankco": 0, "cardco": 1}, odd, timeout_ms={"cardco": 1000})
    psps = parse_psps(text, "psps.toml", tmp_path)
    assert [(p.name, p.timeout_ms) for p in psps] == [("bankco", 10_000), ("cardco", 1000)]
    assert psps[0].webhook_secret_file == odd / "bankco"
    with pytest.raises(PspConfigError, match="no PSP named 'acme'"):
        embedded_psps_toml({"acme": 1}, tmp_path)


def test_load_reads_home_and_resolves_relative_paths(tmp_path: Path) -> None:
    path = psps_path(tmp_path)
    assert path == tmp_path / "psps.toml"
    with pytest.raises(PspConfigError, match="no such file"):
        load_psps(path)
    path.write_text(GOOD)
    (psp,) = load_psps(path)
    assert psp.base_url == "http://127.0.0.1:8091"  # no trailing slash
    assert psp.webhook_secret_file == tmp_path / "secrets" / "cardco"
    assert psp.commission_percent == Decimal("2.9") and psp.commission_max_minor is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("priority = 1", "priority = true"), 'psp "cardco" (#1): priority: must be an integer'),
        (("priority = 1", "priority = -1"), 'psp "cardco" (#1): priority: must be in 0..1000'),
        (("priority = 1\n", ""), 'psp "cardco" (#1): priority: missing'),
        (("timeout_ms = 5000", "timeout_ms = 0"), "timeout_ms: must be in 1..120000, got 0"),
        (("timeout_ms = 5000", 'timeout_ms = "5s"'), "timeout_ms: must be an integer, got '5s'"),
        (('"2.9"', '"2,9"'), "commission_percent: not a decimal: '2,9'"),
        (('"2.9"', '"150"'), "commission_percent: must be in 0..100"),
        (('"2.9"', "true"), "commission_percent: must be a decimal string"),
        (('"http://127.0.0.1:8091/"', '"ftp://x"'), "base_url: must be an http(s) URL"),
        (('["USD"]', '["usd"]'), "currencies: 'usd' does not match [A-Z]{3}"),
        (('["USD"]', "[]"), "currencies: must be a non-empty list"),
        (('["card"]', '["card", "card"]'), "payment_options: has duplicates"),
        (("asynchronous = false", "asynchronous = 0"), "asynchronous: must be true or false"),
        (
            ('name = "cardco"', 'name = "Card Co"'),
            "psp \"Card Co\" (#1): name: 'Card Co' does not match",
        ),
        (('name = "cardco"', "name = 7"), "psp #1: name: must be a non-empty string"),
        (('connector = "simulator"', 'connector = ""'), "connector: must be a non-empty string"),
        (("timeout_ms = 5000", "timeout_ms = 5000\ntimeout = 5"), "timeout: unknown field"),
        (('"secrets/cardco"', "1"), "webhook_secret_file: must be a non-empty string"),
        (
            ("timeout_ms = 5000", "timeout_ms = 5000\namount_max = 10"),
            "amount_max: must be a decimal string",
        ),
        (
            ("timeout_ms = 5000", 'timeout_ms = 5000\namount_min = "-1"'),
            "amount_min: must be a decimal of 0 or more",
        ),
        (("timeout_ms = 5000", 'timeout_ms = 5000\namount_min = "x"'), "amount_min: not a decimal"),
    ],
)
def test_bad_fields_name_the_psp_and_the_field(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    assert message in error(GOOD.replace(old, new, 1))


def test_amount_rules_reach_routing() -> None:
    (psp,) = parse(GOOD.replace("timeout_ms = 5000", 'timeout_ms = 5000\namount_max = "500.00"'))
    assert psp.amount_max == Decimal("500.00") and psp.amount_min is None
    assert psp.info().amount_max == Decimal("500.00")


def test_bad_files() -> None:
    assert "not valid TOML" in error("[[psp]\nname=")
    assert "no [[psp]] table" in error("")
    assert "no [[psp]] table" in error("psp = 1")
    assert "unknown top-level key 'psps'" in error("[[psps]]\nname = 'x'")
    assert 'psp "cardco" (#2): name: defined twice' in error(GOOD + GOOD)
    second = GOOD.replace("cardco", "other").replace("priority = 1", "priority = 'x'")
    assert 'psps.toml: psp "other" (#2): priority' in error(GOOD + second)


def test_connectors_come_from_entry_points(tmp_path: Path) -> None:
    assert ENTRY_POINT_GROUP == "paystream.psp_connectors"
    assert "simulator" in connector_names()
    psps = parse_psps(embedded_psps_toml(PORTS, tmp_path), "psps.toml", tmp_path)
    built = build_connectors(psps)
    assert list(built) == list(PORTS)
    assert all(isinstance(c, SimulatorConnector) for c in built.values())
    assert built["bankco"].name == "bankco"
    acme = parse(GOOD.replace('connector = "simulator"', 'connector = "acme"'))
    with pytest.raises(UnknownConnector, match=r'psp "cardco": connector: .*\'acme\'.*simulator'):
        build_connectors(acme)


def test_pyproject_declares_the_simulator_connector() -> None:
    doc = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    group = doc["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert group["simulator"] == "connectors.psp.simulator:SimulatorConnector"
