"""The wallet's CLI verbs: ``session-keys`` (list, rotate, prune the session tokens' signing
keys) and the users workers' process verb (docs/wallet.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from base.config import Settings

Verb = Callable[..., argparse.ArgumentParser]


def register(sub: Any, verb: Verb) -> None:
    sp = verb(
        "session-keys",
        cmd_session_keys,
        "the wallet's session signing keys: list them, --rotate (a new key signs), --prune",
        True,
    )
    sp.add_argument("--rotate", action="store_true", help="add a new key; it signs from now on")
    sp.add_argument(
        "--prune",
        action="store_true",
        help="remove the keys replaced longer ago than a session lives (their tokens expired)",
    )
    sp = sub.add_parser("users-worker")  # internal: the users workers (no help: not listed)
    sp.set_defaults(fn=cmd_users_worker)
    sp.add_argument("--instance", type=int, required=True)


def cmd_session_keys(a: argparse.Namespace, s: Settings) -> int:
    from paystream.api.wallet import keys

    rotated = keys.rotate(s.home) if a.rotate else None
    pruned = keys.prune(s.home, s.limits.wallet_session_ttl_s) if a.prune else []
    kids = sorted(keys.load_keys(s.home)) or [keys.ensure_key(s.home)]
    # Key ids only: the keys themselves never leave their files.
    out = {"signing": kids[-1], "keys": kids, "rotated": rotated, "pruned": pruned}
    if a.json:
        json.dump(out, sys.stdout, separators=(",", ":"))
        sys.stdout.write("\n")
        return 0
    print(f"signing key: {out['signing']} (in {keys.keys_dir(s.home)})")
    for kid in kids[:-1]:
        print(f"  verifies only: {kid}")
    for kid in pruned:
        print(f"  pruned: {kid}")
    return 0


def cmd_users_worker(a: argparse.Namespace, s: Settings) -> int:
    from paystream.bootstrap import run_users_worker

    return run_users_worker(s, a.instance)
