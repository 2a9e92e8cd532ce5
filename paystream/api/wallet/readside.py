"""The read side's query API (``streams/readside/``, on 127.0.0.1:``readside_port``), asked by
``GET /v1/account`` and ``GET /v1/transfer/{id}``: accounts, their recent postings, transfer
lifecycles and command outcomes, folded from the ledger's topics."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx


class ReadSideDown(Exception):
    """The read side did not answer (the API answers 503)."""


class ReadSide:
    def __init__(self, port: int, timeout_s: float) -> None:
        self._http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s)

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, **params: Any) -> dict[str, Any] | None:
        """The view's JSON object; None for a 404 (not known yet)."""
        try:
            r = await self._http.get(path, params=params or None)
        except httpx.HTTPError as exc:
            raise ReadSideDown(f"the read side does not answer: {type(exc).__name__}") from None
        if r.status_code == 404:
            return None
        if r.status_code != 200:
            raise ReadSideDown(f"the read side answered {r.status_code}")
        body = r.json()
        return body if isinstance(body, dict) else None

    async def account(self, account: str) -> dict[str, Any] | None:
        return await self.get(f"/accounts/{quote(account, safe='')}")

    async def postings(self, account: str, limit: int) -> list[dict[str, Any]]:
        got = await self.get(f"/accounts/{quote(account, safe='')}/transfers", limit=limit)
        postings = [] if got is None else got.get("postings", [])
        return [p for p in postings if isinstance(p, dict)]

    async def transfers(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Each known transfer's lifecycle view, by id."""
        unique = sorted(set(ids))
        views = await asyncio.gather(*(self.get(f"/transfers/{quote(t, safe='')}") for t in unique))
        return {t: v for t, v in zip(unique, views, strict=True) if v is not None}

    async def outcome(self, command_id: str) -> dict[str, Any] | None:
        return await self.get(f"/commands/{quote(command_id, safe='')}")
