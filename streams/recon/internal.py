"""The hourly internal check's pure core (docs/recon.md): the payments workers' order states
against the ledger's postings and the warehouse's rows, each difference in a category with
its resolution."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from .errors import InvariantViolation

# Statuses in which the PSP may still move money (streams.payments.statuses.AT_PSP).
IN_FLIGHT = frozenset({"processing", "pending", "unknown"})


class InternalCategory(StrEnum):
    psp_succeeded_ledger_missing = "psp_succeeded_ledger_missing"
    ledger_posted_psp_failed = "ledger_posted_psp_failed"
    stuck_in_flight = "stuck_in_flight"
    wallet_mismatch = "wallet_mismatch"
    warehouse_lag = "warehouse_lag"


class InternalAction(StrEnum):
    post = "post"  # the ledger command again, with its deterministic id (a redo is a no-op)
    ask_psp = "ask_psp"  # a status request to the PSP (then the janitor)
    wait = "wait"  # the warehouse trails the log: checked again
    review = "review"


AUTO = frozenset({InternalAction.post, InternalAction.ask_psp, InternalAction.wait})


@dataclass(frozen=True, slots=True)
class LiveOrder:
    """An order as the payments workers hold it (their state changelog)."""

    payment_order_id: str
    type: str  # pay_in | pay_out
    status: str
    version: int
    updated_at: int  # µs: its last change
    psp: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    category: InternalCategory
    subject: str  # a payment order id, or an account
    expected: str | None
    found: str | None
    action: InternalAction
    evidence: dict[str, object] = field(default_factory=dict, compare=False)

    @property
    def resolution(self) -> str:
        return "auto_resolved" if self.action in AUTO else "review"


def posting_step(type_: str) -> str:
    """The ledger step that books a succeeded order's money with its PSP."""
    return "settle" if type_ == "pay_in" else "post"


def check_orders(
    live: Iterable[LiveOrder],
    warehouse_versions: Mapping[str, int],
    postings: Collection[str],
    now_us: int,
    deadline_s: float,
    grace_s: float,
) -> list[Finding]:
    """``postings``: command ids (``<order>/settle|post``) the warehouse shows posted."""
    if deadline_s <= 0 or grace_s < 0:
        raise InvariantViolation("the deadline must be positive and the grace not negative")
    out: list[Finding] = []
    for o in sorted(live, key=lambda o: o.payment_order_id):
        age_s = (now_us - o.updated_at) / 1_000_000
        ev: dict[str, object] = {
            "status": o.status, "version": o.version, "psp": o.psp, "age_s": int(age_s),
            "warehouse_version": warehouse_versions.get(o.payment_order_id),
        }  # fmt: skip
        wv = warehouse_versions.get(o.payment_order_id)
        if wv is None or wv < o.version:
            out.append(
                Finding(
                    InternalCategory.warehouse_lag, o.payment_order_id, f"v{o.version}",
                    f"v{wv}" if wv is not None else None, InternalAction.wait, ev,
                )
            )  # fmt: skip
            continue
        posted = f"{o.payment_order_id}/{posting_step(o.type)}" in postings
        if o.status == "succeeded" and not posted:
            action = InternalAction.wait if age_s < grace_s else InternalAction.post
            cat = (
                InternalCategory.warehouse_lag
                if action is InternalAction.wait
                else InternalCategory.psp_succeeded_ledger_missing
            )
            out.append(Finding(cat, o.payment_order_id, "posted", None, action, ev))
        elif o.status == "posting" and not posted and age_s >= deadline_s:
            out.append(
                Finding(
                    InternalCategory.psp_succeeded_ledger_missing, o.payment_order_id,
                    "posted", None, InternalAction.post, ev,
                )
            )  # fmt: skip
        elif o.status in ("failed", "reversing") and posted:
            out.append(
                Finding(
                    InternalCategory.ledger_posted_psp_failed, o.payment_order_id, o.status,
                    "posted", InternalAction.review, ev,
                )
            )  # fmt: skip
        elif o.status in IN_FLIGHT and age_s >= deadline_s:
            out.append(
                Finding(
                    InternalCategory.stuck_in_flight, o.payment_order_id,
                    f"answered within {int(deadline_s)} s", f"{o.status} for {int(age_s)} s",
                    InternalAction.ask_psp, ev,
                )
            )  # fmt: skip
    return out


def check_balances(differences: Iterable[str]) -> list[Finding]:
    """``audit``'s differences (write side vs. replay vs. warehouse), one finding each."""
    out = []
    for d in differences:
        account = d.split(":", 1)[0]
        out.append(
            Finding(
                InternalCategory.wallet_mismatch, account, None, d, InternalAction.review,
                {"difference": d},
            )
        )  # fmt: skip
    return out
