"""The API process: uvicorn serving ``create_app`` on 127.0.0.1:``settings.api_port``."""

from __future__ import annotations

import logging

import uvicorn

from base.config import Settings

from .app import create_app
from .errors import ViewFailed

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# sysexits.h "try again later": the process runner (paystream.bootstrap) restarts on it.
EX_TEMPFAIL = 75


def run_api(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT (0). A start that fails (the broker or the topics not there
    yet) returns EX_TEMPFAIL; a view that stops following the changelog stops the server and
    raises ViewFailed. Either way the caller's policy restarts the process."""
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
    log.info("payment API starting on http://%s:%d", HOST, settings.api_port)
    try:
        server.run()
    except SystemExit:
        # uvicorn exits when its startup fails (port taken, broker or topics not there yet).
        if server.started:
            raise
    if failures:
        raise ViewFailed(f"the view stopped following the changelog: {failures[0]}")
    if not server.started:
        log.error("the payment API could not start (see above); try again later")
        return EX_TEMPFAIL
    return 0
