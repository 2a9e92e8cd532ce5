"""``paystream send``: commands from a JSON-lines file (or stdin), or one from the command line.

A file is streamed line by line with bounded memory: a line longer than
``Limits.command_bytes_max`` is refused without ever being held whole. Every refused line is
reported on stderr as ``path:line: code: message`` and kept on the dead-letter topic, so a
bulk load can be audited and the bad lines replayed once fixed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, Protocol, TextIO

from base.config import Settings
from producers.commands import parse_command, parse_line, with_command_id
from producers.errors import TOO_LONG, InvalidCommand
from producers.producer import CommandProducer

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

log = logging.getLogger(__name__)

STDIN: Final = "-"
# librdkafka fails a message after message.timeout.ms (300 s by default); wait a bit longer
# so that every record ends delivered or failed, never unknown.
FLUSH_TIMEOUT_S: Final = 330.0
_UTF8_BOM: Final = b"\xef\xbb\xbf"
# Progress is redrawn at most this often (rich refreshes on its own thread anyway).
_PROGRESS_EVERY_S: Final = 0.1
_DISCARD_CHUNK_BYTES: Final = 64 * 1024


@dataclass(frozen=True, slots=True)
class SendReport:
    sent: int  # valid commands handed to the producer
    invalid: int  # lines (or commands) refused
    failed: int  # records (commands or dead letters) the broker never acknowledged
    command_ids_generated: int = 0

    @property
    def exit_code(self) -> int:
        """0: all valid and delivered; 2: some lines invalid; 1: a delivery failed."""
        if self.failed:
            return 1
        if self.invalid:
            return 2
        return 0


class _BinaryLines(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def send_file(
    settings: Settings,
    path: str,
    *,
    progress: bool = True,
    force_progress: bool = False,
    err: TextIO | None = None,
    producer: CommandProducer | None = None,
) -> SendReport:
    """Send every command of a JSON-lines file (``"-"``: stdin); blank lines are skipped.

    A missing ``command_id`` is an error here: a bulk file must be replayable without paying
    twice. ``progress`` shows a bar on ``err`` when it is a terminal (``force_progress``: in
    any case). ``err`` defaults to ``sys.stderr`` as it is at call time.
    """
    err = sys.stderr if err is None else err
    limits = settings.limits
    max_bytes = limits.command_bytes_max
    own = producer is None
    prod = (
        producer if producer is not None else CommandProducer(settings, client_id="paystream-send")
    )
    failed_before = prod.failed
    sent = invalid = 0
    try:
        with _open_input(path) as (stream, size):
            show = progress and (force_progress or _isatty(err))
            with _progress_bar(err, path, size, show, force_progress) as (bar, task):
                say = _printer(err, bar)
                next_draw = 0.0
                done_bytes = 0
                for lineno, line, consumed, overflow in _lines(stream, max_bytes):
                    done_bytes += consumed
                    if bar is not None and task is not None:
                        now = time.monotonic()
                        if now >= next_draw:
                            next_draw = now + _PROGRESS_EVERY_S
                            bar.update(task, completed=done_bytes if size else lineno)
                    if lineno == 1 and line.startswith(_UTF8_BOM):
                        line = line[len(_UTF8_BOM) :]
                    if not line.strip():
                        continue
                    try:
                        if overflow:
                            raise InvalidCommand(TOO_LONG, f"line has more than {max_bytes} bytes")
                        cmd = parse_line(line, limits)
                    except InvalidCommand as exc:
                        invalid += 1
                        say(f"{path}:{lineno}: {exc.code}: {exc.message}")
                        prod.send_dead_letter(
                            f"cli:{path}:{lineno}", exc.message, exc.code, line[:max_bytes]
                        )
                        continue
                    prod.send(cmd)
                    sent += 1
                if bar is not None and task is not None:
                    bar.update(task, completed=done_bytes if size else lineno)
                remaining = prod.flush(FLUSH_TIMEOUT_S)
    finally:
        if own:
            prod.close(0)
    failed = prod.failed - failed_before + remaining
    report = SendReport(sent=sent, invalid=invalid, failed=failed)
    log.info("sent %s: %s", path, report)
    return report


def send_one(
    settings: Settings,
    type: str,
    fields: Mapping[str, str],
    *,
    producer: CommandProducer | None = None,
) -> tuple[str, SendReport]:
    """Send one command built from ``fields``; returns ``(command_id, report)``.

    A missing ``command_id`` gets a fresh UUID4, returned so the caller can print it.
    Raises :class:`InvalidCommand` for a bad command (nothing is sent, nothing dead-lettered:
    the person typing it gets the error straight away).
    """
    obj = with_command_id({**fields, "type": type})
    cmd = parse_command(obj, settings.limits)
    own = producer is None
    prod = (
        producer if producer is not None else CommandProducer(settings, client_id="paystream-send")
    )
    failed_before = prod.failed
    try:
        prod.send(cmd)
        remaining = prod.flush(FLUSH_TIMEOUT_S)
    finally:
        if own:
            prod.close(0)
    report = SendReport(
        sent=1,
        invalid=0,
        failed=prod.failed - failed_before + remaining,
        command_ids_generated=0 if "command_id" in fields else 1,
    )
    return cmd.command_id, report


# -- input -------------------------------------------------------------------------------------


def _lines(stream: _BinaryLines, max_bytes: int) -> Iterator[tuple[int, bytes, int, bool]]:
    """Yields ``(line number, line without terminator, bytes consumed, too long)``.

    A too-long line yields only its first ``max_bytes`` bytes; the rest is read in chunks and
    dropped, so memory stays bounded whatever the input.
    """
    limit = max_bytes + 2  # room for "\r\n" after a line of exactly max_bytes
    lineno = 0
    while True:
        chunk = stream.readline(limit)
        if not chunk:
            return
        lineno += 1
        consumed = len(chunk)
        if chunk.endswith(b"\n") or len(chunk) < limit:
            yield lineno, chunk.rstrip(b"\r\n"), consumed, False
            continue
        while True:
            rest = stream.readline(_DISCARD_CHUNK_BYTES)
            consumed += len(rest)
            if not rest or rest.endswith(b"\n"):
                break
        yield lineno, chunk[:max_bytes], consumed, True


class _TextAsBinary:
    """Binary ``readline`` over a text stream (a ``sys.stdin`` replaced by a StringIO)."""

    def __init__(self, text: IO[str]) -> None:
        self._text = text

    def readline(self, size: int = -1, /) -> bytes:
        return self._text.readline(size).encode("utf-8", "surrogateescape")


@contextlib.contextmanager
def _open_input(path: str) -> Iterator[tuple[_BinaryLines, int | None]]:
    """The input as a binary line reader, and its size when it is a regular file."""
    if path == STDIN:
        stdin = sys.stdin
        buffer = getattr(stdin, "buffer", None)
        yield (buffer if buffer is not None else _TextAsBinary(stdin)), _size_of(stdin)
        return
    with open(path, "rb") as fh:
        yield fh, _size_of(fh)


def _size_of(stream: IO[Any]) -> int | None:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) and st.st_size > 0 else None


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (ValueError, AttributeError):  # closed, or not a real file
        return False


# -- output ------------------------------------------------------------------------------------


@contextlib.contextmanager
def _progress_bar(
    err: TextIO, path: str, size: int | None, show: bool, force: bool
) -> Iterator[tuple[Progress | None, TaskID | None]]:
    if not show:
        yield None, None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(file=err, force_terminal=True if force else None)
    name = "stdin" if path == STDIN else os.path.basename(path)
    if size:
        columns: tuple[Any, ...] = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
    else:
        columns = (
            TextColumn("{task.description}"),
            TextColumn("{task.completed:,.0f} lines"),
            TimeElapsedColumn(),
        )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"sending {name}", total=size)
        yield bar, task


def _printer(err: TextIO, bar: Progress | None) -> Callable[[str], None]:
    if bar is None:

        def say(message: str) -> None:
            err.write(message + "\n")

        return say

    def say_above_bar(message: str) -> None:
        # Through rich, so the line lands above the bar instead of through it.
        bar.console.print(message, markup=False, highlight=False, emoji=False, soft_wrap=True)

    return say_above_bar


__all__ = ["FLUSH_TIMEOUT_S", "STDIN", "SendReport", "send_file", "send_one"]
