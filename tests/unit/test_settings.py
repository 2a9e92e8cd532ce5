"""Settings: every PAYSTREAM_* variable is read once, and a child process reads the same back."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from base.config import KafkaSecurity, Settings, load_settings, settings_env
from base.logs import configure_logging


def test_a_child_loads_exactly_the_settings_of_its_parent(tmp_path: Path) -> None:
    s = Settings(
        home=tmp_path,
        bootstrap="127.0.0.1:1234",
        topic_prefix="t1.",
        partitions=3,
        brokers=3,
        broker_port_base=19092,
        clickhouse_dsn="http://u:p@h:8123/db",
        processing_guarantee="at_least_once",
        kafka_security=KafkaSecurity("SASL_SSL", "SCRAM-SHA-512", "me", "pw", "/ca.pem"),
        api_token="tok",
        warehouse_port=18123,
        readside_port=16066,
        detector_max_hops=5,
        detector_window_s=3600.5,
        readside_writer="plain",
        log_level="DEBUG",
        exit_with_parent=True,
        kafka_libs=tmp_path / "libs",
        api_cors_origins=("https://wallet.example.com", "https://app.example.com"),
        api_cookie_secure=True,
    )
    assert load_settings(settings_env(s)) == s


def test_defaults_round_trip_and_nothing_inherited_leaks(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, bootstrap=None)
    # A parent environment with everything set must not show through the child's.
    inherited = settings_env(
        s.with_(bootstrap="elsewhere:9092", api_token="x", clickhouse_dsn="http://x")
    )
    assert load_settings({**inherited, **settings_env(s)}) == s


def test_every_variable_of_settings_env_is_read_by_load_settings(tmp_path: Path) -> None:
    env = settings_env(Settings(home=tmp_path, bootstrap=None))
    assert all(k.startswith("PAYSTREAM_") for k in env)
    for key in env:  # each changes what load_settings returns
        odd = {"PAYSTREAM_LOG_LEVEL": "ERROR", "PAYSTREAM_TEST_FAULTS": "1"}
        odd["PAYSTREAM_API_COOKIE_SECURE"] = "1"
        changed = {**env, key: odd.get(key, "7")}
        assert load_settings(changed) != load_settings(env), key


def test_logging_takes_the_level_of_the_settings(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        configure_logging(Settings(home=tmp_path, bootstrap=None, log_level="ERROR"))
        assert root.level == logging.ERROR
        configure_logging("debug")
        assert root.level == logging.DEBUG and len(root.handlers) == 1
        assert logging.getLogger("aiokafka").level == logging.WARNING
        with pytest.raises(ValueError):
            configure_logging("LOUD")
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
