"""The read side's projections: their rules, and idempotence under at-least-once replay."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streams.ledger.money import format_amount
from streams.readside import projections as pj

# --- event builders (the records' shapes are the Avro schemas') ---


def posting(account: str, seq: int, amount: int, balance: int | None, **kw: Any) -> dict[str, Any]:
    cmd = kw.pop("command_id", f"c-{account}-{seq}")
    p = {
        "event_id": f"{account}/{cmd}/{seq}/d",
        "entry_id": f"{account}/{cmd}/{seq}",
        "command_id": cmd,
        "transfer_id": kw.pop("transfer_id", None),
        "account": account,
        "counterparty": kw.pop("counterparty", "@world/USD"),
        "currency": kw.pop("currency", "USD"),
        "amount": format_amount(amount, "USD"),
        "balance_after": None if balance is None else format_amount(balance, "USD"),
        "account_seq": seq,
        "kind": kw.pop("kind", "deposit" if amount > 0 else "withdrawal"),
        "ts": 1_700_000_000_000_000 + seq,
    }
    p.update(kw)
    return p


def account_event(account: str, kind: str, n: int, **kw: Any) -> dict[str, Any]:
    e = {
        "event_id": f"{account}/cmd-{n}/{kind}",
        "command_id": f"cmd-{n}",
        "account": account,
        "kind": kind,
        "user": None,
        "currency": None,
        "related": None,
        "relation_kind": None,
        "reason": None,
        "ts": n,
    }
    e.update(kw)
    return e


def transfer_event(tid: str, status: str, reason: str | None = None) -> dict[str, Any]:
    return {
        "event_id": f"a/{tid}/{status}",
        "transfer_id": tid,
        "command_id": tid,
        "from_account": "a",
        "to_account": "b",
        "currency": "USD",
        "amount": "1.00",
        "status": status,
        "reason": reason,
        "ts": {"pending": 1, "posted": 2, "voided": 3}[status],
    }


def outcome(
    cid: str, status: str = "accepted", reason: str | None = None, digest: str = "d0"
) -> dict[str, Any]:
    event_id = f"a/{cid}/outcome"
    if reason == pj.REUSE_REASON:
        event_id += f"/reused/{digest}"
    return {
        "event_id": event_id,
        "command_id": cid,
        "command_type": "deposit",
        "account": "a",
        "status": status,
        "reason": reason,
        "digest": digest,
        "ts": 5,
    }


# --- rules ---


def test_posting_takes_the_balance_from_balance_after_and_ignores_old_sequences() -> None:
    v = pj.apply_posting(None, posting("a", 1, 1000, 1000))
    v = pj.apply_posting(v, posting("a", 2, -250, 750))
    assert v is not None
    assert (v["balance"], v["seq"], v["currency"]) == ("7.50", 2, "USD")
    # A replay of seq 1 or 2 returns the very same object: the caller can tell "no change".
    assert pj.apply_posting(v, posting("a", 1, 1000, 1000)) is v
    assert pj.apply_posting(v, posting("a", 2, -250, 750)) is v


def test_system_accounts_have_no_view() -> None:
    p = posting("@clearing/USD", 0, -100, None)
    assert pj.apply_posting(None, p) is None
    assert pj.history_slot(None, p) is None


def test_history_ring_keeps_the_last_n_newest_first() -> None:
    view: pj.View | None = None
    ring: dict[int, dict[str, Any]] = {}
    for seq in range(1, 131):
        p = posting("a", seq, 100, 100 * seq)
        view = pj.apply_posting(view, p)
        slot = pj.history_slot(view, p)
        assert slot is not None
        ring[slot] = pj.history_entry(p)
    assert view is not None
    got = pj.recent_postings(view, ring, 500)
    assert [e["seq"] for e in got] == list(range(130, 130 - pj.HISTORY_MAX, -1))
    assert [e["seq"] for e in pj.recent_postings(view, ring, 3)] == [130, 129, 128]
    # A posting older than the window does not go back into the ring.
    assert pj.history_slot(view, posting("a", 130 - pj.HISTORY_MAX, 100, 1)) is None
    assert pj.history_slot(view, posting("a", 131 - pj.HISTORY_MAX, 100, 1)) is not None


def test_recent_postings_skips_missing_and_stale_slots() -> None:
    view = pj.new_account_view("a") | {"seq": 3}
    ring = {3: pj.history_entry(posting("a", 3, 1, 3)), 2: pj.history_entry(posting("a", 52, 1, 3))}
    assert [e["seq"] for e in pj.recent_postings(view, ring, 20)] == [3]


def test_account_events_status_and_relations() -> None:
    v = pj.apply_account_event(None, account_event("a", "opened", 1, user="u", currency="JPY"), 0)
    v = pj.apply_account_event(v, account_event("a", "blocked", 2, reason="court"), 1)
    v = pj.apply_account_event(
        v, account_event("a", "related", 3, related="b", relation_kind="family"), 2
    )
    assert v is not None
    assert (v["user"], v["currency"], v["status"], v["blocked_reason"]) == (
        "u",
        "JPY",
        "blocked",
        "court",
    )
    assert v["related"] == {"b": "family"}
    v = pj.apply_account_event(v, account_event("a", "unblocked", 4), 3)
    v = pj.apply_account_event(v, account_event("a", "unrelated", 5, related="b"), 4)
    assert v is not None
    assert (v["status"], v["related"], v["blocked_reason"]) == ("open", {}, None)
    # Replaying the older "blocked" (offset 1) must not flip the status back.
    assert pj.apply_account_event(v, account_event("a", "blocked", 2), 1) is v
    assert pj.account_summary(v) == {
        "account": "a",
        "user": "u",
        "currency": "JPY",
        "balance": "0",
        "status": "open",
        "seq": 0,
    }


def test_a_posting_before_the_opened_event_still_converges() -> None:
    v = pj.apply_posting(None, posting("a", 1, 500, 500))
    v = pj.apply_account_event(v, account_event("a", "opened", 1, user="u", currency="USD"), 0)
    assert v is not None
    assert pj.account_summary(v) | {} == {
        "account": "a",
        "user": "u",
        "currency": "USD",
        "balance": "5.00",
        "status": "open",
        "seq": 1,
    }


def test_transfer_status_only_moves_forward() -> None:
    v = pj.apply_transfer_event(None, transfer_event("t", "pending"))
    v = pj.apply_transfer_event(v, transfer_event("t", "posted"))
    assert v is not None and v["status"] == "posted"
    assert pj.apply_transfer_event(v, transfer_event("t", "pending")) is v
    assert (
        pj.apply_transfer_event(v, transfer_event("t", "voided", "x")) is v
    )  # first terminal wins
    # Seen out of order (a replayed pending after its posted): status stays, both times kept.
    w = pj.apply_transfer_event(None, transfer_event("t", "posted"))
    w = pj.apply_transfer_event(w, transfer_event("t", "pending"))
    assert w == v
    voided = pj.apply_transfer_event(None, transfer_event("t", "voided", "credit_account_blocked"))
    assert voided is not None and (voided["status"], voided["reason"]) == (
        "voided",
        "credit_account_blocked",
    )
    assert (
        pj.apply_transfer_event(voided, {**transfer_event("t", "pending"), "status": "weird"})
        is voided
    )


def test_the_first_outcome_stands_and_reuses_are_listed_once() -> None:
    reuse1 = outcome("c", "rejected", pj.REUSE_REASON, "d1")
    reuse2 = outcome("c", "rejected", pj.REUSE_REASON, "d2")
    v = pj.apply_outcome(None, reuse1)  # a reuse seen first leaves the outcome unknown
    assert v is not None and v["status"] is None and len(v["reused"]) == 1
    v = pj.apply_outcome(v, outcome("c"))
    v = pj.apply_outcome(v, reuse2)
    v = pj.apply_outcome(v, outcome("c", "rejected", "insufficient_funds"))
    assert v is not None
    assert (v["status"], v["reason"]) == ("accepted", None)
    assert [r["digest"] for r in v["reused"]] == ["d1", "d2"]
    assert pj.apply_outcome(v, reuse1) is v


def test_views_are_json_and_never_mutated() -> None:
    v = pj.apply_posting(None, posting("a", 1, 1, 1))
    frozen = copy.deepcopy(v)
    pj.apply_posting(v, posting("a", 2, 1, 2))
    pj.apply_account_event(v, account_event("a", "related", 1, related="b", relation_kind="k"), 0)
    assert v == frozen
    assert json.loads(json.dumps(v)) == v


# --- idempotence under at-least-once replay (property based) ---
#
# A log is a list of (topic, record) in log order. The read side folds it like the app does:
# accounts from ledger + accounts, the history ring, transfers and outcomes.

Log = list[tuple[str, dict[str, Any]]]


class Fold:
    def __init__(self) -> None:
        self.accounts: dict[str, Any] = {}
        self.ring: dict[tuple[str, int], Any] = {}
        self.transfers: dict[str, Any] = {}
        self.outcomes: dict[str, Any] = {}

    def apply(self, topic: str, offset: int, e: dict[str, Any]) -> bool:
        """Fold one event; True if any view (or ring row) changed."""
        if topic == "ledger":
            a = e["account"]
            old = self.accounts.get(a)
            new = pj.apply_posting(old, e)
            if new is not None:
                self.accounts[a] = new
            slot = pj.history_slot(new, e)
            changed = new is not old
            if slot is not None:
                entry = pj.history_entry(e)
                changed |= self.ring.get((a, slot)) != entry
                self.ring[(a, slot)] = entry
            return changed
        table, key, fold = {
            "accounts": (self.accounts, "account", lambda v: pj.apply_account_event(v, e, offset)),
            "transfers": (self.transfers, "transfer_id", lambda v: pj.apply_transfer_event(v, e)),
            "outcomes": (self.outcomes, "command_id", lambda v: pj.apply_outcome(v, e)),
        }[topic]
        old = table.get(e[key])
        table[e[key]] = fold(old)
        return table[e[key]] is not old

    def state(self) -> dict[str, Any]:
        history = {
            a: pj.recent_postings(v, {s: e for (b, s), e in self.ring.items() if b == a}, 500)
            for a, v in self.accounts.items()
        }
        return {
            "accounts": self.accounts,
            "history": history,
            "transfers": self.transfers,
            "outcomes": self.outcomes,
        }


@st.composite
def logs(draw: Callable[..., Any]) -> dict[str, list[dict[str, Any]]]:
    """Per-topic logs of a small random ledger history."""
    n_accounts = draw(st.integers(1, 4))
    accounts = [f"a{i}" for i in range(n_accounts)]
    ledger: list[dict[str, Any]] = []
    acct_events: list[dict[str, Any]] = []
    seqs = dict.fromkeys(accounts, 0)
    balances = dict.fromkeys(accounts, 0)
    for i, a in enumerate(accounts):
        acct_events.append(account_event(a, "opened", i, user=f"u{i}", currency="USD"))
    for n in range(draw(st.integers(0, 90))):
        a = draw(st.sampled_from(accounts))
        kind = draw(
            st.sampled_from(
                ["post", "post", "post", "system", "block", "unblock", "relate", "unrelate"]
            )
        )
        if kind == "post":
            amount = draw(st.integers(-500, 500).filter(bool))
            seqs[a] += 1
            balances[a] += amount
            ledger.append(posting(a, seqs[a], amount, balances[a], command_id=f"p{n}"))
        elif kind == "system":
            ledger.append(posting("@world/USD", 0, 1, None, command_id=f"s{n}"))
        else:
            other = draw(st.sampled_from(accounts))
            extra = {"related": other, "relation_kind": "family"} if "relate" in kind else {}
            event_kind = {
                "block": "blocked",
                "unblock": "unblocked",
                "relate": "related",
                "unrelate": "unrelated",
            }[kind]
            acct_events.append(account_event(a, event_kind, 100 + n, **extra))
    transfers: list[dict[str, Any]] = []
    for t in range(draw(st.integers(0, 6))):
        transfers.append(transfer_event(f"t{t}", "pending"))
        end = draw(st.sampled_from([None, "posted", "voided"]))
        if end:
            transfers.append(transfer_event(f"t{t}", end, "r" if end == "voided" else None))
    outcomes: list[dict[str, Any]] = []
    for c in range(draw(st.integers(0, 6))):
        for d in range(draw(st.integers(1, 4))):
            reuse = d > 0 and draw(st.booleans())
            if reuse:
                outcomes.append(
                    outcome(f"c{c}", "rejected", pj.REUSE_REASON, f"d{draw(st.integers(0, 3))}")
                )
            else:
                outcomes.append(outcome(f"c{c}", draw(st.sampled_from(["accepted", "rejected"]))))
    return {"ledger": ledger, "accounts": acct_events, "transfers": transfers, "outcomes": outcomes}


@st.composite
def replayed(
    draw: Callable[..., Any], log: list[dict[str, Any]]
) -> list[tuple[int, dict[str, Any]]]:
    """What an at-least-once consumer sees: crashes rewind to any earlier (committed) offset."""
    out: list[tuple[int, dict[str, Any]]] = []
    pos = 0
    for _ in range(draw(st.integers(0, 4))):
        if not log:
            break
        crash_at = draw(st.integers(pos, len(log)))
        out.extend((i, log[i]) for i in range(pos, crash_at))
        pos = draw(st.integers(0, crash_at))  # resume at or below what was processed
    out.extend((i, log[i]) for i in range(pos, len(log)))
    if out and draw(st.booleans()):  # a duplicate delivered right away
        k = draw(st.integers(0, len(out) - 1))
        out.insert(k, out[k])
    return out


def fold_once(topics: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    f = Fold()
    for topic, log in topics.items():
        for offset, e in enumerate(log):
            f.apply(topic, offset, e)
    return f.state()


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.data(), topics=logs())
def test_replays_and_duplicates_change_nothing(data: st.DataObject, topics: dict[str, Any]) -> None:
    once = fold_once(topics)
    # Each topic partition rewinds on its own; the agents interleave in any order.
    streams = {t: data.draw(replayed(log), label=t) for t, log in topics.items()}
    rng = data.draw(st.randoms(use_true_random=False), label="interleaving")
    merged: list[tuple[str, int, dict[str, Any]]] = []
    cursors = dict.fromkeys(streams, 0)
    while live := [t for t, s in streams.items() if cursors[t] < len(s)]:
        t = rng.choice(live)
        offset, e = streams[t][cursors[t]]
        cursors[t] += 1
        merged.append((t, offset, e))
    f = Fold()
    high = dict.fromkeys(topics, -1)
    checks = set(data.draw(st.lists(st.integers(0, max(0, len(merged) - 1)), max_size=4)))
    for step, (t, offset, e) in enumerate(merged):
        changed = f.apply(t, offset, e)
        # A replayed or duplicate event (at or below what was applied) changes nothing at
        # all, not even for a while: views never go back to an older state.
        assert not (changed and offset <= high[t]), (t, offset, e)
        high[t] = max(high[t], offset)
        if step in checks:
            prefix = {k: log[: high[k] + 1] for k, log in topics.items()}
            assert f.state() == fold_once(prefix)
    assert f.state() == once


@hypothesis_settings(max_examples=100, deadline=None)
@given(topics=logs())
def test_the_fold_matches_the_log(topics: dict[str, Any]) -> None:
    """Balances, seqs, statuses and the ring agree with a direct reading of the log."""
    state = fold_once(topics)
    for a, v in state["accounts"].items():
        mine = [p for p in topics["ledger"] if p["account"] == a]
        assert v["seq"] == len(mine)
        assert v["balance"] == (mine[-1]["balance_after"] if mine else None)
        assert [h["seq"] for h in state["history"][a]] == [
            p["account_seq"] for p in reversed(mine)
        ][: pj.HISTORY_MAX]
        statuses = [
            e["kind"]
            for e in topics["accounts"]
            if e["account"] == a and e["kind"] != "related" and e["kind"] != "unrelated"
        ]
        assert (
            v["status"]
            == {"opened": "open", "unblocked": "open", "blocked": "blocked"}[statuses[-1]]
        )
    for t, v in state["transfers"].items():
        last = [e for e in topics["transfers"] if e["transfer_id"] == t][-1]
        assert v["status"] == last["status"]
    for c, v in state["outcomes"].items():
        originals = [o for o in topics["outcomes"] if o["command_id"] == c and not pj.is_reuse(o)]
        assert v["status"] == (originals[0]["status"] if originals else None)


@pytest.mark.parametrize("limit", [1, 20, 50])
def test_history_seqs_never_go_below_one(limit: int) -> None:
    view = pj.new_account_view("a") | {"seq": 3}
    assert pj.history_seqs(view, limit) == [3, 2, 1][:limit]


def test_the_openapi_file_is_the_served_document() -> None:
    """streams/readside/openapi.json is regenerated with ``make openapi`` when views change."""
    from pathlib import Path

    from streams.readside.app import openapi_document

    path = Path(pj.__file__).with_name("openapi.json")
    assert json.loads(path.read_text()) == openapi_document()
