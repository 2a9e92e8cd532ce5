"""The review queue's CLI verbs (docs/risk.md): ``paystream review
list|show|approve|decline|resolve``, through the payment API's review routes with the service
token (``resolve`` for reconciliation's items)."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from typing import Any

from base.config import Settings

Verb = Callable[..., argparse.ArgumentParser]


def register(sub: Any, verb: Verb) -> None:
    review = verb("review", cmd_review_help, "the review queue: payments held by the risk engine")
    rs = review.add_subparsers(dest="review_verb", metavar="REVIEW_VERB")

    def sub_verb(name: str, fn: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sp = rs.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = sub_verb("list", cmd_list, "items, overdue first, then oldest first")
    sp.add_argument("--kind", choices=["risk", "recon"])
    sp.add_argument(
        "--status", default="open", help="open (default), approved, declined, resolved, or all"
    )
    sp.add_argument("--limit", type=int, default=200)
    sp = sub_verb("show", cmd_show, "one item, with its evidence")
    sp.add_argument("id")
    for name in ("approve", "decline", "resolve"):
        sp = sub_verb(name, cmd_decide, f"{name} an item (the first decision wins)")
        sp.set_defaults(decision=name)
        sp.add_argument("id")
        sp.add_argument("--note", default="", help="why (kept with the decision)")
        sp.add_argument("--reviewer", default=None, help="who decides (default: your login)")


def _client(s: Settings) -> Any:
    from paystream.api.review_client import ReviewClient
    from paystream.bootstrap import resolved

    return ReviewClient.from_settings(resolved(s))


def _refused(exc: Any, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": exc.code, "message": exc.message}))
    else:
        print(f"refused: {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
    return 1


def cmd_review_help(a: argparse.Namespace, s: Settings) -> int:
    print("usage: paystream review list|show|approve|decline|resolve ...", file=sys.stderr)
    return 2


def cmd_list(a: argparse.Namespace, s: Settings) -> int:
    from paystream.api.errors import ApiError

    status = None if a.status == "all" else a.status
    with _client(s) as c:
        try:
            items = c.items(a.kind, status, a.limit)
        except ApiError as exc:
            return _refused(exc, a.json)
    if a.json:
        print(json.dumps(items, separators=(",", ":")))
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "id", "kind", "status", "age", "rules / category", "payment", "actions",
        title=f"{len(items)} review items", title_justify="left",
    )  # fmt: skip
    for i in items:
        age = _age(i["age_s"]) + (" OVERDUE" if i["overdue"] else "")
        why = ",".join(i["rules"]) or (i["category"] or "")
        t.add_row(
            i["id"], i["kind"], i["status"], age, why, i["payment_id"] or "", ",".join(i["actions"])
        )
    Console().print(t)
    return 0


def cmd_show(a: argparse.Namespace, s: Settings) -> int:
    from paystream.api.errors import ApiError

    with _client(s) as c:
        try:
            item = c.item(a.id)
        except ApiError as exc:
            return _refused(exc, a.json)
    print(json.dumps(item, indent=None if a.json else 2))
    return 0


def cmd_decide(a: argparse.Namespace, s: Settings) -> int:
    from paystream.api.errors import ApiError

    reviewer = a.reviewer or _login()
    with _client(s) as c:
        try:
            item, won = c.decide(a.id, a.decision, a.note, reviewer)
        except ApiError as exc:
            return _refused(exc, a.json)
    if a.json:
        print(json.dumps({**item, "decided_by_this_request": won}, separators=(",", ":")))
    elif won:
        print(f"{item['id']}: {item['status']} by {item['reviewer']}")
    else:
        print(
            f"{item['id']}: already {item['status']} by {item['reviewer']}; nothing changed",
            file=sys.stderr,
        )
    return 0 if won else 1


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _age(s: int) -> str:
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"
