"""One simulator process: the shared store, one HTTP server per PSP, the completion and
webhook loops, ports.json, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from aiohttp import web

from pspsim.config import SimConfig
from pspsim.delivery import Deliverer
from pspsim.engine import PspEngine
from pspsim.psps import DEFAULT_PSPS
from pspsim.server import PspServer
from pspsim.store import Store
from pspsim.webhooks import load_or_create_secret

log = logging.getLogger("pspsim")


def write_atomically(path: Path, text: str) -> None:
    """A reader sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One server per state directory: two would complete and deliver everything twice."""
    with open(state_dir / "pspsim.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"pspsim: another simulator is serving {state_dir}") from None
        yield


async def _complete_loop(engines: list[PspEngine], interval_s: float) -> None:
    while True:
        for engine in engines:
            try:
                for t in engine.complete_due():
                    log.info("%s: %s completed %s", engine.name, t.token, t.status)
            except Exception:
                log.exception("%s: completing due payments failed (retrying)", engine.name)
        await asyncio.sleep(interval_s)


async def serve(cfg: SimConfig, stop: asyncio.Event | None = None) -> None:
    """Run until `stop` is set (or SIGTERM/SIGINT)."""
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    with state_lock(cfg.state_dir):
        store = Store(cfg.db_path)
        try:
            await _serve(cfg, store, stop or asyncio.Event())
        finally:
            store.close()


async def _serve(cfg: SimConfig, store: Store, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    secrets = {name: load_or_create_secret(cfg.secret_dir, name) for name in cfg.ports}
    deliverer = Deliverer(store, secrets, cfg.limits)
    engines = {
        name: PspEngine(
            DEFAULT_PSPS[name],
            store,
            default_webhook_url=cfg.webhook_urls.get(name),
            seed=cfg.seed,
            on_event=deliverer.wake,
            limits=cfg.limits,
        )
        for name in cfg.ports
    }
    runners: list[web.AppRunner] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        bound: dict[str, int] = {}
        for name, port in cfg.ports.items():
            server = PspServer(
                engines[name],
                deliverer,
                latency_ms=cfg.latency_ms,
                hang_s=cfg.hang_s,
                limits=cfg.limits,
            )
            runner = web.AppRunner(
                server.app(),
                access_log=logging.getLogger("pspsim.access") if cfg.access_log else None,
                shutdown_timeout=cfg.limits.shutdown_timeout_s,
            )
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, "127.0.0.1", port)
            try:
                await site.start()
            except OSError as e:
                raise SystemExit(f"pspsim: cannot bind {name} to 127.0.0.1:{port}: {e}") from None
            bound[name] = runner.addresses[0][1]
        write_atomically(cfg.ports_path, json.dumps(bound) + "\n")
        for name, port in bound.items():
            spec = DEFAULT_PSPS[name]
            log.info(
                "%s listening on http://127.0.0.1:%d (%s; %s; %s)",
                name,
                port,
                "asynchronous" if spec.asynchronous else "synchronous",
                ", ".join(spec.payment_options),
                " ".join(spec.currencies),
                extra={"psp": name, "port": port},
            )
        tasks.append(loop.create_task(deliverer.run()))
        async_engines = [e for e in engines.values() if e.spec.asynchronous]
        tasks.append(loop.create_task(_complete_loop(async_engines, cfg.limits.poll_interval_s)))
        log.info("ready: state in %s, ports in %s", cfg.state_dir, cfg.ports_path)
        await stop.wait()
        log.info("stopping")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for runner in runners:
            await runner.cleanup()
