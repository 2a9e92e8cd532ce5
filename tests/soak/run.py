"""One soak run, from nothing: stack up, the plan's phases under chaos, drain, verify, verdict.

``python -m tests.soak --help`` (``make soak``) for the knobs; exit status 0 only if every
check passed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

from base.config import Settings, load_settings
from base.logs import configure_logging
from tests.soak.chaos import Chaos, chaos_checks, schedule
from tests.soak.drain import drain_all, wait_ledger
from tests.soak.plan import RAW, Command, SoakConfig, build_plan, model
from tests.soak.stack import SoakStack
from tests.soak.verdict import Verdict, print_verdict
from tests.soak.verify import Verifier, liveness_check


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _send(stack: SoakStack, path: Path, cmds: list[Command]) -> Any:
    from producers.send import send_file

    with path.open("w") as f:
        for c in cmds:
            f.write((c[RAW] if RAW in c else json.dumps(c)) + "\n")
    return send_file(stack.resolved, str(path), progress=False, err=io.StringIO())


def run_soak(cfg: SoakConfig, settings: Settings) -> Verdict:
    """One soak run; ``settings`` are the caller's (the soak's own stack overrides where it
    runs: its home, ports, broker and warehouse)."""
    from rich.console import Console

    err = Console(stderr=True, highlight=False)

    def say(msg: str) -> None:
        if not cfg.quiet:
            err.print(msg, markup=False)

    started = time.time()
    t_start = time.monotonic()
    plan = build_plan(cfg)
    exp = model(plan)
    actions = schedule(cfg)
    made_home = cfg.home is None
    home = Path(cfg.home or tempfile.mkdtemp(prefix="paystream-soak-")).resolve()
    home.mkdir(parents=True, exist_ok=True)
    say(
        f"[soak] seed {cfg.seed}: {exp.by_type['transfer']} transfers, "
        f"{sum(exp.by_type.values())} commands in {len(plan.phases)} phases; "
        f"{cfg.kills} kills over {cfg.schedule_span_s():.0f}s, broker restart: {cfg.broker}; "
        f"home {home}"
    )
    stack = SoakStack(home, cfg, settings)
    chaos: Chaos | None = None
    phases: list[dict[str, Any]] = []
    drain: dict[str, Any] = {}
    verifier: Verifier | None = None
    failure: str | None = None
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        t0 = time.monotonic()
        stack.up()
        up_s = time.monotonic() - t0
        say(f"[soak] stack up in {up_s:.1f}s (bootstrap {stack.resolved.bootstrap})")
        chaos = Chaos(stack, actions, say)
        chaos.start()
        workload_t0 = time.monotonic()
        files = home / "commands"
        files.mkdir(exist_ok=True)
        for i, (name, cmds) in enumerate(plan.phases):
            p0 = time.monotonic()
            report = _send(stack, files / f"{i:02d}-{name.replace(' ', '-')}.jsonl", cmds)
            sent_s = time.monotonic() - p0
            raw = sum(1 for c in cmds if RAW in c)
            if report.failed or report.invalid != raw:
                raise RuntimeError(f"phase {name}: {report} (want {raw} invalid lines)")
            if not wait_ledger(stack, time.monotonic() + cfg.drain_timeout_s, name):
                raise TimeoutError(f"phase {name}: the ledger did not catch up")
            took = time.monotonic() - p0
            p1 = time.monotonic()
            stopped = sum(max(0.0, min(b, p1) - max(a, p0)) for a, b in stack.broker_down)
            n_tr = sum(1 for c in cmds if c.get("type") == "transfer")
            phases.append(
                {
                    "phase": name,
                    "commands": len(cmds),
                    "transfers": n_tr,
                    "send_s": round(sent_s, 1),
                    "seconds": round(took, 1),
                    "broker_down_s": round(stopped, 1),
                }
            )
            say(
                f"[soak] {time.monotonic() - workload_t0:6.1f}s {time.strftime('%H:%M:%S')} "
                f"phase {name}: {len(cmds)} "
                f"commands in {took:.1f}s"
                + (f" ({n_tr / took:.0f} transfers/s)" if n_tr > 1000 else "")
            )
        workload_s = time.monotonic() - workload_t0
        say("[soak] workload done; waiting for the chaos schedule to finish")
        while not chaos.schedule_done.wait(1.0):
            if time.monotonic() - workload_t0 > cfg.drain_timeout_s + cfg.schedule_span_s():
                raise TimeoutError("the chaos schedule did not finish")
        # Drain: everything alive again (the chaos thread keeps reviving), every group caught up.
        d0 = time.monotonic()
        deadline = d0 + cfg.drain_timeout_s
        for name in stack.specs():
            if not stack.alive(name):
                stack.start(name)
        drain = drain_all(stack, deadline, say)
        drain["seconds"] = round(time.monotonic() - d0, 1)
        if not drain["ok"]:
            raise TimeoutError(f"not drained after {cfg.drain_timeout_s}s: {drain}")
        chaos.stop()
        chaos.join(30)
        verifier = Verifier(stack, plan, exp, say)
        v0 = time.monotonic()
        verifier.run(readside_timeout_s=min(300.0, cfg.drain_timeout_s))
        verify_s = time.monotonic() - v0
    except (Exception, KeyboardInterrupt) as exc:
        failure = f"{type(exc).__name__}: {exc}"
        say(f"[soak] run failed: {failure}")
        say(traceback.format_exc())
        workload_s = locals().get("workload_s", 0.0)
        verify_s = 0.0
        up_s = locals().get("up_s", 0.0)
    finally:
        if chaos is not None:
            with contextlib.suppress(Exception):
                chaos.stop()
                chaos.join(30)
        logs = {}
        with contextlib.suppress(Exception):
            for p in stack.supervisor().list():
                logs[p["name"]] = str(stack.supervisor().log_path(p["name"]))
        with contextlib.suppress(Exception):
            stack.down()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    checks = verifier.checks if verifier else []
    if chaos is not None:
        checks = checks + chaos_checks(cfg, chaos)
        checks.append(liveness_check(home / "log", list(stack.stalls.values())))
    ok = failure is None and bool(checks) and all(c.ok for c in checks)
    transfer_phases = [p for p in phases if p["transfers"] > 1000]
    tr_s = sum(p["seconds"] - p["broker_down_s"] for p in transfer_phases)
    tr_n = sum(p["transfers"] for p in transfer_phases)
    data: dict[str, Any] = {
        "ok": ok,
        "seed": cfg.seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.monotonic() - t_start, 1),
        "failure": failure,
        "config": {
            "transfers": cfg.transfers,
            "accounts": cfg.accounts,
            "workers": cfg.workers,
            "partitions": cfg.partitions,
            "kills": cfg.kills,
            "broker": cfg.broker,
            "schedule_span_s": round(cfg.schedule_span_s(), 1),
        },
        "workload": {
            "commands": sum(exp.by_type.values()) + exp.raw_lines,
            "by_type": dict(exp.by_type),
            "refused_lines": exp.raw_lines,
            "exact_repeats": exp.duplicates,
            "reused_ids": sum(exp.reuses.values()),
            "planted_alerts": len(plan.planted_alerts),
        },
        "timing": {
            "stack_up_s": round(up_s, 1),
            "workload_s": round(workload_s, 1),
            "drain_s": drain.get("seconds"),
            "verify_s": round(verify_s, 1),
            "transfers_per_s": round(tr_n / tr_s) if tr_s else None,
            "commands_per_s": round(sum(p["commands"] for p in phases) / workload_s)
            if workload_s
            else None,
            **(verifier.stats if verifier else {}),
        },
        "phases": phases,
        "drain": drain,
        "chaos": {
            "schedule": [a.__dict__ for a in actions],
            "kills": chaos.kills if chaos else [],
            "kills_by_kind": dict(Counter(k["kind"] for k in chaos.kills)) if chaos else {},
            "broker_restarts": chaos.broker_restarts if chaos else [],
            "self_exits": chaos.self_exits if chaos else [],
            "errors": chaos.errors if chaos else [],
            "lag_samples": chaos.lag_samples if chaos else [],
        },
        "checks": [c.as_json() for c in checks],
        "home": str(home),
        "logs": logs,
    }
    path = (cfg.json_path or _repo_root() / "var" / "chaos" / "verdict.json").resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # The process logs outlive the home: the evidence of a failure, or of a slow stretch.
    saved_logs = path.parent / f"{path.stem}-logs"
    with contextlib.suppress(OSError):
        shutil.rmtree(saved_logs, ignore_errors=True)
        shutil.copytree(home / "log", saved_logs)
        data["logs"] = {name: str(saved_logs / Path(p).name) for name, p in logs.items()}
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    with contextlib.suppress(OSError):
        (home / "verdict.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    if ok and made_home and not cfg.keep:
        shutil.rmtree(home, ignore_errors=True)
        data["home"] = None
    return Verdict(ok, data, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__.splitlines()[0])
    knobs = SoakConfig.from_env()  # PAYSTREAM_SOAK_SEED, _TRANSFERS, _KILLS
    ap.add_argument("--seed", type=int, default=knobs.seed)
    ap.add_argument("--transfers", type=int, default=knobs.transfers)
    ap.add_argument("--accounts", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--partitions", type=int, default=12)
    ap.add_argument(
        "--kills", type=int, default=knobs.kills, help=f"kill -9 count (default {knobs.kills})"
    )
    ap.add_argument(
        "--broker",
        choices=["kill", "stop", "none"],
        default="kill",
        help="how the broker is restarted once (default: kill -9, then start)",
    )
    ap.add_argument("--span", type=float, default=None, help="seconds the kills are spread over")
    ap.add_argument("--drain-timeout", type=float, default=900.0)
    ap.add_argument("--home", type=Path, default=None, help="default: a new temporary directory")
    ap.add_argument("--keep", action="store_true", help="keep the home even when it passes")
    ap.add_argument(
        "--json",
        type=Path,
        default=None,
        dest="json_path",
        help="verdict file (default var/chaos/verdict.json)",
    )
    ap.add_argument("--quiet", action="store_true", help="only the verdict")
    a = ap.parse_args(argv)
    configure_logging("WARNING", silenced=("producers.rdkafka", "ops.kafka.rdkafka"))
    cfg = SoakConfig(
        seed=a.seed,
        transfers=a.transfers,
        accounts=a.accounts,
        workers=a.workers,
        partitions=a.partitions,
        kills=a.kills,
        broker=a.broker,
        span_s=a.span,
        drain_timeout_s=a.drain_timeout,
        home=a.home,
        keep=a.keep,
        json_path=a.json_path,
        quiet=a.quiet,
    )
    v = run_soak(cfg, load_settings())
    print_verdict(v)
    return 0 if v.ok else 1
