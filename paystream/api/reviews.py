"""The review queue's routes (docs/risk.md, "The review queue"): one queue for the risk
engine's items and, later, reconciliation's.

* ``GET /payments/review/v1?kind=risk|recon&status=open|approved|declined|resolved``: the
  items, overdue ones first, then oldest first.
* ``GET /payments/review/v1/{id}``: one item.
* ``POST /payments/review/v1/{id}`` ``{"decision", "note", "reviewer"?}``: decide it. The
  decision goes to ``paystream.reviews.v1``; the queue's workers apply the first decision of
  an item and refuse any later one. Answers 200 with the item as decided by this request,
  409 ``review_already_decided`` (with the item) when another decision won, 404, 400 for a
  decision the item does not allow, 503 when the queue did not apply it in time (the request
  is in the log: asking again is safe, the first decision still wins).

Reviewers act through the service token (a user's own token may not review).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from base.config import Settings
from base.topics import TopicNames
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.reviews import model as rv
from streams.reviews.views import item_view, queue_order
from streams.reviews_agent import ITEM_ID_CHARS_MAX, decide_record

from .auth import Principal, principal
from .errors import ApiError
from .models import ErrorBody

REVIEW_PATH = "/payments/review/v1"
ITEM_ID = re.compile(r"[a-z]+:[A-Za-z0-9][A-Za-z0-9_.:/@-]{0,140}\Z")
LIST_MAX = 1_000
_LIST_PARAMS = frozenset({"kind", "status", "limit"})


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^[a-z_]+$")] = Field(
        description="One of the item's actions: approve or decline (risk)."
    )
    note: Annotated[str, Field(max_length=rv.NOTE_CHARS_MAX)] = Field(
        default="", description="Why (kept with the decision)."
    )
    reviewer: Annotated[str, Field(max_length=rv.REVIEWER_CHARS_MAX)] | None = Field(
        default=None, description="Who decides (default: the caller's scope)."
    )


class ItemView(BaseModel):
    id: str
    kind: str
    payment_id: str | None
    status: str
    rules: list[str]
    category: str | None
    evidence: Any
    created_at: str
    age_s: int
    overdue: bool
    actions: list[str]
    decision: str | None
    note: str | None
    reviewer: str | None
    decided_at: str | None


class ConflictBody(BaseModel):
    error: str = Field(description="review_already_decided")
    message: str
    item: ItemView = Field(description="The item as it stands: the decision that won.")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in statuses}
    out["default"] = {"model": ErrorBody, "description": "Any other error"}
    return out


class Backend(Protocol):
    """What the routes need: the queue as it stands, and a way to send a decision."""

    def all(self) -> list[rv.Item]: ...

    def get(self, item_id: str) -> rv.Item | None: ...

    def watch(self, item_id: str) -> asyncio.Future[None]: ...

    def unwatch(self, item_id: str, fut: asyncio.Future[None]) -> None: ...

    async def send(self, item_id: str, value: bytes) -> None: ...


class KafkaBackend:
    """The view of the queue's changelog and the API's producer."""

    def __init__(self, settings: Settings) -> None:
        from .producer import RecordProducer
        from .reviews_view import ReviewsView

        self.topic = TopicNames(settings.topic_prefix).reviews
        self.view = ReviewsView(settings)
        self.producer = RecordProducer(settings)
        self.partitions = 0

    def start(self) -> None:
        self.view.start()
        self.producer.start()
        self.partitions = self.producer.partition_count(self.topic)

    def close(self) -> None:
        self.view.close()
        self.producer.close()

    def all(self) -> list[rv.Item]:
        return self.view.all()

    def get(self, item_id: str) -> rv.Item | None:
        return self.view.get(item_id)

    def watch(self, item_id: str) -> asyncio.Future[None]:
        return self.view.watch([item_id])

    def unwatch(self, item_id: str, fut: asyncio.Future[None]) -> None:
        self.view.unwatch([item_id], fut)

    async def send(self, item_id: str, value: bytes) -> None:
        await self.producer.send(
            self.topic, partition_for(item_id, self.partitions), item_id, value
        )


def reviews_router(settings: Settings, real: bool = True) -> APIRouter:
    """The routes; with ``real``, their backend (Kafka) starts and stops with the app, else a
    test sets ``app.state.reviews``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not real:
            yield
            return
        backend = KafkaBackend(settings)
        await asyncio.to_thread(backend.start)
        app.state.reviews = backend
        try:
            yield
        finally:
            await asyncio.to_thread(backend.close)

    router = APIRouter(lifespan=lifespan)
    codec = Codec.default()
    timeout_s = settings.limits.review_decision_timeout_s

    def backend_of(request: Request) -> Backend:
        b: Backend | None = getattr(request.app.state, "reviews", None)
        if b is None:
            raise ApiError(503, "not_ready", "the review queue is not ready yet")
        return b

    def reviewer_only(who: Principal) -> None:
        if who.user_id is not None:
            raise ApiError(403, "forbidden", "a user's token may not review payments")

    def found(b: Backend, item_id: str) -> rv.Item:
        item = b.get(item_id) if ITEM_ID.match(item_id) else None
        if item is None:
            raise ApiError(404, "review_not_found", f"no review item {item_id[:100]!r}")
        return item

    @router.get(
        REVIEW_PATH,
        response_model=list[ItemView],
        responses=_errors(400, 401, 403, 503),
        summary="The review queue: overdue items first, then oldest first",
    )
    async def list_items(
        request: Request,
        who: Annotated[Principal, Depends(principal)],
        kind: Annotated[Literal["risk", "recon"] | None, Query()] = None,
        status: Annotated[
            Literal["open", "approved", "declined", "resolved"] | None, Query()
        ] = None,
        limit: Annotated[int, Query(ge=1, le=LIST_MAX)] = 200,
    ) -> JSONResponse:
        reviewer_only(who)
        unknown = sorted(set(request.query_params) - _LIST_PARAMS)
        if unknown:
            raise ApiError(400, "invalid_field", "not a parameter of this request", unknown[0][:64])
        now = time.time_ns() // 1000
        items = [
            i
            for i in backend_of(request).all()
            if (kind is None or i.kind == kind) and (status is None or i.status == status)
        ]
        items.sort(key=lambda i: queue_order(i, now))
        return JSONResponse([item_view(i, now) for i in items[:limit]])

    @router.get(
        REVIEW_PATH + "/{item_id}",
        response_model=ItemView,
        responses=_errors(401, 403, 404, 503),
        summary="One review item",
    )
    async def show_item(
        item_id: str, request: Request, who: Annotated[Principal, Depends(principal)]
    ) -> JSONResponse:
        reviewer_only(who)
        item = found(backend_of(request), item_id)
        return JSONResponse(item_view(item, time.time_ns() // 1000))

    @router.post(
        REVIEW_PATH + "/{item_id}",
        response_model=ItemView,
        responses={
            **_errors(400, 401, 403, 404, 413, 503),
            409: {"model": ConflictBody, "description": "Another decision came first"},
        },
        summary="Decide a review item (the first decision wins)",
    )
    async def decide_item(
        item_id: str,
        body: DecisionBody,
        request: Request,
        who: Annotated[Principal, Depends(principal)],
    ) -> JSONResponse:
        reviewer_only(who)
        b = backend_of(request)
        item = found(b, item_id)
        now = time.time_ns() // 1000
        if item.status == rv.OPEN and body.decision not in item.actions:
            raise ApiError(
                400, "invalid_field", f"decision must be one of {list(item.actions)}", "decision"
            )
        request_id = f"{item_id}/{uuid.uuid4().hex}"
        if len(request_id) > ITEM_ID_CHARS_MAX + 64:
            raise ApiError(400, "invalid_field", "the item id is too long", "id")
        reviewer = body.reviewer or who.scope
        value = codec.encode(
            "ReviewRequest",
            decide_record(item_id, body.decision, body.note, reviewer, request_id, now),
        )
        if item.status != rv.OPEN:
            await b.send(item_id, value)  # the queue records the late decision, refused
            return _conflict(item, now)
        fut = b.watch(item_id)
        try:
            await b.send(item_id, value)
            deadline = time.monotonic() + timeout_s
            while True:
                got = b.get(item_id)
                if got is not None and got.status != rv.OPEN:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ApiError(
                        503, "not_decided_in_time",
                        "the decision is in the log; the queue has not applied it yet",
                    )  # fmt: skip
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(fut), left)
                b.unwatch(item_id, fut)
                fut = b.watch(item_id)
        finally:
            b.unwatch(item_id, fut)
        now = time.time_ns() // 1000
        if got.request_id != request_id:
            return _conflict(got, now)
        return JSONResponse(item_view(got, now))

    return router


def _conflict(item: rv.Item, now_us: int) -> JSONResponse:
    return JSONResponse(
        {
            "error": "review_already_decided",
            "message": f"{item.item_id} is already {item.status} by {item.reviewer}",
            "item": item_view(item, now_us),
        },
        409,
    )
