"""The wallet (issue 12, docs/wallet.md): sign-up, log-in and -out, my account, transfers
between users, and users' own sessions on the payment API.

``install(app, settings, ...)`` is the one line ``create_app`` spends on it: the routes, the
session authenticator and cookie, CORS, and (unless the app runs on fakes) a piece of the
app's lifespan that starts the users view, the read side's client and the sessions.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from base.config import Settings
from paystream.api import models as payment_models

from . import passwords
from .access import UserSessions, cookie_principal
from .keys import KeyRing
from .models import FIELD_RULES
from .readside import ReadSide
from .routes import router
from .sessions import CSRF_HEADER, Sessions


def state_dir(settings: Settings) -> Any:
    return settings.home / "state" / f"api-{settings.api_port}-users"


def install(
    app: FastAPI,
    settings: Settings,
    on_fatal: Callable[[BaseException], None] | None = None,
    running: bool = True,
) -> None:
    """Mount the wallet on the payment API's ``app``; ``running`` false (an app on fakes)
    leaves its endpoints answering 503."""
    for field, rule in FIELD_RULES.items():
        payment_models.FIELD_RULES.setdefault(field, rule)
    app.include_router(router)
    app.state.wallet = None
    app.state.wallet_cookie_secure = settings.api_cookie_secure
    app.state.authenticators = (*app.state.authenticators, UserSessions(app.state))
    app.state.cookie_principal = cookie_principal
    if settings.api_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.api_cors_origins),
            allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", CSRF_HEADER],
            expose_headers=["Idempotent-Replayed", "Retry-After"],
        )
    if not running:
        return
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state, _running(a, settings, on_fatal):
            yield state

    app.router.lifespan_context = lifespan


@asynccontextmanager
async def _running(
    app: FastAPI, settings: Settings, on_fatal: Callable[[BaseException], None] | None
) -> AsyncIterator[None]:
    from .service import Wallet
    from .users_view import UsersView

    limits = settings.limits
    view = UsersView(settings, state_dir(settings), on_failure=on_fatal)
    readside = ReadSide(settings.readside_port, limits.wallet_readside_timeout_s)
    try:
        await asyncio.to_thread(view.start)
        ring = KeyRing(settings.home)
        await asyncio.to_thread(ring.signing)  # the first key, if none exists yet
        # Made now, not at the first unknown username (which would then take twice as long).
        await asyncio.to_thread(passwords.dummy_hash)
        sessions = Sessions(
            ring,
            limits.wallet_session_ttl_s,
            revoked=view.revoked,
            user_exists=lambda user_id: view.user(user_id) is not None,
        )
        sink = app.state.admissions.sink
        app.state.wallet = Wallet(settings, view, sink, sessions, readside)
        yield
    finally:
        app.state.wallet = None
        await readside.close()
        await asyncio.to_thread(view.close)
