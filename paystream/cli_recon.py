"""Reconciliation's CLI verbs (docs/recon.md): ``paystream recon settlement`` (a PSP's
settlement file against the ledger) and ``paystream recon internal`` (the hourly check)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from base.config import Settings
from streams.recon.limits import LAG_DAYS_DEFAULT

Verb = Callable[..., argparse.ArgumentParser]


def register(sub: Any, verb: Verb) -> None:
    recon = verb("recon", cmd_recon_help, "reconciliation: PSP settlement files vs. the ledger")
    rs = recon.add_subparsers(dest="recon_verb", metavar="RECON_VERB")
    help = "import a PSP's settlement file (Adyen columns) and reconcile it"
    sp = rs.add_parser("settlement", help=help, description=help)
    sp.set_defaults(fn=cmd_settlement)
    sp.add_argument("--psp", required=True, help="the PSP whose file it is")
    sp.add_argument("--file", required=True, type=Path, help="the settlement file (CSV)")
    sp.add_argument("--dry-run", action="store_true", help="report only: apply nothing")
    sp.add_argument(
        "--lag-days", type=int, default=LAG_DAYS_DEFAULT,
        help=f"settlement lag: an order is missing only this many days on (T+{LAG_DAYS_DEFAULT})",
    )  # fmt: skip
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    help = "the hourly check: order states vs. ledger vs. warehouse, and every balance"
    sp = rs.add_parser("internal", help=help, description=help)
    sp.set_defaults(fn=cmd_internal)
    sp.add_argument("--dry-run", action="store_true", help="report only: apply nothing")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def cmd_recon_help(a: argparse.Namespace, s: Settings) -> int:
    print("usage: paystream recon settlement|internal ...", file=sys.stderr)
    return 2


def cmd_settlement(a: argparse.Namespace, s: Settings) -> int:
    from paystream.cli import _on_the_warehouse

    return _on_the_warehouse("recon settlement", lambda: _settlement(a, s))


def _settlement(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import resolved
    from paystream.recon_settlement import settle
    from streams.recon.model import FileRefused

    try:
        report = settle(resolved(s), a.psp, a.file, a.dry_run, a.lag_days)
    except FileRefused as exc:
        if a.json:
            print(json.dumps({"error": exc.refusal.name, "message": str(exc), "line": exc.line,
                              "column": exc.column}))  # fmt: skip
        else:
            print(f"paystream recon settlement: {a.file}: refused: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"paystream recon settlement: {exc}", file=sys.stderr)
        return 2
    out = report.as_json()
    if a.json:
        print(json.dumps(out, separators=(",", ":")))
        return 0
    print(
        f"{out['file']} ({out['psp']}): {out['rows']} rows, {out['matched']} matched, "
        f"{len(out['mismatches'])} mismatches{' (dry run: nothing applied)' if a.dry_run else ''}"
    )
    for m in out["mismatches"]:
        print(
            f"  {m['category']:<24} {m['payment_order_id'] or '-'} {m['psp_reference'] or '-'}"
            f" expected {m['expected']} found {m['found']}: {m['resolution']} ({m['action']})"
        )
    return 0


def cmd_internal(a: argparse.Namespace, s: Settings) -> int:
    from paystream.cli import _on_the_warehouse

    return _on_the_warehouse("recon internal", lambda: _internal(a, s))


def _internal(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import resolved
    from paystream.recon_internal import check

    out = check(resolved(s), apply=not a.dry_run).as_json()
    if a.json:
        print(json.dumps(out, separators=(",", ":")))
        return 0
    print(
        f"{out['orders']} orders, {out['accounts']} accounts: {len(out['mismatches'])} mismatches"
    )
    for m in out["mismatches"]:
        print(
            f"  {m['category']:<30} {m['subject']} expected {m['expected']} found {m['found']}:"
            f" {m['resolution']} ({m['action']})"
        )
    return 0
