"""The wallet part of ``paystream demo``: two wallet users sign up, the first is funded by a
pay-in (with her own session token, through the PSP simulator), she sends the second some of
it, and both accounts are shown, checked against what must follow."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table

from base.config import Settings
from paystream.api.errors import ApiError
from paystream.api.wallet.client import WalletClient

PASSWORD = "demo passphrase, long enough"
TIMEOUT_S = 120.0


def _until(check: Any, timeout_s: float = TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def run(settings: Settings, seed: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.api_port}"
    tag = f"{seed}x{int(time.time()) % 1_000_000}"
    names = (f"ann{tag}", f"ben{tag}")
    out: dict[str, Any] = {"available": True, "users": [], "problems": []}
    with WalletClient(url) as ann, WalletClient(url) as ben:
        try:
            a = ann.sign_up(f"{names[0]}@example.com", names[0], PASSWORD)
            b = ben.sign_up(f"{names[1]}@example.com", names[1], PASSWORD)
            ann.log_in(names[0], PASSWORD)
            ben.log_in(names[1], PASSWORD)
            for w in (ann, ben):
                _until(lambda w=w: w.account()["status"] == "open")
            paid = ann.wait_payment(ann.pay_in(a["user_id"], a["account"], "50.00")["payment_id"])
            out["pay_in"] = paid["status"]
            sent = ann.wait_transfer(ann.transfer(names[1], "20.00")["transfer_id"])
            out["transfer"] = {k: sent[k] for k in ("transfer_id", "status", "reason", "amount")}
            expected = {names[0]: "30.00", names[1]: "20.00"}
            for w, name in ((ann, names[0]), (ben, names[1])):
                view = _until(
                    lambda w=w, name=name: (v := w.account())["balance"] == expected[name] and v
                )
                view = view or w.account()
                out["users"].append(view)
                if view["balance"] != expected[name]:
                    out["problems"].append(
                        f"{name}: balance {view['balance']}, expected {expected[name]}"
                    )
            if (
                b["username"] != names[1]
                or paid["status"] != "succeeded"
                or sent["status"] != "posted"
            ):
                out["problems"].append(f"pay-in {paid['status']}, transfer {sent['status']}")
        except (ApiError, OSError) as exc:
            out["problems"].append(f"the wallet did not answer as expected: {exc}")
    out["verified"] = not out["problems"]
    return out


def print_summary(s: dict[str, Any]) -> None:
    console = Console()
    if not s.get("available"):
        console.print("wallet: the payment API is not running (paystream up starts it)")
        return
    for u in s["users"]:
        t = Table(
            title=f"wallet: {u['username']} ({u['account']}): balance {u['balance']} "
            f"{u['currency']}, available {u['available']}, {u['status']}",
            title_justify="left",
        )
        for col in ("at", "kind", "amount", "counterparty", "status"):
            t.add_column(col, overflow="fold")
        for x in u["last_transactions"]:
            t.add_row(x["at"], x["kind"], x["amount"], str(x["counterparty"]), x["status"])
        console.print(t)
    console.print(
        f"wallet: pay-in {s.get('pay_in')}, transfer {s.get('transfer', {}).get('status')}; "
        f"balances as expected: {'yes' if s['verified'] else 'NO'}"
    )
    for p in s["problems"]:
        console.print(f"[red]{p}[/red]")
