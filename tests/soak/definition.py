"""The detector's definition at scale: the brute force's rules with their scans indexed."""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from typing import Any


def definition_alerts(events: Sequence[Any], max_hops: int, window_us: int) -> list[Any]:
    """``bruteforce.detect`` with its scans indexed, for 100k transfers instead of 100.

    The same literal rules (``is_chain``, the canonical choice, ``_alert``), the same order of
    events; only the candidates for the next hop back come from an index of the earlier
    transfers by destination (bisected by ts) instead of a scan of all of them, and the
    relation components are recomputed only when a relation changes. Tested against
    ``bruteforce.detect`` on random histories (``tests/unit/test_soak_definition.py``).
    """
    from streams.detector import bruteforce as bf

    relations: dict[frozenset[str], str] = {}
    comps: dict[str, frozenset[str]] | None = {}
    into: dict[str, list[Any]] = defaultdict(list)  # to_account -> earlier transfers, ts order
    into_ts: dict[str, list[int]] = defaultdict(list)
    seen: set[str] = set()
    alerts: list[Any] = []

    def chains_ending(closing: Any) -> list[list[Any]]:
        found: list[list[Any]] = []
        floor = closing.ts - window_us

        def extend(chain: list[Any]) -> None:
            if bf.is_chain(chain, max_hops, window_us):
                found.append(chain)
            if len(chain) == max_hops:
                return
            head = chain[0]
            stamps = into_ts.get(head.from_account)
            if not stamps:
                return
            lo = bisect_left(stamps, floor)  # earlier than the window: never on a chain
            hi = bisect_left(stamps, head.ts)  # strictly before the chain's first transfer
            for t in into[head.from_account][lo:hi]:
                extend([t, *chain])

        extend([closing])
        return found

    for ev in events:
        if isinstance(ev, bf.Relate):
            if ev.a != ev.b:
                relations[frozenset((ev.a, ev.b))] = ev.kind
                comps = None
            continue
        if isinstance(ev, bf.Unrelate):
            if relations.pop(frozenset((ev.a, ev.b)), None) is not None:
                comps = None
            continue
        if ev.transfer_id in seen:
            continue
        seen.add(ev.transfer_id)
        if comps is None:
            comps = bf._components(relations)
        c = comps

        def related(x: str, y: str, c: dict[str, frozenset[str]] = c) -> bool:
            return x != y and x in c and y in c[x]

        alerts += bf.closing_alerts(ev, chains_ending(ev), related, relations)
        into[ev.to_account].append(ev)
        into_ts[ev.to_account].append(ev.ts)
    return alerts
