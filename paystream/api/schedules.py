"""The scheduled-payment routes: ``/payments/scheduled-payment/v1`` (docs/schedules.md).

An ``APIRouter`` with its own lifespan (FastAPI runs it inside the app's, so the app's
producer and payments view are there): it starts the schedules' view and the service.
``create_app`` includes it with one line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse

from base.config import Limits, Settings
from base.topics import TopicNames
from streams.payments_agent import IDEMPOTENCY_KEY_CHARS_MAX
from streams.schedules.views import summary_view

from .auth import Principal, principal
from .errors import ApiError
from .models import IDEMPOTENCY_KEY_PATTERN, ErrorBody, PaymentTypeName
from .schedule_models import (
    SCHEDULE_ID_PATTERN,
    BackfillBody,
    ScheduleBody,
    ScheduleList,
    ScheduleStatusName,
    ScheduleUpdate,
    ScheduleView,
)
from .schedule_service import ScheduleService

SCHEDULES_PATH = "/payments/scheduled-payment/v1"
log = logging.getLogger(__name__)

Who = Annotated[Principal, Depends(principal)]
_LIMITS = Limits()  # the page bounds are the defaults' (the OpenAPI document states them)
PageSize = Annotated[int, Query(ge=1, le=_LIMITS.schedule_page_max)]
After = Annotated[
    str | None, Query(pattern=SCHEDULE_ID_PATTERN, description="The last id of the page before.")
]
UserFilter = Annotated[str | None, Query(max_length=128)]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in statuses}
    out["default"] = {"model": ErrorBody, "description": "Any other error"}
    return out


def _service(request: Request) -> ScheduleService:
    service: ScheduleService | None = getattr(request.app.state, "schedules", None)
    if service is None:
        raise ApiError(503, "unavailable", "scheduled payments are not served by this process")
    return service


def schedule_routes(
    settings: Settings,
    start_view: bool = True,
    on_fatal: Callable[[BaseException], None] | None = None,
) -> APIRouter:
    """The routes; with ``start_view`` their lifespan follows the schedule store (tests of the
    app with fake views leave it off, or set ``app.state.schedules`` themselves). ``on_fatal``
    is told if the view stops following the store (the server should then stop)."""
    topics = TopicNames(settings.topic_prefix)
    limits = settings.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not start_view:
            yield
            return
        from .schedule_view import SchedulesView

        view = SchedulesView(settings, on_failure=on_fatal)
        await asyncio.to_thread(view.start)
        payments = app.state.view

        def payment_status(pid: str) -> str | None:
            p = payments.payment(pid)
            return None if p is None else str(p.status.value)

        app.state.schedules = ScheduleService(
            view,
            app.state.admissions.sink,
            topics.schedule_commands,
            view.partitions,
            limits.api_admission_timeout_s,
            limits.api_admissions_in_flight_max,
            payment_status,
        )
        try:
            yield
        finally:
            await asyncio.to_thread(view.close)

    router = APIRouter(lifespan=lifespan, tags=["scheduled payments"])

    @router.post(
        SCHEDULES_PATH,
        status_code=201,
        response_model=None,
        responses={
            201: {"model": ScheduleView, "description": "Created (or the original, replayed)"},
            **_errors(400, 401, 403, 409, 413, 422, 503),
        },
        summary="Create a scheduled payment (idempotent by Idempotency-Key)",
    )
    async def create_schedule(
        body: ScheduleBody,
        request: Request,
        who: Who,
        idempotency_key: Annotated[
            str,
            Header(
                alias="Idempotency-Key",
                min_length=1,
                max_length=IDEMPOTENCY_KEY_CHARS_MAX,
                pattern=IDEMPOTENCY_KEY_PATTERN,
            ),
        ],
    ) -> JSONResponse:
        """201 with the schedule as created (status `active`, `next_run_at`). As on payments:
        the same key and body again gets the original answer with `Idempotent-Replayed:
        true`; the same key with another body 422; a schedule id created with another key 409
        `schedule_exists`; an invalid rule, start, zone, amount or account 400 naming it."""
        if not who.may_act_for(body.user_id):
            raise ApiError(403, "forbidden", "this token may not act for that user", "user_id")
        got = await _service(request).create(who, idempotency_key, body)
        log.info("schedule %s: created (%d)", got.body["schedule_id"], got.status)
        headers = {"Idempotent-Replayed": "true"} if got.replayed else None
        return JSONResponse(got.body, got.status, headers)

    @router.get(
        SCHEDULES_PATH,
        response_model=None,
        responses={200: {"model": ScheduleList}, **_errors(400, 401)},
        summary="Schedules, by id, filtered and paginated",
    )
    async def list_schedules(
        request: Request,
        who: Who,
        user_id: UserFilter = None,
        type: PaymentTypeName | None = None,
        status: ScheduleStatusName | None = None,
        limit: PageSize = _LIMITS.schedule_page_default,
        after: After = None,
    ) -> JSONResponse:
        if who.user_id is not None:  # a user's own token lists their own schedules
            if user_id not in (None, who.user_id):
                raise ApiError(403, "forbidden", "this token may not list that user", "user_id")
            user_id = who.user_id
        page, next_after = _service(request).view.page(
            user_id=user_id, type=type, status=status, after=after, limit=limit
        )
        return JSONResponse(
            {"schedules": [summary_view(s) for s in page], "next_after": next_after}
        )

    @router.get(
        SCHEDULES_PATH + "/{schedule_id}",
        response_model=None,
        responses={200: {"model": ScheduleView}, **_errors(401, 404)},
        summary="A schedule with its last 20 occurrences and their payments' statuses",
    )
    async def get_schedule(schedule_id: str, request: Request, who: Who) -> JSONResponse:
        service = _service(request)
        return JSONResponse(service.show(service.visible(who, schedule_id)))

    @router.put(
        SCHEDULES_PATH + "/{schedule_id}",
        response_model=None,
        responses={200: {"model": ScheduleView}, **_errors(400, 401, 404, 409, 503)},
        summary="Change the amount, the rule or the end, or pause or resume",
    )
    async def update_schedule(
        schedule_id: str, body: ScheduleUpdate, request: Request, who: Who
    ) -> JSONResponse:
        """Takes effect from the next occurrence: occurrences already paid stay. A new rule is
        followed from now on; resuming does not pay the pause's occurrences."""
        got = await _service(request).update(who, schedule_id, body)
        return JSONResponse(got.body, got.status)

    @router.delete(
        SCHEDULES_PATH + "/{schedule_id}",
        response_model=None,
        responses={200: {"model": ScheduleView}, **_errors(401, 404, 409, 503)},
        summary="Delete: no further occurrence is paid; the history stays",
    )
    async def delete_schedule(schedule_id: str, request: Request, who: Who) -> JSONResponse:
        got = await _service(request).delete(who, schedule_id)
        return JSONResponse(got.body, got.status)

    @router.post(
        SCHEDULES_PATH + "/{schedule_id}/backfill",
        status_code=202,
        response_model=None,
        responses={202: {"model": ScheduleView}, **_errors(400, 401, 404, 409, 503)},
        summary="Pay the occurrences of a past range, skipped ones included",
    )
    async def backfill_schedule(
        schedule_id: str, body: BackfillBody, request: Request, who: Who
    ) -> JSONResponse:
        got = await _service(request).backfill(who, schedule_id, body)
        return JSONResponse(got.body, got.status)

    return router
