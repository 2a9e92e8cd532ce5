"""Test oracle: the detection rules applied literally to a whole event list.

Independent of ``graph``'s data structures and search (it shares only the record types and
the alert id): for every posted transfer it enumerates every chain ending with it, checks
each against the definition, and picks the canonical one by sorting. Exponential in the hops;
meant for the small random histories of the property tests, and for workloads whose chains
are short (the demo's: earlier transfers are indexed by the account they enter, which only
narrows the candidates the enumeration looks at, and components are recomputed when the
relations change). Pure.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from streams.detector.graph import CYCLE, DIRECT, INDIRECT, Alert, TransferEdge, alert_id


@dataclass(frozen=True, slots=True)
class Relate:
    a: str
    b: str
    kind: str
    ts: int


@dataclass(frozen=True, slots=True)
class Unrelate:
    a: str
    b: str
    ts: int


Event = Relate | Unrelate | TransferEdge


def is_chain(chain: Sequence[TransferEdge], max_hops: int, window_us: int) -> bool:
    """The definition of a chain of 2..max_hops transfers, word for word."""
    if not 2 <= len(chain) <= max_hops:
        return False
    for prev, nxt in pairwise(chain):
        if nxt.from_account != prev.to_account or not nxt.ts > prev.ts:
            return False
    if chain[-1].ts - chain[0].ts > window_us:
        return False
    accounts = [chain[0].from_account] + [t.to_account for t in chain]
    inner = accounts[:-1]  # distinct, and the last one is new or equal to the first
    if len(set(inner)) != len(inner):
        return False
    return accounts[-1] not in inner[1:]


def _components(pairs: Iterable[frozenset[str]]) -> dict[str, frozenset[str]]:
    """Connected components by repeated merging until nothing changes."""
    groups: list[set[str]] = [set(p) for p in pairs]
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for k in range(i + 1, len(groups)):
                if groups[i] & groups[k]:
                    groups[i] |= groups.pop(k)
                    merged = True
                    break
            if merged:
                break
    return {a: frozenset(g) for g in groups for a in g}


def _relation_path(
    relations: dict[frozenset[str], str], u: str, w: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Every simple path u..w, then the shortest, then the smallest by account names."""
    paths: list[tuple[str, ...]] = []

    def walk(path: list[str]) -> None:
        if path[-1] == w:
            paths.append(tuple(path))
            return
        for pair in relations:
            if path[-1] in pair:
                (nxt,) = pair - {path[-1]}
                if nxt not in path:
                    walk([*path, nxt])

    walk([u])
    best = min(paths, key=lambda p: (len(p), p))
    kinds = tuple(relations[frozenset(best[i : i + 2])] for i in range(len(best) - 1))
    return best, kinds


def _chains_ending(
    closing: TransferEdge,
    into: Mapping[str, Sequence[TransferEdge]],
    max_hops: int,
    window_us: int,
) -> list[list[TransferEdge]]:
    """Every chain of 2..max_hops transfers whose last one is ``closing``; ``into`` maps an
    account to the earlier transfers entering it."""
    found: list[list[TransferEdge]] = []

    def extend(chain: list[TransferEdge]) -> None:
        if is_chain(chain, max_hops, window_us):
            found.append(chain)
        if len(chain) == max_hops:
            return
        for t in into.get(chain[0].from_account, ()):
            # Necessary conditions only, to keep the enumeration finite; is_chain decides.
            if t.to_account == chain[0].from_account and t.ts < chain[0].ts:
                extend([t, *chain])

    extend([closing])
    return found


def _alert(
    kind: str,
    chain: Sequence[TransferEdge],
    relations: dict[frozenset[str], str],
) -> Alert:
    last = chain[-1]
    u, w = chain[0].from_account, last.to_account
    related: tuple[str, ...] = ()
    path: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    if kind != CYCLE:
        related = (u, w)
        path, kinds = _relation_path(relations, u, w)
    return Alert(
        alert_id=alert_id(kind, last.transfer_id),
        kind=kind,
        accounts=(chain[0].from_account, *(t.to_account for t in chain)),
        transfer_ids=tuple(t.transfer_id for t in chain),
        command_ids=tuple(t.command_id for t in chain),
        amounts=tuple(t.amount for t in chain),
        currency=last.currency,
        timestamps=tuple(t.ts for t in chain),
        related_accounts=related,
        relation_kinds=kinds,
        relation_path=path,
        ts=last.ts,
    )


def detect(events: Sequence[Event], max_hops: int, window_us: int) -> list[Alert]:
    """Alerts for ``events`` taken in order (relation state and earlier transfers at each)."""
    relations: dict[frozenset[str], str] = {}
    into: dict[str, list[TransferEdge]] = defaultdict(list)  # earlier transfers, by account
    seen: set[str] = set()
    alerts: list[Alert] = []
    comps: dict[str, frozenset[str]] | None = None  # of ``relations``; None when stale
    for ev in events:
        if isinstance(ev, Relate):
            if ev.a != ev.b:
                relations[frozenset((ev.a, ev.b))] = ev.kind
                comps = None
            continue
        if isinstance(ev, Unrelate):
            relations.pop(frozenset((ev.a, ev.b)), None)
            comps = None
            continue
        if ev.transfer_id in seen:
            continue
        seen.add(ev.transfer_id)
        if comps is None:
            comps = _components(relations)

        def related(a: str, b: str, comps: dict[str, frozenset[str]] = comps) -> bool:
            return a != b and a in comps and b in comps[a]

        chains = _chains_ending(ev, into, max_hops, window_us)
        alerts += closing_alerts(ev, chains, related, relations)
        into[ev.to_account].append(ev)
    return alerts


def closing_alerts(
    ev: TransferEdge,
    chains: Iterable[list[TransferEdge]],
    related: Callable[[str, str], bool],
    relations: dict[frozenset[str], str],
) -> list[Alert]:
    """The alerts that ``ev`` closes, given every chain ending with it: one per kind, the
    shortest chain (then the smallest transfer ids) standing for its kind."""
    alerts: list[Alert] = []
    if related(ev.from_account, ev.to_account):
        alerts.append(_alert(DIRECT, [ev], relations))
    by_kind: dict[str, list[list[TransferEdge]]] = {INDIRECT: [], CYCLE: []}
    for c in chains:
        u, w = c[0].from_account, c[-1].to_account
        if u == w:
            by_kind[CYCLE].append(c)
        elif related(u, w):
            by_kind[INDIRECT].append(c)
    for kind in (INDIRECT, CYCLE):
        if by_kind[kind]:
            best = min(by_kind[kind], key=lambda c: (len(c), [t.transfer_id for t in c]))
            alerts.append(_alert(kind, best, relations))
    return alerts


__all__ = ["Event", "Relate", "Unrelate", "detect", "is_chain"]
