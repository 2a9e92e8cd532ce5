"""The API process: uvicorn serving ``create_app`` on 127.0.0.1:``settings.api_port``."""

from __future__ import annotations

import logging

import uvicorn

from base.config import Settings

from .app import create_app
from .errors import ViewFailed

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def run_api(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (0). A view that stops following the changelog stops the
    server and raises ViewFailed, so the process restarts (the caller's policy)."""
    failures: list[BaseException] = []
    server: uvicorn.Server | None = None

    def on_fatal(exc: BaseException) -> None:
        failures.append(exc)
        if server is not None:
            server.should_exit = True  # read by uvicorn's loop: safe from another thread

    app = create_app(settings, on_fatal=on_fatal)
    config = uvicorn.Config(
        app,
        host=HOST,
        port=settings.api_port,
        log_config=None,  # the process's logging, as configured by its entry point
        access_log=False,  # one line per admission instead (paystream.api.admission)
        server_header=False,
        proxy_headers=False,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    log.info("payment API on http://%s:%d", HOST, settings.api_port)
    server.run()
    if failures:
        raise ViewFailed(f"the view stopped following the changelog: {failures[0]}")
    if not server.started:
        return 1  # could not start (port taken, broker unreachable): uvicorn logged why
    return 0
