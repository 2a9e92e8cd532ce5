"""The FastAPI app: routes, and the lifespan that starts the view and the producer."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Header, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse

from base.config import Settings, api_token
from base.topics import TopicNames
from streams.payments.views import payment_view
from streams.payments_agent import IDEMPOTENCY_KEY_CHARS_MAX, PAYMENT_ID

from . import handlers
from .admission import Admissions, Sink
from .admission import View as AdmissionView
from .auth import Authenticator, Principal, ServiceToken, principal
from .errors import ApiError
from .middleware import BodyLimit, SecurityHeaders
from .models import (
    IDEMPOTENCY_KEY_PATTERN,
    ErrorBody,
    Health,
    PaymentBody,
    PaymentView,
    WebhookAnswer,
)
from .reviews import reviews_router
from .schedules import schedule_routes
from .wallet import install as install_wallet
from .webhooks import Webhooks

PAYMENTS_PATH = "/payments/payment/v1"
PSP_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"  # as psps.toml names them
log = logging.getLogger(__name__)


class View(AdmissionView, Protocol):
    """What the app needs of its view (``PaymentsView``; tests may give a fake)."""

    partitions: int
    records_applied: int
    failure: BaseException | None

    def start(self) -> None: ...

    def close(self) -> None: ...


def state_dir(settings: Settings) -> Path:
    """The view's local stores: one directory per API port, so processes never share one."""
    return settings.home / "state" / f"api-{settings.api_port}"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in statuses}
    out["default"] = {"model": ErrorBody, "description": "Any other error"}
    return out


_REPLAYED = {
    "Idempotent-Replayed": {
        "description": "Present (true) when this is the original answer to an earlier request.",
        "schema": {"type": "string", "enum": ["true"]},
    }
}


def create_app(
    settings: Settings,
    *,
    view: View | None = None,
    sink: Sink | None = None,
    authenticators: Sequence[Authenticator] | None = None,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> FastAPI:
    """The payment API. ``view`` and ``sink`` default to the real ones (the changelog view
    and a Kafka producer), made when the app starts; ``on_fatal`` is told if the view fails
    (the server should then stop, and the process restart)."""
    if not settings.bootstrap and (view is None or sink is None):
        from producers.producer import bootstrap_servers  # the embedded broker's address

        settings = settings.with_(bootstrap=bootstrap_servers(settings))
    topics = TopicNames(settings.topic_prefix)
    limits = settings.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        made: list[Any] = []
        try:
            v = view
            if v is None:
                from .view import PaymentsView

                v = PaymentsView(settings, state_dir(settings), on_failure=on_fatal)
                made.append(v)
                await asyncio.to_thread(v.start)
            s = sink
            partitions = v.partitions
            if s is None:
                from .producer import RecordProducer

                producer = RecordProducer(settings)
                made.append(producer)
                producer.start()
                partitions = await asyncio.to_thread(producer.partition_count, topics.payments)
                s = producer
            app.state.view = v
            app.state.webhooks = Webhooks(
                await asyncio.to_thread(_connectors, settings),
                v,
                s,
                topics.payments,
                partitions,
                event_ids_max=limits.api_webhook_event_ids_max,
            )
            app.state.admissions = Admissions(
                v,
                s,
                topics.payments,
                partitions,
                limits.api_admission_timeout_s,
                limits.api_admissions_in_flight_max,
            )
            yield
        finally:
            for thing in reversed(made):
                await asyncio.to_thread(thing.close)

    app = FastAPI(
        title="paystream payment API",
        version="1",
        description="Pay-ins and pay-outs through PSPs (docs/payments.md).",
        docs_url=None,  # no HTML page: every answer keeps the strict CSP
        redoc_url=None,
        openapi_url="/openapi.json",
        redirect_slashes=False,
        lifespan=lifespan,
    )
    app.state.authenticators = tuple(authenticators or (ServiceToken(api_token(settings)),))
    handlers.install(app)
    install_wallet(app, settings, on_fatal, running=view is None)  # docs/wallet.md
    app.add_middleware(BodyLimit, limit_bytes=limits.http_body_bytes_max)
    app.add_middleware(SecurityHeaders)  # outermost: also on the body limit's 413
    _routes(app)
    app.include_router(schedule_routes(settings, start_view=view is None, on_fatal=on_fatal))
    app.include_router(reviews_router(settings, real=view is None))
    return app


Who = Annotated[Principal, Depends(principal)]


def _routes(app: FastAPI) -> None:
    @app.get("/health", response_model=Health, responses={503: {"model": Health}, **_errors()})
    async def health(request: Request) -> JSONResponse:
        """Liveness and the view's progress (no token needed)."""
        view: View = request.app.state.view
        admissions: Admissions = request.app.state.admissions
        body = Health(
            status="ok" if view.failure is None else "failing",
            partitions=view.partitions,
            records_applied=view.records_applied,
            admissions_in_flight=admissions.in_flight,
        )
        return JSONResponse(body.model_dump(), 200 if view.failure is None else 503)

    @app.post(
        PAYMENTS_PATH,
        status_code=201,
        response_model=None,
        responses={
            201: {
                "model": PaymentView,
                "description": "Created (or the original answer, replayed)",
                "headers": _REPLAYED,
            },
            **_errors(400, 401, 403, 413, 422, 503),
            409: {"model": ErrorBody, "description": "Conflict", "headers": _REPLAYED},
        },
        summary="Create a payment (idempotent by Idempotency-Key)",
    )
    async def create_payment(
        body: PaymentBody,
        request: Request,
        who: Who,
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=IDEMPOTENCY_KEY_CHARS_MAX,
                pattern=IDEMPOTENCY_KEY_PATTERN,
                description="The client's key for this payment (e.g. its checkout uuid).",
            ),
        ],
    ) -> JSONResponse:
        """Admits the payment: 201 with it as admitted. The same key and body again gets the
        original answer (status and body) with `Idempotent-Replayed: true`, even after a
        restart; the same key with another body 422 `idempotency_key_reused`; the same key
        while this process admits it 409 `request_in_progress`; a new key for an existing
        payment 409 `payment_exists`; 503 when it was not admitted in time (retry with the
        same key)."""
        if not who.may_act_for(body.user_id):
            raise ApiError(403, "forbidden", "this token may not pay for that user", "user_id")
        if not who.may_use_account(body.to_request().account):
            field = "to_acct" if body.type == "pay_in" else "from_acct"
            raise ApiError(403, "forbidden", "this token may not use that account", field)
        admissions: Admissions = request.app.state.admissions
        result = await admissions.admit(who, idempotency_key, body)
        headers = {"Idempotent-Replayed": "true"} if result.replayed else None
        return JSONResponse(result.answer.body, result.answer.status, headers)

    @app.get(
        PAYMENTS_PATH + "/{payment_id}",
        response_model=None,
        responses={200: {"model": PaymentView}, **_errors(401, 404)},
        summary="A payment, as it stands",
    )
    async def get_payment(payment_id: str, request: Request, who: Who) -> JSONResponse:
        view: View = request.app.state.view
        p = view.payment(payment_id) if PAYMENT_ID.match(payment_id) else None
        if p is None or not who.may_act_for(p.request.user_id):
            raise ApiError(404, "payment_not_found", f"no payment {_shown(payment_id)}")
        return JSONResponse(payment_view(p))

    @app.post(
        "/psp/webhooks/{psp}",
        response_model=None,
        responses={
            200: {"model": WebhookAnswer},
            202: {"model": WebhookAnswer},
            **_errors(401, 404),
        },
        summary="A PSP's webhook (Standard Webhooks signature; no bearer token)",
    )
    async def psp_webhook(
        psp: Annotated[str, PathParam(pattern=PSP_NAME_PATTERN, description="a PSP of psps.toml")],
        request: Request,
    ) -> JSONResponse:
        """Verified by its signature and timestamp (else 401), de-duplicated by event id (200
        ``duplicate``), matched to the order's attempt by its token, and handed to the
        payments workers, who apply it only if it moves the order forward: duplicates, late
        and out-of-order webhooks change nothing."""
        webhooks: Webhooks = request.app.state.webhooks
        got = await webhooks.receive(psp, request.headers, await request.body())
        return JSONResponse(got.body, got.status)


def _connectors(settings: Settings) -> dict[str, Any]:
    """The PSPs' connectors (psps.toml), to verify their webhooks; none without the file."""
    from connectors.psp.config import load_psps, psps_path
    from connectors.psp.errors import PspConfigError
    from connectors.psp.registry import build_connectors

    try:
        return dict(build_connectors(load_psps(psps_path(settings.home))))
    except PspConfigError as exc:
        log.warning("no PSP webhooks: %s", exc)
        return {}


def _shown(value: str) -> str:
    """A client's value, safe to echo: short and printable."""
    short = value[:100]
    return short if re.fullmatch(r"[\x20-\x7e]*", short) else repr(short)[:110]
