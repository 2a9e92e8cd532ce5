"""The risk engine's CLI verbs (docs/risk.md): ``paystream risk check|publish|shadow|status|
train|label``, and the process verbs ``risk-worker`` and ``reviews-worker``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from base.config import Settings

Verb = Callable[..., argparse.ArgumentParser]


def register(sub: Any, verb: Verb) -> None:
    risk = verb("risk", cmd_risk_help, "the risk engine: rule files, versions, the model")
    rs = risk.add_subparsers(dest="risk_verb", metavar="RISK_VERB")

    def sub_verb(name: str, fn: Callable[..., int], help: str) -> argparse.ArgumentParser:
        sp = rs.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    sp = sub_verb("check", cmd_check, "validate a rule file (TOML); exit 1 with what is wrong")
    sp.add_argument("file")
    sp = sub_verb(
        "publish", cmd_publish, "make a rule file the live version, from one log position on"
    )
    sp.add_argument("file")
    sp = sub_verb(
        "shadow", cmd_shadow, "run a rule file beside the live one, recording, never acting"
    )
    sp.add_argument("file", nargs="?")
    sp.add_argument("--off", action="store_true", help="stop the shadow version")
    sub_verb("status", cmd_status, "what decides in each partition, and every published version")
    sp = sub_verb(
        "train", cmd_train, "train a model on the warehouse's labelled history; publish it if"
        " it is no worse than the live one",
    )  # fmt: skip
    sp.add_argument("--since", default="30d", help="history to read: 30d, 12h, 3600s (default 30d)")
    sp.add_argument("--no-publish", action="store_true", help="write the model file only")
    sp.add_argument("--force", action="store_true", help="publish even if worse than the live one")
    sp.add_argument(
        "--out", help="directory for the model file (default $PAYSTREAM_HOME/risk/models)"
    )
    sp = sub_verb(
        "replay", cmd_replay, "decide every payment again from the log alone; --verify compares"
    )
    sp.add_argument("--verify", action="store_true", help="exit 1 on any difference")
    sp = sub_verb("label", cmd_label, "label a payment fraud or legit, for training")
    sp.add_argument("payment_id")
    sp.add_argument("label", choices=["fraud", "legit"])
    sp.add_argument("--source", default="analyst")
    sp.add_argument("--note", default="")

    sp = sub.add_parser("risk-worker")  # internal: `paystream up` runs it
    sp.set_defaults(fn=cmd_risk_worker)
    sp.add_argument("--instance", type=int, required=True)
    sp = sub.add_parser("reviews-worker")
    sp.set_defaults(fn=cmd_reviews_worker)
    sp.add_argument("--instance", type=int, required=True)


def cmd_risk_help(a: argparse.Namespace, s: Settings) -> int:
    print("usage: paystream risk check|publish|shadow|status|train|label ...", file=sys.stderr)
    return 2


def _print(obj: Any) -> None:
    print(json.dumps(obj, separators=(",", ":"), default=str))


def _load(path: str, as_json: bool) -> tuple[Any, bytes] | None:
    """The rule set in ``path``, checked, or None after saying what is wrong (stderr)."""
    from streams.risk.errors import RuleFileError
    from streams.risk.limits import RULE_FILE_BYTES_MAX
    from streams.risk.rules import load_rules

    try:
        with open(path, "rb") as f:
            data = f.read(RULE_FILE_BYTES_MAX + 1)  # a huge file is never read whole
    except OSError as exc:
        _refuse({"error": "unreadable", "message": str(exc)}, as_json)
        return None
    try:
        return load_rules(data), data
    except RuleFileError as exc:
        _refuse(
            {"error": exc.code, "message": str(exc), "rule": exc.rule, "column": exc.column},
            as_json,
        )
        return None


def _refuse(body: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print({"ok": False, **body})
    else:
        print(f"refused: {body['message']}", file=sys.stderr)


def _summary(rs: Any) -> dict[str, Any]:
    return {
        "ok": True,
        "version": rs.version,
        "sha256": rs.sha256,
        "rules": [
            {"name": r.name, "trigger": sorted(r.trigger), "action": r.action.value,
             "score": r.score, "enabled": r.enabled}
            for r in rs.rules
        ],
        "thresholds": {"review": rs.review_threshold, "block": rs.block_threshold},
        "model_weight": rs.model_weight,
    }  # fmt: skip


def cmd_check(a: argparse.Namespace, s: Settings) -> int:
    got = _load(a.file, a.json)
    if got is None:
        return 1
    rs, _ = got
    if a.json:
        _print(_summary(rs))
    else:
        print(f"{a.file}: version {rs.version}, {len(rs.rules)} rules, sha256 {rs.sha256[:12]}: ok")
    return 0


def _publish(a: argparse.Namespace, s: Settings, kind: str) -> int:
    from paystream.bootstrap import resolved
    from paystream.risk_publish import publish
    from streams.risk.model import ActivationKind

    got = _load(a.file, a.json)
    if got is None:
        return 1
    rs, data = got
    done = publish(resolved(s), ActivationKind(kind), rs.version, rs.sha256, data)
    if a.json:
        _print(done.as_json())
    else:
        where = ", ".join(f"{p}@{o}" for p, o in sorted(done.offsets.items()))
        print(
            f"{kind} rules {rs.version} ({rs.sha256[:12]}) active in every partition from "
            f"offset (partition@offset) {where}"
        )
    return 0


def cmd_publish(a: argparse.Namespace, s: Settings) -> int:
    return _publish(a, s, "rules")


def cmd_shadow(a: argparse.Namespace, s: Settings) -> int:
    if a.off:
        from paystream.bootstrap import resolved
        from paystream.risk_publish import publish
        from streams.risk.model import ActivationKind

        done = publish(resolved(s), ActivationKind.shadow_off, "off", "", None)
        _print(done.as_json()) if a.json else print("shadow rules off in every partition")
        return 0
    if not a.file:
        print("usage: paystream risk shadow FILE | --off", file=sys.stderr)
        return 2
    return _publish(a, s, "shadow")


def cmd_status(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import resolved
    from paystream.risk_publish import contexts, versions

    rs = resolved(s)
    ctxs = contexts(rs)

    def ref(r: Any) -> dict[str, str] | None:
        return None if r is None else {"version": r.version, "sha256": r.sha256}

    body = {
        "partitions": [
            {"partition": p, "rules": ref(c.rules), "shadow": ref(c.shadow),
             "model": ref(c.model), "activations": c.activations, "since": c.since}
            for p, c in sorted(ctxs.items())
        ],
        "versions": [{k: v for k, v in x.items() if k != "metrics"} for x in versions(rs)],
    }  # fmt: skip
    if a.json:
        _print(body)
        return 0
    if not ctxs:
        print("no version published: the built-in rules decide (streams/risk/defaults.py)")
    for p in body["partitions"]:
        r, sh, m = p["rules"], p["shadow"], p["model"]
        print(
            f"partition {p['partition']}: rules {r['version'] if r else 'builtin'}"
            f"{', shadow ' + sh['version'] if sh else ''}"
            f"{', model ' + m['version'] if m else ''}"
        )
    for v in body["versions"]:
        print(f"  {v['kind']} {v['version']} {v['sha256'][:12]} ({v['bytes']} bytes)")
    return 0


def cmd_train(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import resolved
    from paystream.risk_train import TrainingRefused, parse_since, train_from_warehouse

    rs = resolved(s)
    out = Path(a.out) if a.out else rs.home / "risk" / "models"
    try:
        report = train_from_warehouse(
            rs, parse_since(a.since), out, publish=not a.no_publish, force=a.force
        )
    except TrainingRefused as exc:
        _refuse({"error": "training_refused", "message": str(exc)}, a.json)
        return 1
    if a.json:
        _print(report)
    else:
        m = report["metrics"]
        print(
            f"model {report['version']}: AUC {m['auc']:.3f} on {m['validation_rows']} "
            f"validation payments (rules alone {m['rules_auc']:.3f}); at threshold "
            f"{m['threshold']:.3f} precision {m['precision']:.3f} recall {m['recall']:.3f}"
        )
        print(f"  file {report['file']}; {report['published_note']}")
    return 0 if report["published"] or a.no_publish else 1


def cmd_replay(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import resolved
    from paystream.risk_replay import replay, verify

    rs = resolved(s)
    got = replay(rs)
    problems = verify(rs, got) if a.verify else []
    if a.json:
        _print({"records": got.records, "decisions": len(got.decisions), "mismatches": problems})
    else:
        print(f"{got.records} records replayed: {len(got.decisions)} decisions")
        for p in problems[:50]:
            print(f"  MISMATCH {p}")
        if a.verify and not problems:
            print("  every live decision is the same again")
    return 1 if problems else 0


def cmd_label(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import resolved
    from paystream.risk_labels import send_labels

    send_labels(resolved(s), [(a.payment_id, a.label, a.source, a.note)])
    if a.json:
        _print({"payment_id": a.payment_id, "label": a.label, "source": a.source})
    else:
        print(f"{a.payment_id}: {a.label} ({a.source})")
    return 0


def cmd_risk_worker(a: argparse.Namespace, s: Settings) -> int:
    from paystream.risk_processes import run_risk_worker

    return run_risk_worker(s, a.instance)


def cmd_reviews_worker(a: argparse.Namespace, s: Settings) -> int:
    from paystream.risk_processes import run_reviews_worker

    return run_reviews_worker(s, a.instance)
