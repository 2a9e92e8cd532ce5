"""The read side's web API: the query views, POST /commands, /health, /openapi.json."""

from __future__ import annotations

import asyncio
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

from faust.types import TP
from faust.web import Request, Response, View

from base.config import Settings, api_token
from streams.readside import projections as pj
from streams.readside.openapi import LIMIT_DEFAULT, LIMIT_MAX, openapi_document
from streams.readside.writer import history_key

if TYPE_CHECKING:
    from streams.readside.app import ReadSide


def declare_views(rs: ReadSide) -> None:
    """Every page of the web API on ``rs.app``; a request for a key goes to its owner."""
    app = rs.app

    # faust's views get the path's match_info as keyword arguments (``id``), which
    # table_route's annotation does not allow for: hence the type: ignore[arg-type].
    def not_found(view: View, what: str, key: str) -> Response:
        return view.json({"error": f"{what}_not_found", what: key}, status=404)

    @app.page("/accounts")
    class Accounts(View):
        async def get(self, request: Request) -> Response:
            rows = [
                pj.account_summary(v)
                for v in rs.accounts.values()
                if isinstance(v, dict) and v.get("status") is not None
            ]
            rows.sort(key=lambda r: r["account"])
            return self.json(rows)

    @app.page("/accounts/{id}")
    class Account(View):
        @app.table_route(table=rs.accounts, match_info="id")  # type: ignore[arg-type]
        async def get(self, request: Request, id: str) -> Response:
            v = rs.accounts.get(id)
            if v is None or v["status"] is None:  # unknown, or its "opened" not folded yet
                return not_found(self, "account", id)
            return self.json(pj.account_detail(v))

    @app.page("/accounts/{id}/transfers")
    class AccountTransfers(View):
        @app.table_route(table=rs.accounts, match_info="id")  # type: ignore[arg-type]
        async def get(self, request: Request, id: str) -> Response:
            try:
                limit = int(request.query.get("limit", LIMIT_DEFAULT))
            except ValueError:
                return self.json({"error": "limit_invalid"}, status=400)
            if not 1 <= limit <= LIMIT_MAX:
                return self.json({"error": "limit_invalid", "max": LIMIT_MAX}, status=400)
            v = rs.accounts.get(id)
            if v is None or v["status"] is None:
                return not_found(self, "account", id)
            slots = {
                seq % pj.HISTORY_MAX: rs.history.get(history_key(id, seq))
                for seq in pj.history_seqs(v, limit)
            }
            postings = pj.recent_postings(v, slots, limit)
            return self.json({"account": id, "seq": v["seq"], "postings": postings})

    @app.page("/transfers/{id}")
    class Transfer(View):
        @app.table_route(table=rs.transfers, match_info="id")  # type: ignore[arg-type]
        async def get(self, request: Request, id: str) -> Response:
            v = rs.transfers.get(id)
            return self.json(v) if v is not None else not_found(self, "transfer", id)

    @app.page("/commands/{id}")
    class Command(View):
        @app.table_route(table=rs.outcomes, match_info="id")  # type: ignore[arg-type]
        async def get(self, request: Request, id: str) -> Response:
            v = rs.outcomes.get(id)
            return self.json(v) if v is not None else not_found(self, "command", id)

    @app.page("/commands")
    class SendCommand(View):
        async def post(self, request: Request) -> Response:
            status, body = await rs.commands.post(cast(Any, request))
            headers = {"WWW-Authenticate": 'Bearer realm="paystream"'} if status == 401 else None
            return self.json(body, status=status, headers=headers)

    @app.page("/openapi.json")
    class OpenApi(View):
        async def get(self, request: Request) -> Response:
            return self.json(openapi_document())

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json(health(rs))


class CommandEndpoint:
    """POST /commands: the one state-changing endpoint. Its bearer token, and one producer on
    one thread (confluent-kafka blocks, and CommandProducer is not thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api_token = api_token(settings)
        self._command_producer: Any = None
        self._produce_thread = ThreadPoolExecutor(1, thread_name_prefix="readside-commands")

    async def post(self, request: Any) -> tuple[int, dict[str, Any]]:
        """One JSON command (the ``paystream send`` line format) onto the commands topic.

        The token is checked before the body is read; the body is read up to the limit only.
        """
        if not bearer_token_ok(request.headers.get("Authorization"), self.api_token):
            return 401, {"error": "unauthorized", "message": "Authorization: Bearer <token>"}
        limit = self.settings.limits.http_body_bytes_max
        body = await _read_body(request, limit)
        if body is None:
            return 413, {"error": "too_large", "message": f"at most {limit} bytes"}
        from producers.commands import parse_line
        from producers.errors import InvalidCommand

        try:
            cmd = parse_line(body, self.settings.limits)
        except InvalidCommand as exc:
            return 400, {"error": exc.code, "message": exc.message, "field": exc.field}
        loop = asyncio.get_running_loop()
        err, partition, offset = await loop.run_in_executor(
            self._produce_thread, self._produce, cmd
        )
        if err is not None:
            # The command may still arrive: a retry with the same command_id is harmless.
            return 503, {"error": "not_delivered", "message": err, "command_id": cmd.command_id}
        return 202, {
            "command_id": cmd.command_id,
            "type": cmd.type,
            "partition": partition,
            "offset": offset,
            "outcome": f"/commands/{cmd.command_id}",
        }

    def _produce(self, cmd: Any) -> tuple[str | None, int, int]:
        from producers.producer import CommandProducer

        if self._command_producer is None:
            self._command_producer = CommandProducer(
                self.settings, client_id="paystream-readside-api"
            )
        answer: list[tuple[str | None, int, int]] = []

        def delivered(err: Any, msg: Any) -> None:
            answer.append((None if err is None else str(err), msg.partition(), msg.offset()))

        self._command_producer.send(cmd, on_delivery=delivered)
        self._command_producer.flush(self.settings.limits.http_produce_timeout_s)
        return answer[0] if answer else ("no answer from the broker in time", -1, -1)


def health(rs: ReadSide) -> dict[str, Any]:
    """Progress per assigned source partition; ``lag`` counts transaction markers too."""
    consumer = rs.app.consumer
    try:
        assigned = sorted(consumer.assignment())
    except Exception:  # not started or rebalancing
        assigned = []
    sources = {getattr(rs.names, k): k for k in rs.events}
    committed: dict[TP, int] = getattr(consumer, "_committed_offset", {})
    parts = []
    total = 0
    for tp in assigned:
        if tp.topic not in sources:
            continue
        try:
            end = consumer.highwater(tp)
        except Exception:
            end = None
        done = rs.processed.get(tp)
        # Nothing folded since start: progress is the committed offset faust resumed from.
        nxt = done + 1 if done is not None else committed.get(tp)
        lag = max(0, end - nxt) if end is not None and nxt is not None else None
        total += lag or 0
        parts.append(
            {
                "topic": sources[tp.topic],
                "partition": tp.partition,
                "processed_offset": done,
                "end_offset": end,
                "lag": lag,
            }
        )
    return {
        "status": "ok",
        "app_id": rs.app.conf.id,
        "uptime_s": round(time.time() - rs.started_at, 1),
        "cpu_s": round(time.process_time(), 2),
        "events": dict(rs.events),
        "skipped": rs.skipped,
        "lag_total": total,
        "partitions": parts,
    }


def bearer_token_ok(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    if not header or not token:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


async def _read_body(request: Any, limit: int) -> bytes | None:
    """The request body, or None past ``limit`` bytes (never more than limit+1 read)."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = bytearray()
    while True:
        chunk = await request.content.read(limit + 1 - len(body))
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > limit:
            return None
