"""Every error as ``{"error": <code>, "message": ..., "field"?: ...}``, never a stack trace."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .errors import ApiError, ViewFailed
from .middleware import SECURITY_HEADERS
from .models import FIELD_RULES

# A client-chosen field name is echoed back: at most this much of it.
_FIELD_CHARS_MAX = 64
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_BODY_ERRORS = {"json_invalid": "the body is not valid JSON"}


def invalid_field(errors: Sequence[Any]) -> ApiError:
    """The first of pydantic's errors as a 400 ``invalid_field`` naming the field (never
    echoing its value)."""
    e = errors[0] if errors else {"loc": ("body",), "type": "missing"}
    loc = tuple(e.get("loc", ()))
    kind = str(e.get("type", ""))
    if kind in _BODY_ERRORS or len(loc) < 2:
        message = _BODY_ERRORS.get(kind, "the body must be a JSON object")
        return ApiError(400, "invalid_field", message, "body")
    # A header's error is the one header a route reads; a body's names its field.
    field = "Idempotency-Key" if loc[0] == "header" else str(loc[1])[:_FIELD_CHARS_MAX]
    if kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        message = f"{field} is not a field of this request"
    else:
        message = FIELD_RULES.get(field, f"{field} is invalid")
    return ApiError(400, "invalid_field", message, field)


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(invalid_field(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    message = exc.detail if isinstance(exc.detail, str) else code
    return JSONResponse(
        {"error": code, "message": message[:200]},
        status_code=exc.status_code,
        headers=exc.headers,
    )


async def _view_failed(request: Request, exc: Exception) -> JSONResponse:
    return error_response(ApiError(503, "unavailable", "the API is restarting; retry"))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette serves this outside every middleware: the security headers are added here.
    # (The exception is then re-raised to the server, which logs it with its traceback.)
    return JSONResponse(
        {"error": "internal_error", "message": "internal error"},
        status_code=500,
        headers=SECURITY_HEADERS,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(ViewFailed, _view_failed)
    app.add_exception_handler(Exception, _internal_error)
