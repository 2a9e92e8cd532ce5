"""Errors of the wallet: each is an ``ApiError`` with the answer it becomes."""

from __future__ import annotations

from paystream.api.errors import ApiError


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "invalid_field", message, field)


def session_required() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "a user's session is needed: Authorization: Bearer <token> or the session cookie",
        headers={"WWW-Authenticate": 'Bearer realm="paystream"'},
    )


def user_only() -> ApiError:
    return ApiError(
        403, "user_session_required", "this endpoint acts for a user: use their session"
    )


def csrf_refused() -> ApiError:
    return ApiError(
        403,
        "csrf_token_invalid",
        "a write with the session cookie needs the X-CSRF-Token header from POST /v1/session",
        "X-CSRF-Token",
    )


def login_failed() -> ApiError:
    # One body for a wrong password and for an unknown username.
    return ApiError(
        401,
        "invalid_credentials",
        "the username or the password is wrong",
        headers={"WWW-Authenticate": 'Bearer realm="paystream"'},
    )


def locked_out(retry_after_s: int) -> ApiError:
    return ApiError(
        429,
        "too_many_failures",
        "too many failed log-ins for this username or address; retry later",
        headers={"Retry-After": str(retry_after_s)},
    )


def unavailable(message: str) -> ApiError:
    return ApiError(503, "unavailable", message)


class NotDecidedInTime(Exception):
    """The users workers did not decide a request before the deadline (the API answers 503)."""
