"""``paystream recon settlement``: a PSP's settlement file into the warehouse
(``settlement_rows``), matched there in SQL against payment orders and ledger postings, each
difference categorised by the pure core (streams/recon) and resolved: automatically where the
fix is certain, else as a review item of kind ``recon`` (docs/recon.md)."""

from __future__ import annotations

import gc
import hashlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from base.config import Settings, kafka_client_config
from base.topics import TopicNames
from connectors.warehouse import writer_client
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.recon import limits, parse_file
from streams.recon.match import Result, reconcile
from streams.recon.model import (
    MOVEMENTS,
    REVIEW_ACTIONS,
    Action,
    FeeBatch,
    Mismatch,
    Movement,
    Order,
    Resolution,
    SettlementRow,
)
from streams.recon.parse import batch_imbalances, file_days

_MOVES = "('Settled', 'PaidOut')"
_COLUMNS = [
    "file_id", "line", "psp", "psp_reference", "merchant_reference", "type", "gross_currency",
    "gross_debit", "gross_credit", "net_currency", "net_debit", "net_credit", "commission",
    "created", "batch", "imported_at",
]  # fmt: skip


@dataclass
class Report:
    file: str
    psp: str
    rows: int
    matched: int
    mismatches: list[Mismatch]
    file_id: str
    dry_run: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "psp": self.psp,
            "rows": self.rows,
            "matched": self.matched,
            "mismatches": [mismatch_json(m, self.psp) for m in self.mismatches],
            "file_id": self.file_id,
            "dry_run": self.dry_run,
        }


def item_id(m: Mismatch, psp: str) -> str:
    """Deterministic, so a mismatch found again opens nothing new; no '/' (a path segment)."""
    return f"recon:{m.category.value}:{psp}:{m.subject.replace('/', '.')}"[:140]


def mismatch_json(m: Mismatch, psp: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "category": m.category.value,
        "payment_order_id": m.payment_order_id,
        "psp_reference": m.psp_reference,
        "expected": m.expected,
        "found": m.found,
        "resolution": m.resolution.value,
        "action": m.action.value,
    }
    if m.resolution is Resolution.review:
        out["review_id"] = item_id(m, psp)
    return out


def _tsv(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def _block(file_id: str, psp: str, rows: list[SettlementRow], now: str) -> bytes:
    lines = [
        "\t".join(
            (
                file_id, str(r.line), psp, _tsv(r.psp_reference), _tsv(r.merchant_reference),
                r.type, r.gross_currency, str(r.gross_debit), str(r.gross_credit),
                r.net_currency, str(r.net_debit), str(r.net_credit), str(r.commission),
                r.created, r.batch, now,
            )
        )
        for r in rows
    ]  # fmt: skip
    return ("\n".join(lines) + "\n").encode()


def load(client: Any, file_id: str, psp: str, rows: list[SettlementRow]) -> None:
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    step = limits.INSERT_ROWS_BATCH
    for i in range(0, len(rows), step):
        client.raw_insert(
            "settlement_rows", _COLUMNS, insert_block=_block(file_id, psp, rows[i : i + step], now),
            fmt="TabSeparated",
        )  # fmt: skip


def _dec(v: Any) -> Decimal | None:
    return None if v is None else Decimal(v)


def movements(client: Any, file_id: str, psp: str, real: str) -> list[Movement]:
    """The file's movements that do not plainly agree with our side, with their pairs. The
    SQL's agreement is exactly the core's match (streams.recon.match.movement returns None),
    so only the rest travel; ``real``: the file's own id during a dry run (its rows, if
    imported, are this file's)."""
    sql = f"""
    WITH s AS (
        SELECT file_id, line, psp_reference, merchant_reference, type, gross_currency,
               gross_debit, gross_credit, net_currency, net_debit, net_credit, commission,
               toString(created) AS created, batch,
               row_number() OVER (PARTITION BY psp_reference, type
                                  ORDER BY imported_at, file_id, line) - 1 AS seen_before
        FROM settlement_rows FINAL
        WHERE psp = {{psp:String}} AND type IN {_MOVES}
          AND (file_id = {{f:String}} OR (NOT startsWith(file_id, 'dryrun-') AND file_id != {{real:String}}))
    ),
    mine AS (SELECT * FROM s WHERE file_id = {{f:String}}),
    o AS (
        SELECT payment_order_id, payment_id, type, payment_order_status, amount, currency, psp,
               toString(toDate(ts)) AS day
        FROM payment_orders FINAL
        WHERE payment_order_id IN (SELECT merchant_reference FROM mine)
    ),
    l AS (
        SELECT command_id, abs(sum(amount)) AS posted
        FROM ledger_entries FINAL
        WHERE startsWith(account, '@psp/')
          AND command_id IN (SELECT concat(merchant_reference, if(type = 'Settled', '/settle', '/post')) FROM mine)
        GROUP BY command_id
    ),
    a AS (
        SELECT payment_order_id, max(attempt) AS attempt FROM payment_attempts FINAL
        WHERE payment_order_id IN (SELECT merchant_reference FROM mine)
        GROUP BY payment_order_id
    )
    SELECT mine.line, mine.psp_reference, mine.merchant_reference, mine.type,
           mine.gross_currency, mine.gross_debit, mine.gross_credit, mine.net_currency,
           mine.net_debit, mine.net_credit, mine.commission, mine.created, mine.batch,
           mine.seen_before,
           o.payment_order_id, o.payment_id, o.type, o.payment_order_status, o.amount,
           o.currency, o.psp, o.day, l.posted, a.attempt
    FROM mine
    LEFT JOIN o ON o.payment_order_id = mine.merchant_reference
    LEFT JOIN l ON l.command_id = concat(mine.merchant_reference,
                                         if(mine.type = 'Settled', '/settle', '/post'))
    LEFT JOIN a ON a.payment_order_id = mine.merchant_reference
    WHERE NOT (
        mine.seen_before = 0 AND o.payment_order_id IS NOT NULL
        AND o.type = if(mine.type = 'Settled', 'pay_in', 'pay_out')
        AND (o.psp IS NULL OR o.psp = {{psp:String}})
        AND mine.gross_currency = o.currency
        AND mine.gross_debit + mine.gross_credit = o.amount
        AND ((o.payment_order_status = 'succeeded' AND l.posted = o.amount)
             OR o.payment_order_status = 'posting')
    )
    ORDER BY mine.line
    """
    res = client.query(
        sql, parameters={"psp": psp, "f": file_id, "real": real}, settings={"join_use_nulls": 1}
    ).result_rows
    out = []
    for r in res:
        row = SettlementRow(
            r[0], r[1], r[2], r[3], r[4], Decimal(r[5]), Decimal(r[6]), r[7], Decimal(r[8]),
            Decimal(r[9]), Decimal(r[10]), r[11], r[12],
        )  # fmt: skip
        order = None
        if r[14] is not None:
            order = Order(
                r[14], r[15], r[16], r[17], Decimal(r[18]), r[19], r[20], _dec(r[22]),
                int(r[23] or 0), r[21],
            )  # fmt: skip
        out.append(Movement(row, order, int(r[13])))
    return out


def unsettled(
    client: Any, file_id: str, psp: str, real: str, lo: str, hi: str, scope: str = ""
) -> list[Order]:
    sql = f"""
    SELECT payment_order_id, payment_id, type, payment_order_status, amount, currency, psp,
           toString(toDate(ts))
    FROM payment_orders FINAL
    WHERE psp = {{psp:String}} AND payment_order_status = 'succeeded'
      AND toDate(ts) BETWEEN toDate({{lo:String}}) AND toDate({{hi:String}})
      AND startsWith(payment_order_id, {{scope:String}})
      AND payment_order_id NOT IN (
          SELECT merchant_reference FROM settlement_rows
          WHERE psp = {{psp:String}} AND type IN {_MOVES}
            AND (file_id = {{f:String}} OR (NOT startsWith(file_id, 'dryrun-') AND file_id != {{real:String}})))
    """
    rows = client.query(
        sql,
        parameters={"psp": psp, "f": file_id, "real": real, "lo": lo, "hi": hi, "scope": scope},
    )
    return [
        Order(r[0], r[1], r[2], r[3], Decimal(r[4]), r[5], r[6], None, 0, r[7])
        for r in rows.result_rows
    ]


def fees(client: Any, file_id: str, psp: str, real: str) -> list[FeeBatch]:
    sql = f"""
    SELECT s.batch, s.net_currency, s.kept, b.amount
    FROM (
        SELECT batch, net_currency,
               sum(if(type IN {_MOVES}, commission, toDecimal128(0, 6)))
             + sum(if(type = 'Fee', net_debit - net_credit, toDecimal128(0, 6))) AS kept
        FROM settlement_rows FINAL WHERE file_id = {{f:String}}
        GROUP BY batch, net_currency
    ) AS s
    LEFT JOIN (SELECT batch, currency, amount FROM fee_postings FINAL
               WHERE psp = {{psp:String}} AND file_id = {{real:String}}) AS b
      ON b.batch = s.batch AND b.currency = s.net_currency
    ORDER BY s.batch, s.net_currency
    """
    rows = client.query(
        sql, parameters={"psp": psp, "f": file_id, "real": real}, settings={"join_use_nulls": 1}
    ).result_rows
    return [FeeBatch(r[0], r[1], Decimal(r[2]), _dec(r[3])) for r in rows if Decimal(r[2]) != 0]


def imbalances(client: Any, file_id: str) -> dict[tuple[str, str], Decimal]:
    rows = client.query(
        "SELECT batch, net_currency, sum(net_credit) - sum(net_debit) AS s"
        " FROM settlement_rows FINAL WHERE file_id = {f:String}"
        " GROUP BY batch, net_currency HAVING s != 0",
        parameters={"f": file_id},
    ).result_rows
    return {(r[0], r[1]): Decimal(r[2]) for r in rows}


def settle(
    settings: Settings, psp: str, path: Path, dry_run: bool = False,
    lag_days: int = limits.LAG_DAYS_DEFAULT, scope: str = "",
) -> Report:  # fmt: skip
    """Import, match, resolve. Raises FileRefused (nothing applied) for a bad file.
    ``scope``: only orders whose id starts with it can be missing (the demo's own orders)."""
    if not 0 <= lag_days <= limits.LAG_DAYS_MAX:
        raise ValueError(f"--lag-days must be 0..{limits.LAG_DAYS_MAX}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        from streams.recon.model import FileRefused, Refusal

        raise FileRefused(Refusal.not_csv, 1, None, "not UTF-8") from exc
    gc.disable()  # a million rows of small objects: the collector would scan them over and over
    try:
        rows = parse_file(text)
    finally:
        gc.enable()
    digest = hashlib.sha256(data).hexdigest()
    real = f"{psp}-{digest[:20]}"
    file_id = f"dryrun-{uuid.uuid4().hex}" if dry_run else real
    client = writer_client(settings)
    load(client, file_id, psp, rows)
    try:
        result = _match(client, file_id, real, psp, rows, lag_days, scope)
    finally:
        if dry_run:
            client.command(
                "ALTER TABLE settlement_rows DELETE WHERE file_id = {f:String}",
                parameters={"f": file_id}, settings={"mutations_sync": 2},
            )  # fmt: skip
    report = Report(
        str(path), psp, len(rows), result.matched, list(result.mismatches), file_id, dry_run
    )
    if not dry_run:
        client.insert(
            "settlement_files",
            [[file_id, psp, path.name, digest, len(rows), datetime.now(UTC)]],
            column_names=["file_id", "psp", "name", "sha256", "rows", "imported_at"],
        )
        apply(settings, client, report)
    return report


def _match(
    client: Any,
    file_id: str,
    real: str,
    psp: str,
    rows: list[SettlementRow],
    lag_days: int,
    scope: str,
) -> Result:
    from streams.recon.match import window

    days = file_days(rows)
    moves = movements(client, file_id, psp, real)
    ours: list[Order] = []
    if days is not None:
        lo, hi = window(days, lag_days)
        ours = unsettled(client, file_id, psp, real, lo, hi, scope)
    # The file's batches are checked in SQL; the core's own sum is the invariant's witness.
    imb = imbalances(client, file_id)
    if set(imb) != set(batch_imbalances(rows)):
        raise RuntimeError("the warehouse's batch sums disagree with the file's")
    got = reconcile(psp, moves, ours, fees(client, file_id, psp, real), imb, days, lag_days)
    agreed = sum(1 for r in rows if r.type in MOVEMENTS) - len(moves)
    return Result(got.matched + agreed, got.mismatches)


# --- resolutions: auto where certain (deterministic ids), else review items ---


def apply(settings: Settings, client: Any, report: Report) -> None:
    now = time.time_ns() // 1000
    booked = [m for m in report.mismatches if m.action is Action.book_fee]
    if booked:
        client.insert(
            "fee_postings",
            [_fee_row(m, report, now) for m in booked],
            column_names=[
                "booking_id", "psp", "batch", "account", "counterparty", "currency", "amount",
                "file_id", "ts",
            ],
        )  # fmt: skip
    out: list[tuple[str, str, str, dict[str, Any]]] = []  # (topic key, topic, schema, record)
    names = TopicNames(settings.topic_prefix)
    for m in report.mismatches:
        if m.action is Action.mark_succeeded:
            pid, record = settled_answer(m, report.psp, report.file_id, now)
            out.append((pid, names.payments, "PspResult", record))
    for m in [m for m in report.mismatches if m.resolution is Resolution.review][
        : limits.REVIEW_ITEMS_PER_RUN_MAX
    ]:
        iid = item_id(m, report.psp)
        ev = {**m.evidence, "file_id": report.file_id, "psp": report.psp,
              "expected": m.expected, "found": m.found}  # fmt: skip
        out.append((iid, names.reviews, "ReviewRequest", {
            "request_id": f"{iid}/open", "op": "open", "item_id": iid, "kind": "recon",
            "payment_id": _payment_id(m), "rules": [], "category": m.category.value,
            "evidence": json.dumps(ev, default=str)[:60_000],
            "actions": list(REVIEW_ACTIONS), "decision": None, "note": None,
            "reviewer": None, "ts": now,
        }))  # fmt: skip
    if out:
        send(settings, out)


def settled_answer(m: Mismatch, psp: str, file_id: str, now: int) -> tuple[str, dict[str, Any]]:
    """The PSP's settlement as a late answer to an unknown order's last attempt: a PspResult
    (kind notified, status succeeded) keyed by the payment. The payments core takes it once,
    while the order is still at the PSP; the ledger posting follows with its usual id."""
    ours = m.evidence.get("ours")
    if not isinstance(ours, dict) or not ours.get("attempt") or not ours.get("payment_id"):
        raise RuntimeError(f"{m.payment_order_id}: no attempt to answer")
    pid = str(ours["payment_id"])
    return pid, {
        "payment_id": pid, "payment_order_id": m.payment_order_id,
        "attempt": int(ours["attempt"]), "psp": psp, "kind": "notified", "token": None,
        "status": "succeeded", "code": None, "psp_reference": m.psp_reference,
        "retryable": False, "http_status": None, "latency_us": None,
        "detail": f"settled in {file_id}", "event_id": f"recon/{m.payment_order_id}/settled",
        "source": "recon", "ts": now,
    }  # fmt: skip


def _payment_id(m: Mismatch) -> str | None:
    o = m.payment_order_id
    return o.rsplit("/", 1)[0] if o and o.endswith("/1") else None


def _fee_row(m: Mismatch, report: Report, now: int) -> list[Any]:
    batch, cur = str(m.evidence["batch"]), str(m.evidence["currency"])
    return [
        f"fee/{report.psp}/{batch}/{cur}/{report.file_id}", report.psp, batch, f"@fee/{report.psp}/{cur}",
        f"@psp/{report.psp}/{cur}", cur, Decimal(str(m.evidence["fees"])), report.file_id,
        datetime.fromtimestamp(now / 1_000_000, UTC),
    ]  # fmt: skip


def send(settings: Settings, records: list[tuple[str, str, str, dict[str, Any]]]) -> None:
    """Records to their topics, each acknowledged by the broker."""
    from confluent_kafka import Producer

    codec = Codec.default()
    p = Producer({**kafka_client_config(settings), "enable.idempotence": True, "acks": "all"})
    parts: dict[str, int] = {}
    failed: list[str] = []
    for key, topic, schema, record in records:
        if topic not in parts:
            md = p.list_topics(topic, timeout=30).topics.get(topic)
            if md is None or md.error is not None or not md.partitions:
                raise RuntimeError(f"topic {topic} is missing; run `paystream up`")
            parts[topic] = len(md.partitions)
        p.produce(
            topic, codec.encode(schema, record), key.encode(), partition_for(key, parts[topic]),
            on_delivery=lambda err, _m: failed.append(str(err)) if err else None,
        )  # fmt: skip
        p.poll(0)
    if p.flush(60) or failed:
        raise RuntimeError(f"not delivered: {failed[:1] or 'timeout'}")


__all__ = ["MOVEMENTS", "Report", "settle"]
