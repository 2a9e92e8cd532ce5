"""Who is calling the wallet (and the payment API with a user's session).

* ``Authorization: Bearer <token>`` with a session token: the user, for reads and writes.
* The session cookie: the user too, but a write (any method but GET and HEAD) also needs
  ``X-CSRF-Token`` equal to the token's ``csrf`` claim (given by ``POST /v1/session`` in the
  body, never in a cookie), so a page of another site cannot write with it.
* The service token: the payment API's caller for any user; the wallet's own endpoints act
  for one user and answer it 403.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials

from paystream.api.auth import Authenticator, Principal, bearer_scheme, cookie_scheme
from streams.users import model as um

from . import errors
from .sessions import CSRF_HEADER, Claims, csrf_ok

if TYPE_CHECKING:
    from .service import Wallet

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def wallet_of(request: Request) -> Wallet:
    wallet: Wallet | None = getattr(request.app.state, "wallet", None)
    if wallet is None:
        raise errors.unavailable("the wallet is not running in this API process")
    return wallet


def _principal(wallet: Wallet, claims: Claims) -> Principal | None:
    user = wallet.view.user(claims.user_id)
    return None if user is None else Principal.user(user.user_id, user.account)


class UserSessions:
    """The payment API's ``Authenticator`` for a user's session token (a bearer token)."""

    def __init__(self, request_app_state: object) -> None:
        self._state = request_app_state

    def authenticate(self, token: str) -> Principal | None:
        wallet: Wallet | None = getattr(self._state, "wallet", None)
        claims = None if wallet is None else wallet.sessions.verify(token)
        return None if wallet is None or claims is None else _principal(wallet, claims)


def cookie_principal(request: Request, cookie: str) -> Principal | None:
    """``app.state.cookie_principal``: the payment API's routes accept the session cookie."""
    wallet: Wallet | None = getattr(request.app.state, "wallet", None)
    claims = None if wallet is None else wallet.sessions.verify(cookie)
    if wallet is None or claims is None:
        return None
    if request.method not in SAFE_METHODS and not csrf_ok(claims, request.headers.get(CSRF_HEADER)):
        raise errors.csrf_refused()
    return _principal(wallet, claims)


async def session_claims(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
    x_csrf_token: Annotated[
        str | None,
        Header(
            alias=CSRF_HEADER,
            description="Required for a write made with the session cookie (not with a bearer token).",
        ),
    ] = None,
) -> Claims:
    """The caller's session: a bearer session token, else the cookie (with CSRF on writes)."""
    wallet = wallet_of(request)
    if credentials is not None:
        claims = wallet.sessions.verify(credentials.credentials)
        if claims is not None:
            return claims
        authenticators: tuple[Authenticator, ...] = request.app.state.authenticators
        if any(
            (p := a.authenticate(credentials.credentials)) is not None and p.user_id is None
            for a in authenticators
        ):
            raise errors.user_only()
        raise errors.session_required()
    if cookie:
        claims = wallet.sessions.verify(cookie)
        if claims is not None:
            if request.method not in SAFE_METHODS and not csrf_ok(claims, x_csrf_token):
                raise errors.csrf_refused()
            return claims
    raise errors.session_required()


Session = Annotated[Claims, Depends(session_claims)]


def user_of(request: Request, claims: Claims) -> um.User:
    user = wallet_of(request).view.user(claims.user_id)
    if user is None:  # verify() found it a moment ago; a view never forgets a user
        raise errors.session_required()
    return user
