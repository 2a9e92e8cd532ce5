"""The PSP operations verbs: ``paystream psp status``, ``psp outage``, ``psp dlq list`` and
``psp dlq replay`` (docs/psp-resilience.md), under ``paystream psp`` beside ``settlement``."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from base.config import Settings


def register(psp_sub: Any) -> None:
    sp = psp_sub.add_parser(
        "status",
        help="each PSP: circuit breaker, calls, latency and orders in flight",
        description="Each PSP's circuit breaker (state, since when), the executors' successes, "
        "failures and p50/p99 latency over the breaker window, and the orders at it.",
    )
    sp.set_defaults(fn=cmd_status)
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    sp = psp_sub.add_parser(
        "outage",
        help="make the simulator fail every call of a PSP for S seconds",
        description="Make the PSP simulator answer 503 to every call of PSP for S seconds "
        "(0 ends it): watch its breaker open, payments fall back, and the breaker close.",
    )
    sp.set_defaults(fn=cmd_outage)
    sp.add_argument("psp", help="a simulated PSP of psps.toml, e.g. cardco")
    sp.add_argument("--seconds", type=float, required=True, help="how long (0 ends it)")
    sp.add_argument("--json", action="store_true", help="machine-readable output")

    dlq = psp_sub.add_parser(
        "dlq",
        help="PSP requests whose retries were exhausted: list, replay",
        description="The PSP dead letters (paystream.psp-deadletter.v1).",
    )
    dlq.set_defaults(fn=cmd_dlq_help)
    dlq_sub = dlq.add_subparsers(dest="dlq_verb", metavar="DLQ_VERB")
    sp = dlq_sub.add_parser(
        "list",
        help="the dead letters, with their history",
        description="The dead letters not replayed yet (--all: every one), oldest first.",
    )
    sp.set_defaults(fn=cmd_dlq_list)
    sp.add_argument("--all", action="store_true", help="replayed ones too")
    sp.add_argument("--json", action="store_true", help="machine-readable output")
    sp = dlq_sub.add_parser(
        "replay",
        help="send dead letters back to the executor, with the same tokens",
        description="Send dead letters back to the executor as they were (same request, "
        "attempt and token; a fresh retry budget): the named IDs, or --all not replayed yet.",
    )
    sp.set_defaults(fn=cmd_dlq_replay)
    sp.add_argument("ids", nargs="*", metavar="ID", help="dead letter ids (psp dlq list)")
    sp.add_argument("--all", action="store_true", help="every dead letter not replayed yet")
    sp.add_argument("--json", action="store_true", help="machine-readable output")


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


def _resolved(s: Settings) -> Settings:
    from paystream.bootstrap import resolved

    return resolved(s)


def cmd_status(a: argparse.Namespace, s: Settings) -> int:
    from connectors.psp.errors import PspConfigError
    from paystream import psp_ops

    try:
        st = psp_ops.status(_resolved(s))
    except PspConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if a.json:
        _print_json(st)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"PSPs (calls over the last {st['window_s']} s, all executors)")
    for col in ("psp", "breaker", "since", "ok", "failed", "refused", "p50 ms", "p99 ms",
                "in flight (processing/pending/unknown)"):  # fmt: skip
        t.add_column(col, overflow="fold")
    for p in st["psps"]:
        f = p["in_flight"]
        t.add_row(
            p["psp"], p["breaker"]["state"], p["breaker"]["since"] or "",
            str(p["successes"]), str(p["failures"]), str(p["rejected"]),
            _ms(p["latency_ms"]["p50"]), _ms(p["latency_ms"]["p99"]),
            f"{f['total']} ({f['processing']}/{f['pending']}/{f['unknown']})",
        )  # fmt: skip
    Console().print(t)
    return 0


def _ms(v: float | None) -> str:
    return "" if v is None else f"{v:g}"


def cmd_outage(a: argparse.Namespace, s: Settings) -> int:
    import httpx

    from connectors.psp.errors import PspConfigError
    from paystream import psp_ops

    if a.seconds < 0:
        print("error: --seconds must be 0 or more", file=sys.stderr)
        return 2
    try:
        got = psp_ops.outage(s, a.psp, a.seconds)
    except (LookupError, PspConfigError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if a.json:
        _print_json(got)
    elif a.seconds:
        print(f"{a.psp}: every call fails for {a.seconds:g} s (until {got['until']})")
    else:
        print(f"{a.psp}: outage ended")
    return 0


def cmd_dlq_help(a: argparse.Namespace, s: Settings) -> int:
    print("usage: paystream psp dlq list [--all] [--json] | replay [ID...|--all]", file=sys.stderr)
    return 2


def cmd_dlq_list(a: argparse.Namespace, s: Settings) -> int:
    from paystream import psp_ops

    letters = [
        psp_ops.dead_letter_view(r)
        for r in psp_ops.dead_letters(_resolved(s))
        if a.all or r["replayed_at"] is None
    ]
    if a.json:
        _print_json(letters)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{len(letters)} PSP dead letters" + ("" if a.all else " not replayed"))
    for col in ("id", "payment", "kind", "psp", "tries", "dead at", "replayed at", "why"):
        t.add_column(col, overflow="fold")
    for d in letters:
        t.add_row(d["id"], d["payment_id"], d["kind"], d["psp"], str(d["tries"]), d["dead_at"],
                  d["replayed_at"] or "", d["reason"])  # fmt: skip
    Console().print(t)
    return 0


def cmd_dlq_replay(a: argparse.Namespace, s: Settings) -> int:
    from paystream import psp_ops

    if not a.ids and not a.all:
        print("error: name dead letter ids, or --all", file=sys.stderr)
        return 2
    try:
        done = psp_ops.replay(_resolved(s), a.ids, a.all)
    except psp_ops.UnknownDeadLetter as exc:
        print(f"error: no dead letter {exc}", file=sys.stderr)
        return 1
    if a.json:
        _print_json([psp_ops.dead_letter_view(r) for r in done])
    else:
        for r in done:
            print(
                f"replayed {r['dead_letter_id']} ({r['kind']} at {r['psp']}, payment {r['payment_id']})"
            )
        if not done:
            print("nothing to replay")
    return 0
