"""`python -m pspsim`: serve the simulated PSPs, or write a settlement file offline."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pspsim.config import DEFAULT_HANG_S, DEFAULT_LATENCY_MS, LIMITS, SimConfig
from pspsim.psps import DEFAULT_PORTS, DEFAULT_PSPS
from pspsim.settlement import COLUMNS, parse_day, settlement_csv_offline

SERVE_EPILOG = f"""\
PSPs: {", ".join(f"{n} ({p})" for n, p in DEFAULT_PORTS.items())}.

Another command:
  python -m pspsim settlement --state-dir DIR --psp NAME --date YYYY-MM-DD [--out F.csv] [--json]
      the day's settlement file (Adyen settlement details columns), read from DIR without the
      server (it may be running or not).

Docs: docs/psp-simulator.md
"""


def _pair(text: str, what: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError(f"expected NAME={what}, got {text!r}")
    if name not in DEFAULT_PSPS:
        raise argparse.ArgumentTypeError(f"unknown PSP {name!r} (known: {', '.join(DEFAULT_PSPS)})")
    return name, value


def psp_port(text: str) -> tuple[str, int]:
    name, value = _pair(text, "PORT")
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535, got {value!r}")
    return name, int(value)


def psp_url(text: str) -> tuple[str, str]:
    name, value = _pair(text, "URL")
    if not value.startswith(("http://", "https://")):
        raise argparse.ArgumentTypeError(f"webhook URL must be http(s)://..., got {value!r}")
    return name, value


def non_negative_int(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return int(text)


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pspsim",
        description="Simulated payment service providers (PSPs) for paystream's tests: one "
        "process, one loopback port per PSP, state that survives a restart or kill -9.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="where all state lives (sqlite), and ports.json once bound",
    )
    p.add_argument(
        "--psp",
        type=psp_port,
        action="append",
        metavar="NAME=PORT",
        help="serve this PSP on this port (0: a free one); repeatable; "
        "default: all four on 8091..8094",
    )
    p.add_argument(
        "--webhook-url",
        type=psp_url,
        action="append",
        default=[],
        metavar="NAME=URL",
        help="where the PSP posts its webhooks (a token's own webhook_url wins); repeatable",
    )
    p.add_argument(
        "--webhook-secret-dir",
        type=Path,
        metavar="DIR",
        help="DIR/NAME holds the PSP's whsec_ secret, created (0600) if missing; "
        "default: STATE_DIR/webhook-secrets",
    )
    p.add_argument(
        "--latency-ms",
        type=non_negative_int,
        default=DEFAULT_LATENCY_MS,
        metavar="N",
        help=f"latency added to every API call (default "
        f"{DEFAULT_LATENCY_MS}; max {LIMITS.latency_max_ms})",
    )
    p.add_argument(
        "--hang-s",
        type=non_negative_float,
        default=DEFAULT_HANG_S,
        metavar="S",
        help=f"how long the hanging instrument holds its response (default {DEFAULT_HANG_S:g})",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="makes the asynchronous completion delays reproducible",
    )
    p.add_argument("--json", action="store_true", help="log JSON lines instead of text")
    p.add_argument("--access-log", action="store_true", help="log every request")
    return p


def settlement_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pspsim settlement",
        description="Write one PSP's settlement file for one UTC day from a state directory, "
        "in the columns of Adyen's settlement details report: " + ", ".join(COLUMNS) + ".",
    )
    p.add_argument("--state-dir", type=Path, required=True, metavar="DIR")
    p.add_argument("--psp", required=True, choices=list(DEFAULT_PSPS))
    p.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the UTC day")
    p.add_argument("--out", type=Path, metavar="F.csv", help="write here (default: stdout)")
    p.add_argument(
        "--json",
        action="store_true",
        help="print the rows as a JSON array of objects (or, with --out, a summary)",
    )
    return p


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("psp", "port"):
            if hasattr(record, key):
                doc[key] = getattr(record, key)
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _setup_logging(as_json: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else logging.Formatter("%(asctime)s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def run_serve(argv: Sequence[str]) -> int:
    args = serve_parser().parse_args(argv)
    ports = dict(args.psp or DEFAULT_PORTS.items())
    if args.psp and len(ports) != len(args.psp):
        serve_parser().error("each PSP may be given once in --psp")
    if args.latency_ms > LIMITS.latency_max_ms:
        serve_parser().error(f"--latency-ms must be at most {LIMITS.latency_max_ms}")
    cfg = SimConfig(
        state_dir=args.state_dir,
        ports=ports,
        webhook_urls=dict(args.webhook_url),
        webhook_secret_dir=args.webhook_secret_dir,
        latency_ms=args.latency_ms,
        hang_s=args.hang_s,
        seed=args.seed,
        json_logs=args.json,
        access_log=args.access_log,
    )
    _setup_logging(cfg.json_logs)
    from pspsim.app import serve  # aiohttp only for the server, not the offline tools

    asyncio.run(serve(cfg))
    return 0


def run_settlement(argv: Sequence[str]) -> int:
    p = settlement_parser()
    args = p.parse_args(argv)
    try:
        day = parse_day(args.date)
    except ValueError as e:
        p.error(str(e))
    try:
        text = settlement_csv_offline(args.state_dir, args.psp, day)
    except FileNotFoundError as e:
        print(f"pspsim settlement: {e}", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.write_text(text)
        rows = text.count("\n") - 1
        if args.json:
            print(json.dumps({"path": str(args.out), "psp": args.psp, "date": day, "rows": rows}))
        else:
            print(f"wrote {rows} rows to {args.out}")
    elif args.json:
        import csv
        import io

        print(json.dumps(list(csv.DictReader(io.StringIO(text))), indent=1))
    else:
        sys.stdout.write(text)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["settlement"]:
        return run_settlement(argv[1:])
    if argv[:1] == ["serve"]:
        argv = argv[1:]
    return run_serve(argv)
