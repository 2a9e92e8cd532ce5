"""Who is calling: ``Authorization: Bearer <token>`` -> a ``Principal``, or 401.

Two kinds of caller: the service token (``base.config.api_token``), as an edge router holds
it, acting for any user (scope ``service``); and a user with their own session token (scope
``user:<id>``; the wallet's ``SessionTokens`` authenticator in the app's list), acting for
themself and their one account only. A user's session may also come as the session cookie
(``app.state.cookie_principal``, set by the wallet: it also checks the CSRF token of a
write). The routes only see the ``Principal``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError

SERVICE_SCOPE = "service"
USER_SCOPE_PREFIX = "user:"

# Declares the scheme in /openapi.json; the check itself is ours (our 401 body).
bearer_scheme = HTTPBearer(
    auto_error=False, description="The service token, or a user's session token (POST /v1/session)."
)
# A user's session cookie (POST /v1/session sets it); a write with it needs X-CSRF-Token.
cookie_scheme = APIKeyCookie(
    name="paystream_session", auto_error=False, description="A user's session cookie."
)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``scope`` also scopes its idempotency keys."""

    scope: str
    user_id: str | None = None  # set for a user's own token
    account: str | None = None  # the user's one ledger account, when they have one

    @staticmethod
    def service() -> Principal:
        return Principal(SERVICE_SCOPE)

    @staticmethod
    def user(user_id: str, account: str | None = None) -> Principal:
        return Principal(USER_SCOPE_PREFIX + user_id, user_id, account)

    def may_act_for(self, user_id: str) -> bool:
        """The service acts for every user; a user only for themself."""
        return self.user_id is None or self.user_id == user_id

    def may_use_account(self, account: str) -> bool:
        """The service uses every account; a user only their own."""
        return self.user_id is None or (self.account is not None and self.account == account)


class Authenticator(Protocol):
    def authenticate(self, token: str) -> Principal | None:
        """The caller this token proves, or None if it proves nothing to this authenticator."""
        ...


class ServiceToken:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the service token is empty")
        self._token = token.encode("utf-8", "surrogateescape")

    def authenticate(self, token: str) -> Principal | None:
        given = token.encode("utf-8", "surrogateescape")
        return Principal.service() if hmac.compare_digest(given, self._token) else None


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "Authorization: Bearer <token> is missing or wrong",
        headers={"WWW-Authenticate": 'Bearer realm="paystream"'},
    )


def authenticate(authenticators: tuple[Authenticator, ...], token: str | None) -> Principal:
    if token:
        for a in authenticators:
            principal = a.authenticate(token)
            if principal is not None:
                return principal
    raise unauthorized()


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    cookie: Annotated[str | None, Depends(cookie_scheme)],
) -> Principal:
    """The FastAPI dependency of every protected route: the bearer token, else a user's
    session cookie (when the wallet is installed)."""
    authenticators: tuple[Authenticator, ...] = request.app.state.authenticators
    by_cookie = getattr(request.app.state, "cookie_principal", None)
    if credentials is None and cookie and by_cookie is not None:
        found: Principal | None = by_cookie(request, cookie)
        if found is not None:
            return found
    return authenticate(authenticators, credentials.credentials if credentials else None)
