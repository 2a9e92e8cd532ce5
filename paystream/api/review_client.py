"""A small synchronous client of the review queue's routes (``paystream review``)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from base.config import Settings, api_token

from .errors import ApiError
from .reviews import REVIEW_PATH

TIMEOUT_S = 20.0  # above the server's wait for a decision (Limits.review_decision_timeout_s)


class ReviewClient:
    def __init__(
        self, base_url: str, token: str, transport: httpx.BaseTransport | None = None
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=TIMEOUT_S,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ReviewClient:
        return cls(f"http://127.0.0.1:{settings.api_port}", api_token(settings))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._http.close()

    def items(
        self, kind: str | None = None, status: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if kind:
            params["kind"] = kind
        if status:
            params["status"] = status
        got: list[dict[str, Any]] = self._answer(self._http.get(REVIEW_PATH, params=params))
        return got

    def item(self, item_id: str) -> dict[str, Any]:
        got: dict[str, Any] = self._answer(self._http.get(f"{REVIEW_PATH}/{quote(item_id)}"))
        return got

    def decide(
        self, item_id: str, decision: str, note: str, reviewer: str | None
    ) -> tuple[dict[str, Any], bool]:
        """The item after the decision, and whether this decision is the one that stands
        (False: another reviewer's came first; the item shows theirs)."""
        body: dict[str, Any] = {"decision": decision, "note": note}
        if reviewer:
            body["reviewer"] = reviewer
        r = self._http.post(f"{REVIEW_PATH}/{quote(item_id)}", json=body)
        if r.status_code == 409:
            item: dict[str, Any] = r.json()["item"]
            return item, False
        got: dict[str, Any] = self._answer(r)
        return got, True

    @staticmethod
    def _answer(r: httpx.Response) -> Any:
        if r.status_code >= 400:
            try:
                b = r.json()
            except ValueError:
                b = {}
            raise ApiError(
                r.status_code,
                str(b.get("error", "http_error")),
                str(b.get("message", r.text[:200])),
                b.get("field"),
            )
        return r.json()
