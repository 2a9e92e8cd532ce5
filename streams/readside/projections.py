"""Read-side projections: pure folds from ledger events to query views.

No faust, Kafka or RocksDB here: each function takes the current view (a JSON-able dict, or
None when the key was never seen) and one decoded event, and returns the new view. The input
view is never mutated; when the event changes nothing the SAME object is returned (``new is
old``), which is how the tests tell a no-op.

The read side consumes at least once, so every function is idempotent under replay: applying
any duplicate, or any replayed prefix, of an event sequence leaves the views exactly as
applying the sequence once, and not even for a moment does a replay move a view back to an
older state (tests/unit/test_projections.py checks both with hypothesis).

* postings: a posting is applied only when its ``account_seq`` is above the view's ``seq``
  (per-account sequence numbers are dense and in log order), so replays are no-ops. The
  last HISTORY_MAX postings live in a ring beside the view (slot = seq % N), see below.
* account events carry no sequence number, so the caller passes the record's offset in the
  accounts topic (one account lives in one partition, so offsets order its events).
* transfer status only moves forward: pending < posted | voided; the first terminal wins.
* outcomes: the first non-reuse outcome of a command id wins; reuse rejections
  (``exists_with_different_payload``) are listed beside it, deduplicated by event id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.ledger.money import CURRENCY_EXPONENTS, format_amount

View = dict[str, Any]

HISTORY_MAX = 50  # postings kept per account
REUSES_MAX = 100  # reuse rejections kept per command id (the first ones; never evicted)
REUSE_REASON = "exists_with_different_payload"

_TRANSFER_RANK = {"pending": 0, "posted": 1, "voided": 1}
_ACCOUNT_STATUS = {"opened": "open", "blocked": "blocked", "unblocked": "open"}


def is_system_account(account: str) -> bool:
    """System accounts (``@world/USD``, ``@clearing/USD``) keep no balance and no view."""
    return account.startswith("@")


# --- accounts: balance and history from the ledger, the rest from account events ---


def new_account_view(account: str) -> View:
    return {
        "account": account,
        "user": None,
        "currency": None,
        "balance": None,  # decimal string from the last posting's balance_after
        "status": None,  # None until the "opened" event is seen
        "seq": 0,  # account_seq of the last posting applied
        "events_offset": -1,  # accounts-topic offset of the last account event applied
        "related": {},
        "blocked_reason": None,
    }


def apply_posting(account_view: View | None, posting: dict[str, Any]) -> View | None:
    """Fold one LedgerPosting into its account's view (system accounts have none).

    The posting itself goes to the account's history ring: see :func:`history_slot`.
    """
    account = posting["account"]
    if is_system_account(account):
        return account_view
    seq = int(posting["account_seq"])
    if account_view is not None and seq <= account_view["seq"]:
        return account_view  # replayed or duplicate: already applied
    view = dict(account_view) if account_view is not None else new_account_view(account)
    view["seq"] = seq
    view["balance"] = posting["balance_after"]
    if view["currency"] is None:
        view["currency"] = posting["currency"]
    return view


# --- account history: a ring of the last HISTORY_MAX postings, slot = account_seq % N ---
#
# Kept beside the account view, one row per slot, so that a posting writes one small row
# instead of rewriting a 50-entry list. A slot holds exactly one posting (one account_seq),
# so the ring is deduplicated by construction, and writing a posting's slot is idempotent.


def history_entry(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": p["event_id"],
        "seq": p["account_seq"],
        "kind": p["kind"],
        "amount": p["amount"],
        "balance_after": p["balance_after"],
        "counterparty": p["counterparty"],
        "transfer_id": p["transfer_id"],
        "command_id": p["command_id"],
        "entry_id": p["entry_id"],
        "ts": p["ts"],
    }


def history_slot(view_after: View | None, posting: dict[str, Any]) -> int | None:
    """The ring slot the posting belongs in, or None if it is older than the last N.

    ``view_after`` is the account view after :func:`apply_posting`. A replayed posting that is
    still among the last N is written again (same slot, same content): that repairs a ring
    row lost in a crash while its view row survived.
    """
    if view_after is None or is_system_account(posting["account"]):
        return None
    seq = int(posting["account_seq"])
    if seq <= 0 or seq <= view_after["seq"] - HISTORY_MAX:
        return None
    return seq % HISTORY_MAX


def history_seqs(view: View, limit: int) -> list[int]:
    """The account_seq values of the last ``limit`` postings that the ring can hold."""
    last = view["seq"]
    n = min(limit, HISTORY_MAX, last)
    return [last - k for k in range(n)]


def recent_postings(
    view: View, slots: Mapping[int, dict[str, Any] | None], limit: int
) -> list[dict[str, Any]]:
    """Newest first: the ring's postings for the view's last ``limit`` sequence numbers.

    ``slots`` maps slot -> stored entry (None if missing); an entry whose seq is not the one
    expected in its slot (a stale row) is left out.
    """
    out = []
    for seq in history_seqs(view, limit):
        entry = slots.get(seq % HISTORY_MAX)
        if entry is not None and entry["seq"] == seq:
            out.append(entry)
    return out


def apply_account_event(view: View | None, event: dict[str, Any], offset: int) -> View | None:
    """Fold one AccountEvent; ``offset`` is its offset in the accounts topic."""
    if view is not None and offset <= view["events_offset"]:
        return view  # replayed: at or below what was applied
    new = dict(view) if view is not None else new_account_view(event["account"])
    new["events_offset"] = offset
    kind = event["kind"]
    if kind == "opened":
        new["user"] = event["user"]
        new["currency"] = event["currency"]
    if kind in _ACCOUNT_STATUS:
        new["status"] = _ACCOUNT_STATUS[kind]
        new["blocked_reason"] = event.get("reason") if kind == "blocked" else None
    elif kind == "related" and event.get("related"):
        new["related"] = {**new["related"], event["related"]: event.get("relation_kind")}
    elif kind == "unrelated" and event.get("related"):
        new["related"] = {k: v for k, v in new["related"].items() if k != event["related"]}
    return new


def account_summary(view: View) -> dict[str, Any]:
    """The public shape, as ``paystream balances --json`` (plus ``seq``)."""
    cur = view["currency"]
    balance = view["balance"]
    if balance is None and cur in CURRENCY_EXPONENTS:
        balance = format_amount(0, cur)
    return {
        "account": view["account"],
        "user": view["user"],
        "currency": cur,
        "balance": balance,
        "status": view["status"],
        "seq": view["seq"],
    }


def account_detail(view: View) -> dict[str, Any]:
    """``GET /accounts/{id}``: the summary, relations and block reason, and ``held: None``.

    The held (in-flight) amount is unknown here: a hold is released by the transfer's
    lifecycle events, which are keyed by transfer id and live in other partitions than the
    account's view. The key is there (null) so that every source of ``paystream balance``
    gives the same shape.
    """
    return {
        **account_summary(view),
        "held": None,
        "related": view["related"],
        "blocked_reason": view["blocked_reason"],
    }


# --- transfers ---


def apply_transfer_event(view: View | None, event: dict[str, Any]) -> View | None:
    """Fold one TransferEvent; status moves only forward and the first terminal wins."""
    status = event["status"]
    rank = _TRANSFER_RANK.get(status)
    if rank is None:
        return view  # unknown status from a newer writer: ignore rather than guess
    if view is None:
        return {
            "transfer_id": event["transfer_id"],
            "command_id": event["command_id"],
            "from": event["from_account"],
            "to": event["to_account"],
            "currency": event["currency"],
            "amount": event["amount"],
            "status": status,
            "reason": event.get("reason"),
            "ts": {status: event["ts"]},
        }
    current = _TRANSFER_RANK[view["status"]]
    if rank > current:
        return {
            **view,
            "status": status,
            "reason": event.get("reason"),
            "ts": {**view["ts"], status: event["ts"]},
        }
    if rank < current and status not in view["ts"]:
        # A pending seen after its terminal status still records when the money was held.
        return {**view, "ts": {**view["ts"], status: event["ts"]}}
    return view  # a replay, or a second terminal status: the first one stands


# --- command outcomes ---


def new_outcome_view(command_id: str) -> View:
    return {
        "command_id": command_id,
        "command_type": None,
        "account": None,
        "status": None,  # None while only reuse rejections are known
        "reason": None,
        "digest": None,
        "event_id": None,
        "ts": None,
        "reused": [],
    }


def is_reuse(outcome: dict[str, Any]) -> bool:
    return outcome.get("reason") == REUSE_REASON


def apply_outcome(view: View | None, outcome: dict[str, Any]) -> View | None:
    """Fold one CommandOutcome: the first original outcome stands, reuses are listed."""
    if is_reuse(outcome):
        reused = view["reused"] if view is not None else []
        if len(reused) >= REUSES_MAX or any(r["event_id"] == outcome["event_id"] for r in reused):
            return view
        new = dict(view) if view is not None else new_outcome_view(outcome["command_id"])
        new["reused"] = [
            *reused,
            {
                "event_id": outcome["event_id"],
                "account": outcome["account"],
                "command_type": outcome["command_type"],
                "digest": outcome["digest"],
                "ts": outcome["ts"],
            },
        ]
        return new
    if view is not None and view["status"] is not None:
        return view  # the original outcome stands; a replay or late duplicate changes nothing
    new = dict(view) if view is not None else new_outcome_view(outcome["command_id"])
    for k in ("command_type", "account", "status", "reason", "digest", "event_id", "ts"):
        new[k] = outcome[k]
    return new
