"""The durable state: one sqlite3 file (WAL) under --state-dir, shared by every PSP of a process.

Durability promise: a transaction is committed before the response that depends on it is
sent, and WAL with synchronous=NORMAL keeps every committed transaction across a crash or
`kill -9` of the process (not across a power loss or an OS crash, which we do not promise).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    psp TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    direction TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    payment_option TEXT NOT NULL,
    instrument TEXT NOT NULL,
    webhook_url TEXT,
    created_body TEXT NOT NULL,
    status TEXT NOT NULL,
    code TEXT,
    psp_reference TEXT,
    executions INTEGER NOT NULL DEFAULT 0,
    charged INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    executed_at TEXT,
    completed_at TEXT,
    complete_due REAL,
    UNIQUE (psp, merchant_reference)
);
CREATE INDEX IF NOT EXISTS tokens_due ON tokens (complete_due) WHERE complete_due IS NOT NULL;
-- One row per money movement. Deliberately no UNIQUE(token): a double charge would show here
-- (and in /v1/admin/stats) instead of being hidden by a constraint.
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    psp TEXT NOT NULL,
    token TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    psp_reference TEXT NOT NULL,
    direction TEXT NOT NULL,
    payment_option TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    commission_minor INTEGER NOT NULL,
    charged_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS charges_day ON charges (psp, charged_at);
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    psp TEXT NOT NULL,
    token TEXT NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    url TEXT,
    created_at TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL
);
CREATE INDEX IF NOT EXISTS events_due ON events (next_attempt) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    http_status INTEGER,
    error TEXT,
    redelivery INTEGER NOT NULL,
    tampered INTEGER NOT NULL
);
"""


@dataclass(frozen=True)
class TokenRow:
    token: str
    psp: str
    merchant_reference: str
    direction: str
    amount_minor: int
    currency: str
    payment_option: str
    instrument: str
    webhook_url: str | None
    created_body: str
    status: str
    code: str | None
    psp_reference: str | None
    executions: int
    charged: bool
    created_at: str
    executed_at: str | None
    completed_at: str | None
    complete_due: float | None


@dataclass(frozen=True)
class ChargeRow:
    id: int
    psp: str
    token: str
    merchant_reference: str
    psp_reference: str
    direction: str
    payment_option: str
    amount_minor: int
    currency: str
    commission_minor: int
    charged_at: str


@dataclass(frozen=True)
class EventRow:
    event_id: str
    psp: str
    token: str
    type: str
    body: str
    url: str | None
    created_at: str
    state: str
    attempts: int
    next_attempt: float | None


@dataclass(frozen=True)
class DeliveryRow:
    id: int
    event_id: str
    at: str
    ok: bool
    http_status: int | None
    error: str | None
    redelivery: bool
    tampered: bool


def _token(r: sqlite3.Row) -> TokenRow:
    d = dict(r)
    d["charged"] = bool(d["charged"])
    return TokenRow(**d)


def _delivery(r: sqlite3.Row) -> DeliveryRow:
    d = dict(r)
    for k in ("ok", "redelivery", "tampered"):
        d[k] = bool(d[k])
    return DeliveryRow(**d)


class Store:
    """Synchronous sqlite3, used from the event loop's thread only: each call is short, and no
    await between a read and its write is what makes execute-at-most-once hold."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        if read_only:
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(SCHEMA)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One write transaction: all of it is durable before we answer, or none of it."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- tokens ---------------------------------------------------------------------------

    def token(self, psp: str, token: str) -> TokenRow | None:
        r = self.db.execute("SELECT * FROM tokens WHERE psp = ? AND token = ?", (psp, token))
        row = r.fetchone()
        return _token(row) if row else None

    def token_by_reference(self, psp: str, reference: str) -> TokenRow | None:
        r = self.db.execute(
            "SELECT * FROM tokens WHERE psp = ? AND merchant_reference = ?", (psp, reference)
        )
        row = r.fetchone()
        return _token(row) if row else None

    def insert_token(self, t: TokenRow) -> None:
        cols = list(TokenRow.__dataclass_fields__)
        self.db.execute(
            f"INSERT INTO tokens ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [getattr(t, c) for c in cols],
        )

    def update_token(self, token: str, **values: object) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(f"UPDATE tokens SET {sets} WHERE token = ?", [*values.values(), token])

    def due_completions(self, psp: str, now_s: float) -> list[TokenRow]:
        r = self.db.execute(
            "SELECT * FROM tokens WHERE complete_due IS NOT NULL AND complete_due <= ?"
            " AND psp = ? ORDER BY complete_due",
            (now_s, psp),
        )
        return [_token(x) for x in r.fetchall()]

    # --- charges --------------------------------------------------------------------------

    def insert_charge(self, c: ChargeRow) -> None:
        cols = [f for f in ChargeRow.__dataclass_fields__ if f != "id"]
        self.db.execute(
            f"INSERT INTO charges ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [getattr(c, k) for k in cols],
        )

    def charges_on(self, psp: str, day: str) -> list[ChargeRow]:
        """Movements of one UTC day (YYYY-MM-DD), in the order they happened."""
        r = self.db.execute(
            "SELECT * FROM charges WHERE psp = ? AND substr(charged_at, 1, 10) = ? ORDER BY id",
            (psp, day),
        )
        return [ChargeRow(**dict(x)) for x in r.fetchall()]

    def stats(self, psp: str) -> dict[str, object]:
        tokens, executions = self.db.execute(
            "SELECT count(*), coalesce(sum(executions), 0) FROM tokens WHERE psp = ?", (psp,)
        ).fetchone()
        by_ref = dict(
            self.db.execute(
                "SELECT merchant_reference, count(*) FROM charges WHERE psp = ?"
                " GROUP BY merchant_reference ORDER BY merchant_reference",
                (psp,),
            ).fetchall()
        )
        return {
            "tokens": tokens,
            "executions": executions,
            "charges": sum(by_ref.values()),
            "charges_by_reference": by_ref,
        }

    # --- webhook events -------------------------------------------------------------------

    def insert_event(self, e: EventRow) -> None:
        cols = list(EventRow.__dataclass_fields__)
        self.db.execute(
            f"INSERT INTO events ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [getattr(e, c) for c in cols],
        )

    def event(self, psp: str, event_id: str) -> EventRow | None:
        r = self.db.execute("SELECT * FROM events WHERE psp = ? AND event_id = ?", (psp, event_id))
        row = r.fetchone()
        return EventRow(**dict(row)) if row else None

    def events(self, psp: str, token: str | None = None) -> list[EventRow]:
        if token is None:
            r = self.db.execute("SELECT * FROM events WHERE psp = ? ORDER BY rowid", (psp,))
        else:
            r = self.db.execute(
                "SELECT * FROM events WHERE psp = ? AND token = ? ORDER BY rowid", (psp, token)
            )
        return [EventRow(**dict(x)) for x in r.fetchall()]

    def due_events(self, psps: list[str], now_s: float, limit: int) -> list[EventRow]:
        """Events of these PSPs due for a delivery attempt (a process serves only some)."""
        marks = ", ".join("?" * len(psps))
        r = self.db.execute(
            f"SELECT * FROM events WHERE state = 'pending' AND next_attempt <= ?"
            f" AND psp IN ({marks}) ORDER BY next_attempt, rowid LIMIT ?",
            (now_s, *psps, limit),
        )
        return [EventRow(**dict(x)) for x in r.fetchall()]

    def update_event(self, event_id: str, **values: object) -> None:
        sets = ", ".join(f"{k} = ?" for k in values)
        self.db.execute(
            f"UPDATE events SET {sets} WHERE event_id = ?", [*values.values(), event_id]
        )

    def insert_delivery(self, d: DeliveryRow) -> None:
        cols = [f for f in DeliveryRow.__dataclass_fields__ if f != "id"]
        self.db.execute(
            f"INSERT INTO deliveries ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
            [getattr(d, k) for k in cols],
        )

    def deliveries(self, event_id: str) -> list[DeliveryRow]:
        r = self.db.execute("SELECT * FROM deliveries WHERE event_id = ? ORDER BY id", (event_id,))
        return [_delivery(x) for x in r.fetchall()]
