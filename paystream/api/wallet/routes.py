"""The wallet's endpoints (a public contract; docs/wallet.md): ``/v1/user``, ``/v1/session``,
``/v1/account``, ``/v1/transfer``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse

from paystream.api.errors import ApiError
from paystream.api.models import ErrorBody

from .access import Session, user_of, wallet_of
from .models import (
    TRANSFER_ID_PATTERN,
    AccountView,
    IdempotencyKey,
    LogInBody,
    SignedUp,
    SignUpBody,
    TransferAdmitted,
    TransferBody,
    TransferView,
)
from .models import (
    Session as SessionBody,
)
from .readside import ReadSideDown
from .service import iso
from .sessions import clear_cookie_header, cookie_secure, set_cookie_header

router = APIRouter(tags=["wallet"])

_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "Present (true) when this is the original answer to an earlier request.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in statuses}
    out["default"] = {"model": ErrorBody, "description": "Any other error"}
    return out


def _secure(request: Request) -> bool:
    server = request.scope.get("server")
    host = server[0] if server else None
    return cookie_secure(request.app.state.wallet_cookie_secure, request.url.scheme, host)


@router.post(
    "/v1/user",
    status_code=201,
    response_model=SignedUp,
    responses=_errors(400, 409, 413, 503),
    summary="Sign up: the user and their one account",
)
async def sign_up(body: SignUpBody, request: Request) -> dict[str, str]:
    """Creates the user and opens their one ledger account (default USD). A taken username
    or email: 409 `username_taken` / `email_taken` (the first sign-up in the log wins, across
    API processes). A password under 12 characters or a common one: 400 with the field."""
    return await wallet_of(request).sign_up(body)


@router.post(
    "/v1/session",
    response_model=SessionBody,
    responses={
        200: {
            "headers": {
                "Set-Cookie": {
                    "description": "The token as an HttpOnly cookie.",
                    "schema": {"type": "string"},
                }
            }
        },
        **_errors(400, 401, 413, 429, 503),
    },
    summary="Log in: a session token (and cookie)",
)
async def log_in(body: LogInBody, request: Request) -> JSONResponse:
    """A wrong password and an unknown username get the same 401, in the same time. After 5
    failures in 15 minutes for a username or an address: 429 with `Retry-After`."""
    wallet = wallet_of(request)
    client = request.client.host if request.client else "unknown"
    issued = await wallet.log_in(body.username, body.password, client)
    answer = {
        "token": issued.token,
        "csrf_token": issued.csrf_token,
        "expires_at": iso(issued.expires_at * 1_000_000),
    }
    cookie = set_cookie_header(issued.token, wallet.sessions.ttl_s, _secure(request))
    return JSONResponse(answer, 200, {"Set-Cookie": cookie})


@router.delete(
    "/v1/session",
    status_code=204,
    response_class=Response,
    responses=_errors(401, 403, 503),
    summary="Log out: the token is refused from now on, by every API process",
)
async def log_out(request: Request, claims: Session) -> Response:
    await wallet_of(request).log_out(claims)
    return Response(status_code=204, headers={"Set-Cookie": clear_cookie_header(_secure(request))})


@router.get(
    "/v1/account",
    response_model=AccountView,
    responses=_errors(401, 403, 503),
    summary="My account: balance, available, status, the last 20 transactions",
)
async def account(request: Request, claims: Session) -> dict[str, Any]:
    wallet = wallet_of(request)
    try:
        return await wallet.account_view(user_of(request, claims))
    except ReadSideDown as exc:
        raise ApiError(503, "unavailable", str(exc)) from None


@router.post(
    "/v1/transfer",
    status_code=201,
    response_model=None,
    responses={
        201: {
            "model": TransferAdmitted,
            "description": "Admitted (or the original answer, replayed)",
            "headers": _REPLAYED,
        },
        **_errors(400, 401, 403, 404, 413, 422, 503),
        409: {"model": ErrorBody, "description": "Conflict"},
    },
    summary="Send money to another user (idempotent by Idempotency-Key)",
)
async def transfer(
    body: TransferBody,
    request: Request,
    claims: Session,
    idempotency_key: Annotated[
        IdempotencyKey,
        Header(alias="Idempotency-Key", description="The client's key for this transfer."),
    ],
) -> JSONResponse:
    """Moves `amount` from the caller's account to that user's, through the ledger's two-phase
    transfer. The same key and body again: the original answer with `Idempotent-Replayed:
    true`, even after a restart; the same key with another body: 422
    `idempotency_key_reused`; while this process admits it: 409 `request_in_progress`. The
    outcome follows at `GET /v1/transfer/{id}`."""
    wallet = wallet_of(request)
    status, answer, replayed = await wallet.transfer(
        user_of(request, claims), idempotency_key, body
    )
    headers = {"Idempotent-Replayed": "true"} if replayed and status != 422 else None
    return JSONResponse(answer, status, headers)


@router.get(
    "/v1/transfer/{transfer_id}",
    response_model=TransferView,
    responses=_errors(401, 403, 404, 503),
    summary="A transfer's outcome: pending, posted, voided or rejected (with the reason)",
)
async def transfer_status(transfer_id: str, request: Request, claims: Session) -> dict[str, Any]:
    """Only the sender and the receiver see a transfer (404 for anyone else)."""
    import re

    if not re.fullmatch(TRANSFER_ID_PATTERN[1:-1], transfer_id):
        raise ApiError(404, "transfer_not_found", "no such transfer of yours")
    try:
        return await wallet_of(request).transfer_view(user_of(request, claims), transfer_id)
    except ReadSideDown as exc:
        raise ApiError(503, "unavailable", str(exc)) from None
