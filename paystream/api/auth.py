"""Who is calling: ``Authorization: Bearer <token>`` -> a ``Principal``, or 401.

Today one kind of caller: the service token (``base.config.api_token``), as an edge router
holds it, acting for any user (scope ``service``). The wallet adds users' own tokens (scope
``user:<id>``) by adding an ``Authenticator`` to the app's list; the routes only see the
``Principal``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Protocol

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import ApiError

SERVICE_SCOPE = "service"
USER_SCOPE_PREFIX = "user:"

# Declares the scheme in /openapi.json; the check itself is ours (our 401 body).
bearer_scheme = HTTPBearer(auto_error=False, description="The service token (or, later, a user's).")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``scope`` also scopes its idempotency keys."""

    scope: str
    user_id: str | None = None  # set for a user's own token

    @staticmethod
    def service() -> Principal:
        return Principal(SERVICE_SCOPE)

    @staticmethod
    def user(user_id: str) -> Principal:
        return Principal(USER_SCOPE_PREFIX + user_id, user_id)

    def may_act_for(self, user_id: str) -> bool:
        """The service acts for every user; a user only for themself."""
        return self.user_id is None or self.user_id == user_id


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
) -> Principal:
    """The FastAPI dependency of every protected route."""
    authenticators: tuple[Authenticator, ...] = request.app.state.authenticators
    return authenticate(authenticators, credentials.credentials if credentials else None)
