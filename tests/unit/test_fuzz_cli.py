"""Fuzzing ``paystream send --file`` in-process, through the real argparse entry point.

The Kafka producer is replaced by a recorder (no broker: tests/integration/test_hostile.py
runs the same against a real one). Every hostile line must give exit code 2, one
``path:line: code: message`` on stderr and one dead-letter record; valid lines are sent.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import producers.send
from base.config import Limits
from paystream import cli
from producers.commands import Command, parse_line
from producers.errors import CODES, TOO_LONG, InvalidCommand
from tests.fuzz.strategies import json_lines

LIMITS = Limits()
VALID = b'{"type":"deposit","command_id":"ok-%d","account":"acct-1","amount":"1.00"}'


class RecordingProducer:
    """Stands in for CommandProducer: remembers what would have gone to Kafka."""

    instances: list[RecordingProducer] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[Command] = []
        self.dead: list[tuple[str, str, str, bytes]] = []
        self.failed = 0
        RecordingProducer.instances.append(self)

    def send(self, cmd: Command, on_delivery: Any = None) -> None:
        self.sent.append(cmd)

    def send_dead_letter(self, source: str, reason: str, code: str, payload: bytes) -> None:
        self.dead.append((source, reason, code, payload))

    def flush(self, timeout_s: float = 30.0) -> int:
        return 0

    def close(self, timeout_s: float = 30.0) -> int:
        return 0


@pytest.fixture(autouse=True)
def no_kafka(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setattr(producers.send, "CommandProducer", RecordingProducer)
    monkeypatch.setenv("PAYSTREAM_HOME", str(tmp_path_factory.mktemp("home")))
    monkeypatch.setenv("PAYSTREAM_BOOTSTRAP", "127.0.0.1:1")  # never contacted


def run_send(path: Path | str, stdin: bytes | None = None) -> tuple[int, str, RecordingProducer]:
    RecordingProducer.instances.clear()
    err = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stderr(err))
        if stdin is not None:
            fake = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
            stack.enter_context(_replace(sys, "stdin", fake))
        code = cli.main(["send", "--file", str(path), "--no-progress"])
    (producer,) = RecordingProducer.instances
    return code, err.getvalue(), producer


@contextlib.contextmanager
def _replace(obj: Any, name: str, value: Any) -> Any:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def expected(lines: list[bytes]) -> tuple[dict[int, str], int]:
    """(line number -> error code for every refused line, count of valid lines)."""
    bad: dict[int, str] = {}
    good = 0
    for n, line in enumerate(lines, 1):
        if n == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        line = line.rstrip(b"\r")
        if not line.strip():
            continue
        try:
            parse_line(line, LIMITS)
            good += 1
        except InvalidCommand as exc:
            bad[n] = exc.code
    return bad, good


def check(path: Path | str, lines: list[bytes], stdin: bytes | None = None) -> None:
    code, err, producer = run_send(path, stdin)
    bad, good = expected(lines)
    assert code == (2 if bad else 0), err
    errors = err.splitlines()
    assert errors[-1] == f"sent {good}, invalid {len(bad)}, failed 0"
    pattern = re.compile(rf"^{re.escape(str(path))}:(\d+): ([a-z_]+): .+")
    reported = {}
    for e in errors[:-1]:
        match = pattern.match(e)
        assert match is not None, e
        reported[int(match.group(1))] = match.group(2)
    assert reported == bad
    assert len(producer.sent) == good
    assert [d[0] for d in producer.dead] == [f"cli:{path}:{n}" for n in bad]
    for (_, reason, dcode, payload), n in zip(producer.dead, bad, strict=True):
        assert dcode in CODES and dcode == bad[n]
        assert reason
        assert len(payload) <= LIMITS.command_bytes_max


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.one_of(json_lines(), st.integers(0, 99).map(lambda i: VALID % i)), max_size=12))
def test_send_a_file_of_hostile_lines(tmp_path: Path, lines: list[bytes]) -> None:
    path = tmp_path / "hostile.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    check(path, lines)


def test_a_huge_line_is_refused_without_being_read_whole(tmp_path: Path) -> None:
    huge = json.dumps({"type": "deposit", "command_id": "x" * (1 << 20), "account": "a"})
    lines = [VALID % 1, huge.encode(), b"\x00\xff\xfe", VALID % 2, b"", b"   ", b"[1,2"]
    path = tmp_path / "huge.jsonl"
    path.write_bytes(b"\r\n".join(lines))
    code, err, producer = run_send(path)
    assert code == 2
    assert f"{path}:2: {TOO_LONG}: line has more than {LIMITS.command_bytes_max} bytes" in err
    assert [d[0].rsplit(":", 1)[1] for d in producer.dead] == ["2", "3", "7"]
    assert len(producer.dead[0][3]) == LIMITS.command_bytes_max
    assert [c.command_id for c in producer.sent] == ["ok-1", "ok-2"]


def test_stdin_with_hostile_bytes() -> None:
    lines = [b"\xef\xbb\xbf" + VALID % 1, b"\xc3\x28", b'{"type":"deposit"}', VALID % 2]
    check("-", lines, stdin=b"\n".join(lines))


@pytest.mark.parametrize(
    "fields",
    [
        ["--account", "a\x00b", "--amount", "1"],
        ["--account", "x" * 200, "--amount", "1"],
        ["--account", "a", "--amount", "1", "--command-id", "\x1b[31m"],
        ["--account", "a"],
    ],
)
def test_send_one_hostile_flags(fields: list[str]) -> None:
    RecordingProducer.instances.clear()
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(["send", "deposit", *fields])
    assert code == 2
    assert re.match(r"^paystream send: ([a-z_]+): ", err.getvalue()).group(1) in CODES  # type: ignore[union-attr]
    assert not RecordingProducer.instances  # refused before a producer is even made
