"""The ``paystream`` command line. Verbs, flags and ``--json`` shapes are a public contract."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from base.config import Settings, load_settings
from paystream import __version__

EPILOG = """\
environment:
  PAYSTREAM_HOME          state, logs and pid files (default: ./var in the checkout)
  PAYSTREAM_BOOTSTRAP     an external Kafka cluster (default: the embedded broker)
  PAYSTREAM_BROKER_PORT   first port of the embedded broker (default 9092)
  PAYSTREAM_PARTITIONS    partitions of new topics (default 12)
  PAYSTREAM_TOPIC_PREFIX  a namespace in front of every topic name (default none)
"""


def _print_json(value: Any) -> None:
    json.dump(value, sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


def _table(
    columns: list[str], rows: list[list[Any]], title: str | None = None, whole_first: bool = False
) -> None:
    """``whole_first``: the first column is as wide as its longest value (names that must
    read whole, such as topics), the others wrap around it."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for i, c in enumerate(columns):
        first = max((len(str(r[0])) for r in rows), default=0) if whole_first and i == 0 else None
        t.add_column(c, overflow="fold", min_width=first)  # wrap long values, never cut them
    for r in rows:
        t.add_row(*[str(v) for v in r])
    Console().print(t)


def _resolved(settings: Settings) -> Settings:
    from paystream.bootstrap import resolved

    return resolved(settings)


# --- verbs ---


def cmd_up(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import up

    st = up(s, workers=a.workers, brokers=a.brokers)
    if a.json:
        _print_json(st)
    else:
        print(f"paystream is up: Kafka {st['broker']['version']} at {st['broker']['bootstrap']}")
        for p in st["processes"]:
            print(
                f"  {p['name']:<12} {p['role']:<14} pid {p['pid']:<8} {'alive' if p['alive'] else 'DEAD'}"
            )
    return 0


def cmd_down(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import down

    stopped = down(s)
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_status(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import status

    st = status(s)
    if a.json:
        _print_json(st)
        return 0
    b = st["broker"]
    print(
        f"broker: Kafka {b['version']} at {b['bootstrap']} ({'embedded' if b['embedded'] else 'external'})"
    )

    _table(
        ["name", "role", "pid", "alive", "restarts"],
        [
            [p["name"], p["role"], p["pid"], "yes" if p["alive"] else "NO", p["restarts"]]
            for p in st["processes"]
        ],
    )
    # The last restart of each process below the table, where it fits at any width.
    for p in st["processes"]:
        r = p["last_restart"]
        if r is not None:
            gave_up = " (gave up)" if r.get("gave_up") else ""
            print(f"{p['name']} last restarted at {r['at']}{gave_up}: {r['reason']}")
    return 0 if all(p["alive"] for p in st["processes"]) else 1


def cmd_logs(a: argparse.Namespace, s: Settings) -> int:
    from ops.procs import Supervisor

    sup = Supervisor(s.home)
    names = [a.name] if a.name else [p["name"] for p in sup.list()]
    for name in names:
        path = sup.log_path(name)
        if not path.exists():
            print(f"no log for {name} at {path}", file=sys.stderr)
            continue
        lines = path.read_text(errors="replace").splitlines()[-a.lines :]
        print(f"==> {name} ({path}) <==")
        print("\n".join(lines))
    return 0


def cmd_topics(a: argparse.Namespace, s: Settings) -> int:
    from base.topics import TOPICS
    from ops.topics import topic_drift

    s = _resolved(s)
    drifts = topic_drift(s.bootstrap or "", s.topic_prefix, s.partitions, s.brokers)
    rows = [
        {"name": s.topic_prefix + t.name, "doc": t.doc, "compacted": t.compacted} for t in TOPICS
    ]
    if a.json:
        _print_json(
            {
                "topics": rows,
                "drift": [
                    d.__dict__
                    if hasattr(d, "__dict__")
                    else {
                        "topic": d.topic,
                        "what": d.what,
                        "declared": d.declared,
                        "actual": d.actual,
                    }
                    for d in drifts
                ],
            }
        )
    else:
        _table(
            ["topic", "compacted", "what it holds"],
            [[r["name"], r["compacted"], r["doc"]] for r in rows],
            whole_first=True,
        )
        for d in drifts:
            print(f"drift: {d.topic} {d.what}: declared {d.declared}, actual {d.actual}")
    return 1 if drifts else 0


def cmd_send(a: argparse.Namespace, s: Settings) -> int:
    from producers.send import send_file, send_one

    s = _resolved(s)
    if a.file:
        report = send_file(s, a.file, progress=not a.no_progress)
        print(
            f"sent {report.sent}, invalid {report.invalid}, failed {report.failed}", file=sys.stderr
        )
        return report.exit_code
    if not a.type:
        print("paystream send: give a command TYPE with its flags, or --file F", file=sys.stderr)
        return 2
    from producers.errors import InvalidCommand

    fields = {k: v for k, v in vars(a).items() if k in _send_fields() and v is not None}
    try:
        command_id, report = send_one(s, a.type, fields)
    except InvalidCommand as exc:
        print(f"paystream send: {exc}", file=sys.stderr)
        return 2
    if report.exit_code == 0:
        print(command_id)
    return report.exit_code


# --- send: the command types and their flags, from the Avro schemas (schemas/catalogue.py) ---
def _send_flags(sp: argparse.ArgumentParser) -> None:
    """TYPE and one --flag per command field (``--command-id`` for ``command_id``)."""
    from schemas.catalogue import all_fields, command_types

    sp.add_argument("type", nargs="?", help=", ".join(command_types()))
    sp.add_argument("--file", "-f", help="JSON lines to send ('-' for stdin)")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar")
    helps = {"command_id": "idempotency key (default: a new UUID, printed)"}
    for name in all_fields():
        sp.add_argument("--" + name.replace("_", "-"), dest=name, help=helps.get(name))


def _send_fields() -> tuple[str, ...]:
    from schemas.catalogue import all_fields

    return all_fields()


# --- end of send's flags ---


def cmd_wait(a: argparse.Namespace, s: Settings) -> int:
    from paystream.queries import wait

    ok = wait(_resolved(s), a.timeout)
    if not ok:
        print(f"paystream wait: not caught up after {a.timeout}s", file=sys.stderr)
        return 1
    return 0


def cmd_balances(a: argparse.Namespace, s: Settings) -> int:
    from paystream.queries import balances

    rows = [
        {k: r[k] for k in ("account", "user", "currency", "balance", "status")}
        for r in balances(_resolved(s))
    ]
    if a.json:
        _print_json(rows)
    else:
        _table(
            ["account", "user", "currency", "balance", "status"], [list(r.values()) for r in rows]
        )
    return 0


def cmd_balance(a: argparse.Namespace, s: Settings) -> int:
    from paystream.queries import account_view

    view = account_view(_resolved(s), a.account)
    if view is None:
        print(f"no account {a.account!r}", file=sys.stderr)
        return 1
    if a.json:
        _print_json(view)
        return 0
    status = view["status"]
    if view["blocked_reason"]:
        status += f": {view['blocked_reason']}"
    held = (
        f"held {view['held']}"
        if view["held"] is not None
        else "held unknown: the read side does not track holds"
    )
    print(f"{view['account']}: {view['balance']} {view['currency']} ({status}; {held})")
    return 0


def cmd_outcome(a: argparse.Namespace, s: Settings) -> int:
    from urllib.parse import quote

    from paystream.queries import outcomes, readside

    served = readside(f"/commands/{quote(a.command_id, safe='')}")
    if isinstance(served, dict) and served.get("command_id"):
        found = [{k: v for k, v in served.items() if k != "reused"}]
    else:
        found = outcomes(_resolved(s), a.command_id)
    if not found:
        print(f"no outcome yet for {a.command_id!r}", file=sys.stderr)
        return 1
    if a.json:
        _print_json(found[0] if len(found) == 1 else found)
    else:
        for o in found:
            print(
                f"{o['command_id']}: {o['status']}"
                + (f" ({o['reason']})" if o["reason"] else "")
                + f" [{o['command_type']} on {o['account']}]"
            )
    return 0


def cmd_replay(a: argparse.Namespace, s: Settings) -> int:
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from paystream.queries import replay, verify

    s = _resolved(s)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description} {task.completed} events"),
        transient=True,
        disable=a.json or not sys.stderr.isatty(),
    ) as progress:
        task = progress.add_task("replaying the ledger log", total=None)
        r = replay(s, on_progress=lambda n: progress.advance(task, n))
    problems = list(r.problems)
    if a.verify:
        problems += verify(s, r)
    rate = r.events / r.seconds if r.seconds else 0.0
    if a.json:
        _print_json(
            {
                "events": r.events,
                "seconds": round(r.seconds, 3),
                "events_per_s": round(rate),
                "accounts": sum(1 for k in r.balances if not k.startswith("@")),
                "problems": problems,
            }
        )
    else:
        print(
            f"replayed {r.events} ledger events in {r.seconds:.2f}s ({rate:,.0f}/s) over "
            f"{sum(1 for k in r.balances if not k.startswith('@'))} accounts"
        )
        for p in problems:
            print(f"MISMATCH {p}")
        if not problems:
            print(
                "the ledger log balances: zero-sum, no gaps, no duplicates"
                + (", equal to live state" if a.verify else "")
            )
    return 1 if problems else 0


def cmd_demo(a: argparse.Namespace, s: Settings) -> int:
    from paystream.demo import run_demo

    return run_demo(
        _resolved(s), accounts=a.accounts, transfers=a.transfers, seed=a.seed, as_json=a.json
    )


def cmd_warehouse(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import configure_logging, run_warehouse

    configure_logging()
    return run_warehouse(s)


def _jsonable(v: Any) -> Any:
    import datetime
    import decimal

    if isinstance(v, decimal.Decimal):
        return str(v)
    if isinstance(v, datetime.date):  # datetime too
        return v.isoformat()
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if v is None or isinstance(v, bool | int | float | str):
        return v
    return str(v)  # UUID, IP addresses, bytes...


def _query(
    s: Settings, sql: str, params: dict[str, Any] | None = None
) -> tuple[list[str], list[list[Any]]]:
    from connectors.warehouse import query_client

    result = query_client(_resolved(s)).query(sql, parameters=params or {})
    return list(result.column_names), [list(r) for r in result.result_rows]


def _on_the_warehouse(verb: str, fn: Callable[[], int]) -> int:
    """Run a warehouse verb; a refused query or an unreachable warehouse is one line on
    stderr and exit 1, never a traceback."""
    import logging
    import re

    from clickhouse_connect.driver.exceptions import ClickHouseError, OperationalError

    # The driver logs its own error before raising it; the line below says it once.
    logging.getLogger("clickhouse_connect").setLevel(logging.CRITICAL)
    try:
        return fn()
    except (OperationalError, OSError) as exc:
        cause = re.search(r"\[Errno \d+\][^\"')]*", str(exc))
        why = cause.group().strip() if cause else type(exc).__name__
        print(
            f"paystream {verb}: the warehouse does not answer ({why}); is it up?"
            " (`paystream status`)",
            file=sys.stderr,
        )
    except ClickHouseError as exc:
        print(f"paystream {verb}: {exc}", file=sys.stderr)
    return 1


def cmd_sql(a: argparse.Namespace, s: Settings) -> int:
    return _on_the_warehouse("sql", lambda: _sql(a, s))


def _sql(a: argparse.Namespace, s: Settings) -> int:
    columns, rows = _query(s, a.query)
    if a.format == "json":
        _print_json([{c: _jsonable(v) for c, v in zip(columns, r, strict=True)} for r in rows])
    elif a.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(columns)
        w.writerows([[_jsonable(v) for v in r] for r in rows])
    else:
        _table(columns, [[_jsonable(v) for v in r] for r in rows])
    return 0


def cmd_history(a: argparse.Namespace, s: Settings) -> int:
    return _on_the_warehouse("history", lambda: _history(a, s))


def _history(a: argparse.Namespace, s: Settings) -> int:
    from rich.console import Console

    from paystream.render import HISTORY_SQL, history_json, history_rows, history_table

    columns, rows = _query(s, HISTORY_SQL, {"acc": a.account})
    history = history_rows(columns, rows)
    if a.json:
        _print_json(history_json(history))
    else:
        console = Console()
        console.print(history_table(a.account, history, console))
    return 0 if rows else 1


def cmd_trace(a: argparse.Namespace, s: Settings) -> int:
    return _on_the_warehouse("trace", lambda: _trace(a, s))


def _trace(a: argparse.Namespace, s: Settings) -> int:
    from paystream.audit import trace

    tree = trace(_resolved(s), a.account, a.depth)
    if a.json:
        _print_json(tree)
    else:
        from rich.console import Console

        from paystream.render import trace_tree

        Console().print(trace_tree(tree))
    return 0


def cmd_audit(a: argparse.Namespace, s: Settings) -> int:
    return _on_the_warehouse("audit", lambda: _audit(a, s))


def _audit(a: argparse.Namespace, s: Settings) -> int:
    from paystream.audit import audit

    report = audit(_resolved(s))
    if a.json:
        _print_json(report)
    else:
        print(
            f"live accounts {report['live_accounts']}, replayed {report['replayed_events']} ledger events, "
            f"warehouse accounts {report['warehouse_accounts']}"
        )
        for d in report["differences"]:
            print(f"DIFFERENCE {d}")
        if not report["differences"]:
            print("write side, ledger replay and warehouse agree on every balance")
    return 1 if report["differences"] else 0


def cmd_readside(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import configure_logging, run_readside_process

    configure_logging()
    return run_readside_process(s, a.web_port)


def cmd_detector(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import configure_logging, run_detector_process

    configure_logging()
    return run_detector_process(s, a.max_hops, a.window_s)


def cmd_alerts(a: argparse.Namespace, s: Settings) -> int:
    from streams.detector.app import read_alerts

    alerts = read_alerts(_resolved(s))
    if a.kind:
        alerts = [x for x in alerts if x["kind"] == a.kind]
    if a.account:
        alerts = [x for x in alerts if a.account in x["accounts"]]
    alerts.sort(key=lambda x: (x["ts"], x["alert_id"]))
    if a.json:
        keys = ("alert_id", "kind", "accounts", "transfer_ids", "amounts", "ts")
        _print_json([{k: _jsonable(x.get(k)) for k in keys} for x in alerts])
    else:
        _table(
            ["kind", "accounts", "transfers", "amounts"],
            [
                [
                    x["kind"],
                    " -> ".join(x["accounts"]),
                    len(x["transfer_ids"]),
                    ", ".join(x["amounts"]),
                ]
                for x in alerts
            ],
            title=f"{len(alerts)} alerts",
        )
    return 0


def cmd_worker(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import configure_logging, run_worker

    configure_logging()
    return run_worker(s, a.instance)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="paystream",
        description="A Kafka-native, exactly-once payment ledger.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"paystream {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str,
        fn: Callable[[argparse.Namespace, Settings], int],
        help: str,
        json_flag: bool = False,
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = verb(
        "up", cmd_up, "start whatever part of the stack is not running; return when ready", True
    )
    sp.add_argument(
        "--workers", type=int, help="ledger worker processes (default: last value, or 2)"
    )
    sp.add_argument("--brokers", type=int, help="embedded Kafka brokers (1, or 3 for a cluster)")
    verb("down", cmd_down, "stop what `up` started (data is kept)")
    verb("status", cmd_status, "the broker and every process, alive or not", True)
    sp = verb("logs", cmd_logs, "the last lines of each process log")
    sp.add_argument("name", nargs="?", help="one process (see `status`)")
    sp.add_argument("-n", "--lines", type=int, default=40)
    verb("topics", cmd_topics, "declared topics, and drift from the broker's actual config", True)

    sp = verb("send", cmd_send, "send one command (TYPE --flags) or a JSON-lines file")
    _send_flags(sp)

    sp = verb("wait", cmd_wait, "return once every command produced before the call is processed")
    sp.add_argument(
        "--timeout", type=float, default=120.0, help="seconds (default 120); exit 1 after"
    )
    sp = verb("balances", cmd_balances, "every customer account and its balance", True)
    sp.add_argument(
        "--source",
        choices=["auto", "readside", "changelog"],
        default="auto",
        help="the read side's views (default, when running) or the write side's changelog",
    )
    sp = verb("balance", cmd_balance, "one account", True)
    sp.add_argument("account")
    sp = verb("outcome", cmd_outcome, "what became of a command", True)
    sp.add_argument("command_id")
    sp = verb("replay", cmd_replay, "rebuild every balance from the ledger log alone", True)
    sp.add_argument(
        "--verify",
        action="store_true",
        help="compare with the live state; exit 1 on any difference",
    )
    sp = verb("demo", cmd_demo, "send a phased demo workload and print a verified summary", True)
    sp.add_argument("--accounts", type=int, default=2000)
    sp.add_argument("--transfers", type=int, default=20000)
    sp.add_argument("--seed", type=int, default=7)
    sp = verb("sql", cmd_sql, "run SQL on the audit warehouse (read-only)")
    sp.add_argument("query")
    sp.add_argument("--format", choices=["json", "table", "csv"], default="table")
    sp = verb(
        "history",
        cmd_history,
        "an account's whole history from the warehouse, with running balances",
        True,
    )
    sp.add_argument("account")
    sp = verb("trace", cmd_trace, "where an account's money went and where it came from", True)
    sp.add_argument("account")
    sp.add_argument("--depth", type=int, default=2, help="hops to follow (default 2, at most 6)")
    verb(
        "audit",
        cmd_audit,
        "compare write side, ledger replay and warehouse balances; exit 1 on any difference",
        True,
    )
    sp = verb(
        "alerts",
        cmd_alerts,
        "money moving between related accounts: direct, through intermediaries, cycles",
        True,
    )
    sp.add_argument("--kind", choices=["related_direct", "related_indirect", "cycle"])
    sp.add_argument("--account", help="only alerts whose path includes this account")
    from paystream.cli_payments import register as register_payments

    register_payments(sub, verb)
    from paystream.cli_schedule import register as register_schedules

    register_schedules(sub, verb)
    from paystream.cli_wallet import register as register_wallet

    register_wallet(sub, verb)
    from paystream.cli_risk import register as register_risk

    register_risk(sub, verb)
    from paystream.cli_review import register as register_review

    register_review(sub, verb)
    from paystream.cli_recon import register as register_recon

    register_recon(sub, verb)
    sp = sub.add_parser("readside")  # internal: the faust read side
    sp.set_defaults(fn=cmd_readside)
    sp.add_argument("--web-port", type=int, default=6066)
    sp = sub.add_parser("detector")  # internal: the related-transfer detector
    sp.set_defaults(fn=cmd_detector)
    # `paystream up` passes its environment on: PAYSTREAM_DETECTOR_MAX_HOPS / _WINDOW_S.
    sp.add_argument(
        "--max-hops", type=int, default=int(os.environ.get("PAYSTREAM_DETECTOR_MAX_HOPS", "4"))
    )
    sp.add_argument(
        "--window-s",
        type=float,
        default=float(os.environ.get("PAYSTREAM_DETECTOR_WINDOW_S", str(7 * 86400))),
    )
    sp = sub.add_parser("warehouse")  # internal: the warehouse process
    sp.set_defaults(fn=cmd_warehouse)
    sp = sub.add_parser("worker")  # internal: no help, so it stays out of the list
    sp.set_defaults(fn=cmd_worker)
    sp.add_argument("--instance", type=int, required=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings()
    try:
        return int(args.fn(args, settings))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `paystream ... | head`: the reader left, which is fine
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
