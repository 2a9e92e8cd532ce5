"""The PSP simulator as the platform sees it: a real `python -m pspsim` subprocess on free
ports, and a small aiohttp webhook receiver in a thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
ALL_PSPS = ("cardco", "bankco", "walletco", "backupcard")


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Simulator:
    """`python -m pspsim` with every PSP on port 0; `ports` is read back from ports.json."""

    def __init__(self, state_dir: Path, extra_args: list[str]) -> None:
        self.state_dir = state_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}
        self.log = state_dir.parent / f"{state_dir.name}.log"

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports_json = self.state_dir / "ports.json"
        ports_json.unlink(missing_ok=True)
        args = [sys.executable, "-m", "pspsim", "--state-dir", str(self.state_dir)]
        for psp in ALL_PSPS:
            args += ["--psp", f"{psp}=0"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*args, *self.extra_args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip

        def ready() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
            return ports_json.exists()

        wait_until(ready, 20, "ports.json")
        self.ports = json.loads(ports_json.read_text())

    def url(self, psp: str) -> str:
        return f"http://127.0.0.1:{self.ports[psp]}"

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Delivery:
    headers: dict[str, str]
    body: str

    @property
    def payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc


@dataclass
class WebhookReceiver:
    """Records every POST; answers 500 to the first `failures[(token, type)]` deliveries."""

    deliveries: list[Delivery] = field(default_factory=list)
    failures: dict[tuple[str, str], int] = field(default_factory=dict)
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    async def _handle(self, request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        self.deliveries.append(Delivery(dict(request.headers), body))
        doc = json.loads(body)
        key = (doc["data"]["token"], doc["type"])
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            return web.Response(status=500)
        return web.Response(status=204)

    def start(self) -> None:
        started = threading.Event()

        async def serve() -> None:
            app = web.Application()
            app.router.add_post("/hooks", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = self._runner.addresses[0][1]
            started.set()

        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, daemon=True).start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop)
        assert started.wait(10)

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def for_token(self, token: str) -> list[Delivery]:
        return [d for d in list(self.deliveries) if d.payload["data"]["token"] == token]
