"""Incremental detection of money moving between related accounts, and of money cycles.

Pure: no Kafka, no faust, no RocksDB. The streaming runner (``streams.detector.app``) feeds it
decoded events in arrival order; ``streams.detector.bruteforce`` is the test oracle.

Definitions (the public contract, see the README):

* Two accounts are *related* when they are in the same connected component of the relation
  graph (undirected; ``relate`` adds an edge, ``unrelate`` removes it; the edges are a set).
* A posted transfer is a directed edge ``from -> to`` at its ``ts`` (microseconds).
* A *chain* is t1..tk with ``t(i+1).from == t(i).to``, strictly increasing ``ts`` and
  ``tk.ts - t1.ts <= window``; its accounts are distinct, except that the last may be the first.
* ``related_direct``: a transfer whose two (different) accounts are related when it is posted.
  ``related_indirect``: a transfer closing a chain of 2..max_hops transfers from ``u`` to
  ``w != u`` with ``u``, ``w`` related. ``cycle``: a transfer closing a chain of 2..max_hops
  transfers that returns to its first account.
* One alert per kind and closing transfer, reporting the canonical chain: fewest hops, then the
  smallest tuple of transfer ids in chain order. The relation path reported for ``related_*``
  is the lexicographically smallest (by account names) shortest path in the relation graph.

Data structures and costs (V accounts, E edges in the window, d = degree):

* Transfers: every account is a vertex index. Per vertex, a dict neighbour -> slot of the
  newest edge between the two (out-going and in-coming), older edges of the pair linked by
  ``_e_prev``; edge data in per-slot lists (slot = arrival number). Dicts of ints are
  invisible to the cyclic GC (lists or tuples as values cost seconds per full collection at
  1M edges), and neighbour sets can be intersected in C.
* No graph library: the dicts above are the whole store. (An igraph copy of the window used to
  be kept in sync for analysis, but nothing read it: ``Graph.add_edges``/``delete_edges``
  rebuild igraph's indexes, O(V+E) per call, ~1.5 s per batch at 1M edges, and reading one
  edge attribute costs ~2 µs, too slow for the search. igraph is not used anywhere now.)
* Expiry: the watermark is the largest ts seen; edges older than ``watermark - window`` can no
  longer be on a chain (for a stream in ts order). Edges are kept in arrival order, so the
  expired ones are a prefix: a head pointer advances (amortised O(1)) and the prefix is
  compacted away (slot lists, pair dicts) once it is at least ``max(compact_min_edges,
  live/2)`` edges, amortised O(1) per edge. Until then the search skips expired edges by ts.
  Memory is O(V + E_window).
* Relations: adjacency dict plus a component label per related account. ``relate`` merges the
  smaller component into the larger (O(smaller)); ``unrelate`` runs two interleaved BFS from the
  edge's ends over the relation adjacency, so a split costs O(smaller side) and a non-split at
  most O(component). Accounts without relations have no label (singletons).
* Chains: per closing edge ``x -> w`` at ``ts``, a bidirectional, level-synchronous temporal
  search between the start set (``{w}`` for cycles; the other members of ``w``'s component for
  ``related_indirect``) and ``x``, within ``[ts - window, ts)`` and ``max_hops - 1`` levels:
  forward earliest-arrival labels, backward latest-departure labels. A walk of h edges exists
  iff an edge joins forward level i and backward level j, i + j + 1 = h, so the first h with
  a join is the fewest hops; a shortest temporal walk is a simple path (a chain), which makes
  one label per vertex and level (dominance) exact. Level 1 of a single vertex is its
  neighbour dict itself, labelled lazily, and a join iterates the smaller side in Python
  with the neighbour tests as C set operations: up to 3 hops (max_hops 4) a search never
  scans a hub's edges one by one. The canonical chain is built greedily, smallest transfer
  id first, with exact per-position feasibility labels; the first hop comes out of the join
  itself. Cost per edge: O(min(d(x), d(w)) + sum of min(degree, other side) over the smaller
  side) for max_hops 4, O(sum of degrees of the materialised levels) beyond; never the whole
  graph. The cycle search (one start, ``w``) up to 3 hops is that same search written out
  (``_cycle``): the general one's level bookkeeping cost as much as the search on most edges.
  What remains is memory-bound: the join reads the adjacency of every vertex on the smaller
  side (hubs' neighbourhoods), a cache miss or two each at 1M edges.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections import deque
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import compress
from operator import not_
from typing import Any, Final

log = logging.getLogger(__name__)

DIRECT: Final = "related_direct"
INDIRECT: Final = "related_indirect"
CYCLE: Final = "cycle"
KINDS: Final = (DIRECT, INDIRECT, CYCLE)

# Configuration limits (documented in the README): hops per chain, and the window.
MAX_HOPS_MIN: Final = 2
MAX_HOPS_MAX: Final = 8
DEFAULT_MAX_HOPS: Final = 4
WINDOW_US_MIN: Final = 1_000_000  # 1 s
WINDOW_US_MAX: Final = 90 * 86_400 * 1_000_000  # 90 days
DEFAULT_WINDOW_US: Final = 7 * 86_400 * 1_000_000  # 7 days
# Expired edges compacted away at once, at least (the actual batch grows with E).
COMPACT_MIN_EDGES: Final = 65_536

_NEG: Final = -(1 << 62)
_POS: Final = 1 << 62


def _touching(
    vs: AbstractSet[int], adj: list[dict[int, int]], other: AbstractSet[int]
) -> Iterator[int]:
    """The vertices ``v`` of ``vs`` (in iteration order) with some ``adj[v]`` neighbour in
    ``other``, lazily. The loop runs in C (map/compress; each test is a set operation over
    the smaller side, no set built): most vertices of a hub's level have none. The tests
    themselves (reading each ``adj[v]``, memory-bound at 1M edges) dominate; the C loop saves
    the interpreter's share, about 10% of a join."""
    tests = map(other.isdisjoint, map(dict.keys, map(adj.__getitem__, vs)))
    return compress(vs, map(not_, tests))


def alert_id(kind: str, transfer_id: str) -> str:
    """Deterministic: one id per kind and closing transfer, so a replay creates no new alert."""
    return hashlib.sha1(f"{kind}:{transfer_id}".encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class TransferEdge:
    """A posted transfer: a directed edge ``from_account -> to_account`` at ``ts`` (µs)."""

    transfer_id: str
    command_id: str
    from_account: str
    to_account: str
    amount: str
    currency: str
    ts: int


@dataclass(frozen=True, slots=True)
class Alert:
    """One detection; ``accounts`` is the path (hops + 1 accounts), the lists are per hop."""

    alert_id: str
    kind: str
    accounts: tuple[str, ...]
    transfer_ids: tuple[str, ...]
    command_ids: tuple[str, ...]
    amounts: tuple[str, ...]
    currency: str
    timestamps: tuple[int, ...]
    related_accounts: tuple[str, ...]  # [u, w] for related_*, empty for cycle
    relation_kinds: tuple[str, ...]  # kinds along relation_path
    relation_path: tuple[str, ...]  # smallest shortest relation path from u to w
    ts: int  # the closing transfer's ts

    @property
    def closing_transfer_id(self) -> str:
        return self.transfer_ids[-1]

    def to_record(self) -> dict[str, Any]:
        """The Avro ``Alert`` record."""
        return {
            "alert_id": self.alert_id,
            "kind": self.kind,
            "accounts": list(self.accounts),
            "transfer_ids": list(self.transfer_ids),
            "command_ids": list(self.command_ids),
            "amounts": list(self.amounts),
            "currency": self.currency,
            "timestamps": list(self.timestamps),
            "related_accounts": list(self.related_accounts),
            "relation_kinds": list(self.relation_kinds),
            "relation_path": list(self.relation_path),
            "ts": self.ts,
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> Alert:
        return cls(
            alert_id=r["alert_id"],
            kind=r["kind"],
            accounts=tuple(r["accounts"]),
            transfer_ids=tuple(r["transfer_ids"]),
            command_ids=tuple(r["command_ids"]),
            amounts=tuple(r["amounts"]),
            currency=r["currency"],
            timestamps=tuple(r["timestamps"]),
            related_accounts=tuple(r["related_accounts"]),
            relation_kinds=tuple(r["relation_kinds"]),
            relation_path=tuple(r["relation_path"]),
            ts=r["ts"],
        )


class _Ctx:
    """What one closing edge ``x -> w`` at ``ts`` searches over."""

    __slots__ = ("base", "e_prev", "e_ts", "inn", "lo", "out", "ts", "w", "x")

    def __init__(
        self,
        out: list[dict[int, int]],
        inn: list[dict[int, int]],
        e_ts: list[int],
        e_prev: list[int],
        base: int,
        x: int,
        w: int,
        ts: int,
        lo: int,
    ) -> None:
        self.out, self.inn, self.e_ts, self.e_prev, self.base = out, inn, e_ts, e_prev, base
        self.x, self.w, self.ts, self.lo = x, w, ts, lo


def _first_after(
    s: int, e_ts: list[int], e_prev: list[int], base: int, a: int, hi: int
) -> int | None:
    """Earliest ts in ``(a, hi)`` among a pair's edges, walked from its latest slot ``s``."""
    best = hi
    while s >= base:
        t = e_ts[s - base]
        if t <= a:
            break
        best = t
        s = e_prev[s - base]
    return best if best < hi else None


def _last_before(
    s: int, e_ts: list[int], e_prev: list[int], base: int, d: int, lo: int
) -> int | None:
    """Latest ts in ``[lo, d)`` among a pair's edges, walked from its latest slot ``s``."""
    while s >= base:
        t = e_ts[s - base]
        if t < d:
            return t if t >= lo else None
        s = e_prev[s - base]
    return None


class _Level:
    """Labels of one search level: earliest arrival (forward) or latest departure (backward).

    Keys may include vertices without a valid label (lazy levels); ``label`` says None then.
    """

    __slots__ = ()

    def keys(self) -> AbstractSet[int]:
        raise NotImplementedError

    def label(self, v: int) -> int | None:
        raise NotImplementedError

    def items(self) -> Iterator[tuple[int, int]]:
        raise NotImplementedError


class _Labels(_Level):
    __slots__ = ("d",)

    def __init__(self, d: dict[int, int]) -> None:
        self.d = d

    def keys(self) -> AbstractSet[int]:
        return self.d.keys()

    def label(self, v: int) -> int | None:
        return self.d.get(v)

    def items(self) -> Iterator[tuple[int, int]]:
        return iter(self.d.items())


class _After(_Level):
    """Level 1 forward from a single start: its out-neighbour map is the level, labelled on
    demand. Building it is O(1), which is what makes hubs affordable."""

    __slots__ = ("a", "base", "e_prev", "e_ts", "hi", "m", "w")

    def __init__(self, m: dict[int, int], a: int, ctx: _Ctx) -> None:
        self.m, self.a, self.hi, self.w = m, a, ctx.ts, ctx.w
        self.e_ts, self.e_prev, self.base = ctx.e_ts, ctx.e_prev, ctx.base

    def keys(self) -> AbstractSet[int]:
        return self.m.keys()

    def label(self, v: int) -> int | None:
        s = self.m.get(v)
        if s is None or v == self.w:
            return None
        return _first_after(s, self.e_ts, self.e_prev, self.base, self.a, self.hi)

    def items(self) -> Iterator[tuple[int, int]]:
        e_ts, e_prev, base, a, hi, w = self.e_ts, self.e_prev, self.base, self.a, self.hi, self.w
        for v, s in self.m.items():
            if v != w:
                t = _first_after(s, e_ts, e_prev, base, a, hi)
                if t is not None:
                    yield v, t


class _Before(_Level):
    """Level 1 backward from ``x``: its in-neighbour map, labelled on demand."""

    __slots__ = ("base", "d", "e_prev", "e_ts", "lo", "m")

    def __init__(self, m: dict[int, int], d: int, ctx: _Ctx) -> None:
        self.m, self.d, self.lo = m, d, ctx.lo
        self.e_ts, self.e_prev, self.base = ctx.e_ts, ctx.e_prev, ctx.base

    def keys(self) -> AbstractSet[int]:
        return self.m.keys()

    def label(self, v: int) -> int | None:
        s = self.m.get(v)
        if s is None:
            return None
        return _last_before(s, self.e_ts, self.e_prev, self.base, self.d, self.lo)

    def items(self) -> Iterator[tuple[int, int]]:
        e_ts, e_prev, base, d, lo = self.e_ts, self.e_prev, self.base, self.d, self.lo
        for v, s in self.m.items():
            t = _last_before(s, e_ts, e_prev, base, d, lo)
            if t is not None:
                yield v, t


class _Side:
    """The levels of one direction of the search; level p holds the vertices whose label
    improved at p hops (a superset would be sound for detection, but the canonical
    extraction relies on exact earliest arrivals, so lazy levels are only built from a
    single vertex at level 0). The backward side is shared by both searches of an edge."""

    __slots__ = ("adj", "ctx", "forward", "levels")

    def __init__(self, ctx: _Ctx, forward: bool, first: dict[int, int]) -> None:
        self.ctx = ctx
        self.forward = forward
        self.adj = ctx.out if forward else ctx.inn
        self.levels: list[_Level] = [_Labels(first)]

    def cost(self, p: int) -> int:
        """Going from level p to p+1: -1 if already built, else the size of a lazy level
        (cheap to build), else -2 (a scan, see ``scan_cost``)."""
        if p + 1 < len(self.levels):
            return -1
        keys = self.levels[p].keys()
        if p == 0 and len(keys) == 1:
            return len(self.adj[next(iter(keys))])
        return -2

    def scan_cost(self, p: int, limit: int) -> int:
        """Edges a scan from level p would read, counted up to just past ``limit``."""
        adj, keys = self.adj, self.levels[p].keys()
        total = 0
        for v in keys:
            total += len(adj[v])
            if total > limit:
                break
        return total

    def extend(self, p: int) -> _Level:
        """Level p+1 (built once)."""
        if p + 1 < len(self.levels):
            return self.levels[p + 1]
        level = self.levels[p]
        ctx = self.ctx
        if p == 0 and len(level.keys()) == 1:
            ((v, a),) = level.items()
            lazy: _Level = (
                _After(ctx.out[v], a, ctx) if self.forward else _Before(ctx.inn[v], a, ctx)
            )
            self.levels.append(lazy)
            return lazy
        new = self._expand_forward(p) if self.forward else self._expand_backward(p)
        labels = _Labels(new)
        self.levels.append(labels)
        return labels

    def best(self, v: int, p: int) -> int | None:
        """v's label over levels 0..p: the last level holding v has the best one."""
        for q in range(p, -1, -1):
            lab = self.levels[q].label(v)
            if lab is not None:
                return lab
        return None

    def _expand_forward(self, p: int) -> dict[int, int]:
        ctx = self.ctx
        out, e_ts, e_prev, base = ctx.out, ctx.e_ts, ctx.e_prev, ctx.base
        w, ts = ctx.w, ctx.ts
        new: dict[int, int] = {}
        for v, a in self.levels[p].items():
            for y, s in out[v].items():
                if y == w:
                    continue  # no chain passes through the closing edge's destination
                t = _first_after(s, e_ts, e_prev, base, a, ts)
                if t is None or t >= new.get(y, _POS):
                    continue
                old = self.best(y, p)
                if old is None or t < old:
                    new[y] = t
        return new

    def _expand_backward(self, p: int) -> dict[int, int]:
        ctx = self.ctx
        inn, e_ts, e_prev, base = ctx.inn, ctx.e_ts, ctx.e_prev, ctx.base
        w, lo = ctx.w, ctx.lo
        new: dict[int, int] = {}
        for v, d in self.levels[p].items():
            if v == w:
                continue  # w may be labelled (a cycle starts there) but is never crossed
            for z, s in inn[v].items():
                t = _last_before(s, e_ts, e_prev, base, d, lo)
                if t is None or t <= new.get(z, _NEG):
                    continue
                old = self.best(z, p)
                if old is None or t > old:
                    new[z] = t
        return new


def _forward_first(fwd: _Side, i: int, back: _Side, j: int) -> bool:
    """Which side to extend: a level already built, then a lazy one (the smaller), then the
    cheaper scan."""
    fc, bc = fwd.cost(i), back.cost(j)
    if bc == -1 or fc == -1:
        return fc == -1 and bc != -1
    if fc >= 0 or bc >= 0:
        return fc >= 0 and (bc < 0 or fc < bc)
    f = fwd.scan_cost(i, 1 << 62)
    return f < back.scan_cost(j, f)


def _join(fwd: _Level, back: _Level, ctx: _Ctx) -> bool:
    """Is there an edge a -> b, a in ``fwd``, b in ``back``, b != w, fitting both labels?

    Iterates the smaller level in Python; the neighbour tests are set operations in C.
    """
    out, inn, e_ts, e_prev, base = ctx.out, ctx.inn, ctx.e_ts, ctx.e_prev, ctx.base
    w = ctx.w
    fk, bk = fwd.keys(), back.keys()
    if len(fk) <= len(bk):
        for a in _touching(fk, out, bk):
            adj = out[a]
            la = fwd.label(a)
            if la is None:
                continue
            for b in adj.keys() & bk:
                if b == w:
                    continue
                lb = back.label(b)
                if lb is not None and _first_after(adj[b], e_ts, e_prev, base, la, lb) is not None:
                    return True
    else:
        for b in _touching(bk, inn, fk):
            if b == w:
                continue
            adj = inn[b]
            lb = back.label(b)
            if lb is None:
                continue
            for a in adj.keys() & fk:
                la = fwd.label(a)
                if la is not None and _first_after(adj[a], e_ts, e_prev, base, la, lb) is not None:
                    return True
    return False


def _first_hop(
    starts: list[int], level1: _Level | None, nxt: _Level, ctx: _Ctx, tids: list[str]
) -> int:
    """The canonical first edge of a walk from ``starts``, or -1 if there is none.

    With ``level1`` None the walk is start -> y with y in ``nxt`` (the first edge is the
    whole forward part). Otherwise it is start -> a -> b, a in ``level1``, b in ``nxt``: the
    smallest-id first edge that some edge a -> b continues. Both are a join of the two
    sides in one pass (iterating the smaller one, the neighbour tests as set operations in
    C); a candidate ``a`` is only examined when one of its first edges has a smaller id than
    the best so far, so choosing costs little more than deciding.
    """
    out, inn, e_ts, e_prev, base = ctx.out, ctx.inn, ctx.e_ts, ctx.e_prev, ctx.base
    w, lo, ts = ctx.w, ctx.lo, ctx.ts
    best = -1
    best_tid = ""
    nk = nxt.keys()
    if level1 is None:
        for st in starts:
            adj = out[st]
            for y in adj.keys() & nk:
                ly = nxt.label(y)
                if y == w or ly is None:
                    continue
                s = adj[y]
                while s >= base:
                    e = s - base
                    t = e_ts[e]
                    if t < lo:
                        break
                    if t < ly and (best < 0 or tids[e] < best_tid):
                        best, best_tid = e, tids[e]
                    s = e_prev[e]
        return best

    def firsts(a: int) -> list[int]:
        """First edges into ``a`` in the window whose id beats the best so far."""
        found = []
        for st in starts:
            s = out[st].get(a, -1)
            while s >= base:
                e = s - base
                t = e_ts[e]
                if t < lo:
                    break
                if t < ts and (best < 0 or tids[e] < best_tid):
                    found.append(e)
                s = e_prev[e]
        return found

    labels: dict[int, int | None] = {}  # nxt's labels are lazy: compute each once

    def label(b: int) -> int | None:
        lb = labels.get(b, _NEG)
        if lb == _NEG:
            lb = labels[b] = None if b == w else nxt.label(b)
        return lb

    fk = level1.keys()
    if len(fk) <= len(nk):
        for a in _touching(fk, out, nk):
            if a == w:
                continue
            cands: list[int] | None = None
            if best >= 0:  # cheap test first: could a first edge into a beat the best?
                cands = firsts(a)
                if not cands:
                    continue
            adj = out[a]
            common = adj.keys() & nk  # not empty
            if cands is None:
                cands = firsts(a)
                if not cands:
                    continue
            t_min = min(e_ts[e] for e in cands)
            dep = _NEG
            for b in common:
                lb = label(b)
                if lb is not None:
                    t2 = _last_before(adj[b], e_ts, e_prev, base, lb, t_min + 1)
                    if t2 is not None and t2 > dep:
                        dep = t2
            for e in cands:
                if e_ts[e] < dep and (best < 0 or tids[e] < best_tid):
                    best, best_tid = e, tids[e]
    else:
        for b in _touching(nk, inn, fk):
            if b == w:
                continue
            adj = inn[b]
            common = adj.keys() & fk  # not empty
            lb = label(b)
            if lb is None:
                continue
            for a in common:
                if a == w:
                    continue
                cands = firsts(a)  # before the time walk: most lose on the id once best is set
                if not cands:
                    continue
                t2 = _last_before(adj[a], e_ts, e_prev, base, lb, lo)
                if t2 is None:
                    continue
                for e in cands:
                    if e_ts[e] < t2 and (best < 0 or tids[e] < best_tid):
                        best, best_tid = e, tids[e]
    return best


def _latest_departures(fwd: _Level, nxt: _Level, ctx: _Ctx) -> dict[int, int]:
    """For each a in ``fwd``: the latest edge a -> b (b in ``nxt``, b != w) after a's label
    and before b's label."""
    out, inn, e_ts, e_prev, base = ctx.out, ctx.inn, ctx.e_ts, ctx.e_prev, ctx.base
    w = ctx.w
    res: dict[int, int] = {}
    fk, nk = fwd.keys(), nxt.keys()
    if len(fk) <= len(nk):
        for a in _touching(fk, out, nk):
            adj = out[a]
            la = fwd.label(a)
            if la is None:
                continue
            for b in adj.keys() & nk:
                lb = nxt.label(b)
                if b != w and lb is not None:
                    t = _last_before(adj[b], e_ts, e_prev, base, lb, la + 1)
                    if t is not None and t > res.get(a, _NEG):
                        res[a] = t
    else:
        for b in _touching(nk, inn, fk):
            if b == w:
                continue
            adj = inn[b]
            lb = nxt.label(b)
            if lb is None:
                continue
            for a in adj.keys() & fk:
                la = fwd.label(a)
                if la is not None:
                    t = _last_before(adj[a], e_ts, e_prev, base, lb, la + 1)
                    if t is not None and t > res.get(a, _NEG):
                        res[a] = t
    return res


class RelatedTransferDetector:
    """Incremental detector; feed events in arrival order, get alerts back.

    Not thread-safe. Exact for streams in ts order (ties allowed; relation events before
    transfers of equal ts). A transfer older than ``watermark - window`` arrives too late to be
    checked against what has already expired, and is ignored (logged).
    """

    def __init__(
        self,
        max_hops: int = DEFAULT_MAX_HOPS,
        window_us: int = DEFAULT_WINDOW_US,
        *,
        compact_min_edges: int = COMPACT_MIN_EDGES,
    ) -> None:
        if not MAX_HOPS_MIN <= max_hops <= MAX_HOPS_MAX:
            raise ValueError(f"max_hops must be in {MAX_HOPS_MIN}..{MAX_HOPS_MAX}: {max_hops}")
        if not WINDOW_US_MIN <= window_us <= WINDOW_US_MAX:
            raise ValueError(
                f"window must be in {WINDOW_US_MIN}..{WINDOW_US_MAX} µs (1 s..90 days): {window_us}"
            )
        if compact_min_edges < 1:
            raise ValueError("compact_min_edges must be positive")
        self.max_hops: Final = max_hops
        self.window_us: Final = window_us
        self._compact_min = compact_min_edges
        # Vertices.
        self._vid: dict[str, int] = {}
        self._names: list[str] = []
        # Per vertex: neighbour -> slot of the latest edge between them (older ones follow
        # ``_e_prev``). Dicts of ints are never tracked by the cyclic GC: a million of them cost
        # no GC pauses (lists or tuples as values did: seconds per full collection at 1M edges).
        self._out: list[dict[int, int]] = []
        self._in: list[dict[int, int]] = []
        # Edges by slot (arrival number); list index = slot - _base.
        self._base = 0
        self._head = 0  # slots below are expired
        self._next = 0
        self._e_ts: list[int] = []
        # The previous (older) edge of the same pair, -1 for none: pairs are linked lists.
        self._e_prev: list[int] = []
        self._e_src: list[int] = []
        self._e_dst: list[int] = []
        self._e_tid: list[str] = []
        self._e_cmd: list[str] = []
        self._e_amount: list[str] = []
        self._e_cur: list[str] = []
        self._by_tid: dict[str, int] = {}
        self._watermark = _NEG
        # Relations.
        self._rel: dict[int, dict[int, str]] = {}
        self._comp: dict[int, int] = {}
        self._members: dict[int, set[int]] = {}
        self._next_comp = 0
        self.compactions = 0
        self.late_ignored = 0

    # -- public state ---------------------------------------------------------------------------

    @property
    def edges(self) -> int:
        """Edges held in the window (not yet expired)."""
        return self._next - self._head

    @property
    def stored_edges(self) -> int:
        """Edges in memory: the window, plus an expired prefix not compacted yet (fewer than
        ``max(compact_min_edges, edges // 2)`` after every transfer or ``expire``)."""
        return len(self._e_ts)

    @property
    def accounts(self) -> int:
        return len(self._names)

    @property
    def watermark(self) -> int:
        """Largest event ts seen (µs); edges older than ``watermark - window`` are expired."""
        return self._watermark

    def memory_bytes(self) -> int:
        """Approximate bytes held (containers, ints and strings).

        O(V + E): for monitoring, not for the hot path.
        """
        size = sys.getsizeof
        total = sum(
            size(c)
            for c in (
                self._vid,
                self._names,
                self._by_tid,
                self._rel,
                self._comp,
                self._members,
                self._out,
                self._in,
                *self._edge_arrays(),
            )
        )
        for maps in (self._out, self._in):
            total += sum(size(m) for m in maps)
        total += sum(size(n) + 28 for n in self._names)  # names and their index ints
        # Per edge: ts and slot ints, three strings (currency strings are shared).
        for i in range(len(self._e_ts)):
            total += 64 + size(self._e_tid[i]) + size(self._e_cmd[i]) + size(self._e_amount[i])
        for nbrs in self._rel.values():
            total += size(nbrs)
        return total

    def _edge_arrays(self) -> tuple[list[Any], ...]:
        return (
            self._e_ts,
            self._e_prev,
            self._e_src,
            self._e_dst,
            self._e_tid,
            self._e_cmd,
            self._e_amount,
            self._e_cur,
        )

    # -- relations ------------------------------------------------------------------------------

    def relate(self, a: str, b: str, kind: str, ts: int) -> None:
        """Add (or re-kind) the relation edge a-b; merges the two components."""
        self._advance(ts)
        if a == b:
            return
        va, vb = self._vertex(a), self._vertex(b)
        self._rel.setdefault(va, {})[vb] = kind
        self._rel.setdefault(vb, {})[va] = kind
        ca, cb = self._comp.get(va), self._comp.get(vb)
        if ca is not None and ca == cb:
            return
        if ca is None:
            ca = self._new_comp({va})
        if cb is None:
            cb = self._new_comp({vb})
        big, small = (ca, cb) if len(self._members[ca]) >= len(self._members[cb]) else (cb, ca)
        moved = self._members.pop(small)
        for v in moved:
            self._comp[v] = big
        self._members[big] |= moved

    def unrelate(self, a: str, b: str, ts: int) -> None:
        """Remove the relation edge a-b (if any); splits the component when it was a bridge."""
        self._advance(ts)
        va, vb = self._vid.get(a), self._vid.get(b)
        if va is None or vb is None or vb not in self._rel.get(va, {}):
            return
        del self._rel[va][vb]
        del self._rel[vb][va]
        side = self._split_side(va, vb)
        if side is not None:
            old = self._comp[va]
            self._members[old] -= side
            self._new_comp(side)
        for v in (va, vb):  # an account with no relation left is a singleton: no label
            if not self._rel[v]:
                del self._rel[v]
                c = self._comp.pop(v)
                self._members[c].discard(v)
                if not self._members[c]:
                    del self._members[c]

    def related(self, a: str, b: str) -> bool:
        if a == b:
            return True
        va, vb = self._vid.get(a), self._vid.get(b)
        if va is None or vb is None:
            return False
        ca = self._comp.get(va)
        return ca is not None and ca == self._comp.get(vb)

    def _new_comp(self, members: set[int]) -> int:
        c = self._next_comp
        self._next_comp += 1
        self._members[c] = members
        for v in members:
            self._comp[v] = c
        return c

    def _split_side(self, a: int, b: int) -> set[int] | None:
        """After removing a-b: None if a and b are still connected, else the smaller side."""
        rel = self._rel
        seen = ({a}, {b})
        queues = (deque([a]), deque([b]))
        while True:
            for side in (0, 1):
                q, mine, other = queues[side], seen[side], seen[1 - side]
                if not q:
                    return mine  # this side is exhausted first: a whole, smaller component
                v = q.popleft()
                for n in rel.get(v, ()):
                    if n in other:
                        return None
                    if n not in mine:
                        mine.add(n)
                        q.append(n)

    def _relation_path(self, u: int, w: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Smallest (by names) shortest relation path u..w, and the kinds along it."""
        rel, names = self._rel, self._names
        parent: dict[int, int] = {u: u}
        q = deque([u])
        # BFS visiting neighbours in name order: each vertex's first parent is on its
        # lexicographically smallest shortest path (the queue stays in path order).
        while q and w not in parent:
            v = q.popleft()
            for n in sorted(rel.get(v, {}), key=names.__getitem__):
                if n not in parent:
                    parent[n] = v
                    q.append(n)
        if w not in parent:
            raise AssertionError("relation path asked for unrelated accounts")
        path = [w]
        while path[-1] != u:
            path.append(parent[path[-1]])
        path.reverse()
        kinds = tuple(rel[path[i]][path[i + 1]] for i in range(len(path) - 1))
        return tuple(names[v] for v in path), kinds

    # -- transfers ------------------------------------------------------------------------------

    def add_transfer(self, t: TransferEdge) -> list[Alert]:
        """Process a posted transfer; returns its alerts (direct, indirect, cycle order)."""
        return self._add(t, detect=True)

    def load_transfer(self, t: TransferEdge) -> None:
        """Insert a posted transfer without looking for chains (rebuilding after a restart)."""
        self._add(t, detect=False)

    def expire(self, now_ts: int) -> None:
        """Advance the watermark to ``now_ts`` (µs) and drop what left the window."""
        self._advance(now_ts)
        self._maybe_compact()

    def _add(self, t: TransferEdge, detect: bool) -> list[Alert]:
        if t.transfer_id in self._by_tid:
            return []  # a duplicate: its alerts (deterministic) were already reported
        ts = t.ts
        if ts < self._watermark - self.window_us:
            self.late_ignored += 1
            log.debug("transfer %s at %d is older than the window, ignored", t.transfer_id, ts)
            return []
        self._advance(ts)
        x = self._vertex(t.from_account)
        w = self._vertex(t.to_account)
        if x == w:
            return []  # a self-transfer is on no chain and relates nothing
        alerts = self._detect(t, x, w) if detect else []
        self._insert(t, x, w)
        self._maybe_compact()
        return alerts

    def _detect(self, t: TransferEdge, x: int, w: int) -> list[Alert]:
        ts = t.ts
        ctx = _Ctx(
            self._out, self._in, self._e_ts, self._e_prev, self._base, x, w, ts, ts - self.window_us
        )
        alerts: list[Alert] = []
        cw = self._comp.get(w)
        if cw is not None and cw == self._comp.get(x):
            alerts.append(self._alert(DIRECT, [], t, x, w))
        if not self._in[x]:
            return alerts  # every chain enters x before the closing edge
        back: _Side | None = None  # shared by both general searches of this edge
        if cw is not None:
            starts = [u for u in self._members[cw] if u != w and u != x]
            if starts:
                back = _Side(ctx, False, {x: ts})
                chain = self._search(starts, ctx, back)
                if chain is not None:
                    alerts.append(self._alert(INDIRECT, chain, t, self._e_src[chain[0]], w))
        if self._out[w]:
            chain = self._cycle(ctx)
            if chain is None and self.max_hops > 4:  # longer ones: the general search
                chain = self._search([w], ctx, back or _Side(ctx, False, {x: ts}))
            if chain is not None:
                alerts.append(self._alert(CYCLE, chain, t, w, w))
        return alerts

    def _cycle(self, ctx: _Ctx) -> list[int] | None:
        """``_search([w], ...)`` up to 3 edges before the closing one (max_hops 4), written
        out for its one start: the same levels, joins and canonical choice, without the
        general search's bookkeeping, which cost as much as the search itself on most edges.
        None if there is no such chain (a longer one is the general search's business).
        """
        out, inn, e_ts, e_prev, base = ctx.out, ctx.inn, ctx.e_ts, ctx.e_prev, ctx.base
        x, w, ts, lo = ctx.x, ctx.w, ctx.ts, ctx.lo
        tids = self._e_tid
        after, before = out[w], inn[x]  # level 1 forward from w, backward from x
        # One edge: w -> x in [lo, ts), the smallest id.
        s = after.get(x, -1)
        best, best_tid = -1, ""
        while s >= base:
            e = s - base
            t = e_ts[e]
            if t < lo:
                break
            if t < ts and (best < 0 or tids[e] < best_tid):
                best, best_tid = e, tids[e]
            s = e_prev[e]
        if best >= 0:
            return [best]
        if self.max_hops < 3:
            return None
        # Two edges: w -> a -> x; a's label is its latest departure to x (backward level 1).
        for a in after.keys() & before.keys():  # neither w (no self-transfers) nor x
            la = _last_before(before[a], e_ts, e_prev, base, ts, lo)
            if la is None:
                continue
            s = after[a]
            while s >= base:
                e = s - base
                t = e_ts[e]
                if t < lo:
                    break
                if t < la and (best < 0 or tids[e] < best_tid):
                    best, best_tid = e, tids[e]
                s = e_prev[e]
        if best >= 0:
            return [best, self._next_hop(best, x, ts)]
        if self.max_hops < 4:
            return None
        # Three edges: w -> a -> b -> x, b != w; the join of the two lazy levels 1.
        lazy_back = _Before(before, ts, ctx)
        best = _first_hop([w], _After(after, lo - 1, ctx), lazy_back, ctx, tids)
        if best < 0:
            return None
        # The second hop: the smallest id a -> b after the first, before b's label.
        a, a_ts = self._e_dst[best], e_ts[best]
        adj = out[a]
        second, second_tid = -1, ""
        for b in adj.keys() & before.keys():
            lb = lazy_back.label(b)
            if b == w or lb is None:
                continue
            s = adj[b]
            while s >= base:
                e = s - base
                t = e_ts[e]
                if t <= a_ts:
                    break
                if t < lb and (second < 0 or tids[e] < second_tid):
                    second, second_tid = e, tids[e]
                s = e_prev[e]
        if second < 0:
            raise AssertionError("no feasible continuation on a walk known to exist")
        return [best, second, self._next_hop(second, x, ts)]

    def _next_hop(self, e: int, x: int, hi: int) -> int:
        """The smallest-id edge ``dst(e) -> x`` after ``e`` and before ``hi`` (it exists)."""
        e_ts, e_prev, base, tids = self._e_ts, self._e_prev, self._base, self._e_tid
        after = e_ts[e]
        s = self._out[self._e_dst[e]].get(x, -1)
        best, best_tid = -1, ""
        while s >= base:
            f = s - base
            t = e_ts[f]
            if t <= after:
                break
            if t < hi and (best < 0 or tids[f] < best_tid):
                best, best_tid = f, tids[f]
            s = e_prev[f]
        if best < 0:
            raise AssertionError("no feasible continuation on a walk known to exist")
        return best

    def _search(self, starts: list[int], ctx: _Ctx, back: _Side) -> list[int] | None:
        """Indexes (slot - base) of the canonical chain's edges before the closing one.

        Level by level, a walk of ``hops`` edges exists iff some edge joins the forward level
        i and the backward level j, i + j + 1 = hops; the first such level is the fewest hops.
        While the forward side is at level 0 or 1 (always, up to 3 hops), the join also picks
        the canonical first hop, in one pass.
        """
        fwd = _Side(ctx, True, dict.fromkeys(starts, ctx.lo - 1))
        tids = self._e_tid
        i = j = 0
        for hops in range(1, self.max_hops):
            if hops > 1:
                if _forward_first(fwd, i, back, j):
                    level = fwd.extend(i)
                    i += 1
                else:
                    level = back.extend(j)
                    j += 1
                if isinstance(level, _Labels) and not level.d:
                    return None  # a longer walk would need a vertex improved at this level
            if i == 0:
                first = _first_hop(starts, None, back.levels[j], ctx, tids)
            elif i == 1:
                first = _first_hop(starts, fwd.levels[1], back.levels[j], ctx, tids)
            elif _join(fwd.levels[i], back.levels[j], ctx):
                first = -1
            else:
                continue
            if first >= 0 or i >= 2:
                return self._extract(hops, fwd, i, back, j, first)
        return None

    def _extract(self, hops: int, fwd: _Side, i: int, back: _Side, j: int, first: int) -> list[int]:
        """The canonical walk of ``hops`` edges (no shorter one exists); ``first`` is its
        first edge when already known, else -1.

        ``feas[q]``: for a vertex at position q, the latest departure that still completes
        the walk. On a shortest walk the vertex at position q was improved exactly at forward
        level q (q <= i) and at backward level ``hops - q`` (q > i), else a shorter walk would
        exist; so feasibility is exact, and choosing the smallest feasible transfer id hop by
        hop gives the smallest tuple. A shortest walk is a simple path, hence a chain.
        """
        ctx = fwd.ctx
        out, e_ts, e_prev, base, w = ctx.out, ctx.e_ts, ctx.e_prev, ctx.base, ctx.w
        feas: list[_Level] = [fwd.levels[0]] * (hops + 1)
        for q in range(i + 1, hops + 1):
            feas[q] = back.levels[hops - q]
        for q in range(i, 1, -1):
            feas[q] = _Labels(_latest_departures(fwd.levels[q], feas[q + 1], ctx))
        tids, dsts = self._e_tid, self._e_dst
        if first < 0:
            starts = list(fwd.levels[0].keys())
            first = _first_hop(starts, fwd.levels[1], feas[2], ctx, tids)
        if first < 0:
            raise AssertionError("no first hop on a walk known to exist")
        chain = [first]
        for q in range(1, hops):
            nxt = feas[q + 1]
            nk = nxt.keys()
            v, a = dsts[chain[-1]], e_ts[chain[-1]]
            best = -1
            best_tid = ""
            adj = out[v]
            for y in adj.keys() & nk:
                ly = nxt.label(y)
                if y == w or ly is None:
                    continue
                s = adj[y]
                while s >= base:
                    e = s - base
                    if e_ts[e] <= a:
                        break
                    if e_ts[e] < ly and (best < 0 or tids[e] < best_tid):
                        best, best_tid = e, tids[e]
                    s = e_prev[e]
            if best < 0:
                raise AssertionError("no feasible continuation on a walk known to exist")
            chain.append(best)
        if dsts[chain[-1]] != ctx.x:
            raise AssertionError("canonical chain does not end at the closing edge")
        return chain

    def _alert(self, kind: str, chain: list[int], t: TransferEdge, u: int, w: int) -> Alert:
        names = self._names
        accounts = [names[self._e_src[e]] for e in chain]
        accounts += [t.from_account, t.to_account]
        related: tuple[str, ...] = ()
        kinds: tuple[str, ...] = ()
        path: tuple[str, ...] = ()
        if kind != CYCLE:
            related = (names[u], names[w])
            path, kinds = self._relation_path(u, w)
        return Alert(
            alert_id=alert_id(kind, t.transfer_id),
            kind=kind,
            accounts=tuple(accounts),
            transfer_ids=tuple([self._e_tid[e] for e in chain] + [t.transfer_id]),
            command_ids=tuple([self._e_cmd[e] for e in chain] + [t.command_id]),
            amounts=tuple([self._e_amount[e] for e in chain] + [t.amount]),
            currency=t.currency,
            timestamps=tuple([self._e_ts[e] for e in chain] + [t.ts]),
            related_accounts=related,
            relation_kinds=kinds,
            relation_path=path,
            ts=t.ts,
        )

    # -- storage ---------------------------------------------------------------------------------

    def _vertex(self, name: str) -> int:
        v = self._vid.get(name)
        if v is None:
            v = len(self._names)
            self._vid[name] = v
            self._names.append(name)
            self._out.append({})
            self._in.append({})
        return v

    def _insert(self, t: TransferEdge, x: int, w: int) -> None:
        slot = self._next
        self._next += 1
        ts = t.ts
        self._e_ts.append(ts)
        self._e_src.append(x)
        self._e_dst.append(w)
        self._e_tid.append(t.transfer_id)
        self._e_cmd.append(t.command_id)
        self._e_amount.append(t.amount)
        self._e_cur.append(t.currency)
        self._by_tid[t.transfer_id] = slot
        e_ts, e_prev, base = self._e_ts, self._e_prev, self._base
        latest = self._out[x].get(w, -1)
        if latest < base or e_ts[latest - base] <= ts:
            e_prev.append(latest)
            self._out[x][w] = self._in[w][x] = slot
            return
        # Arrived out of order: link it behind the newest edge of the pair not older than it.
        e_prev.append(-1)
        s = latest
        while True:
            older = e_prev[s - base]
            if older < base or e_ts[older - base] <= ts:
                e_prev[slot - base] = older
                e_prev[s - base] = slot
                return
            s = older

    def _advance(self, ts: int) -> None:
        if ts <= self._watermark:
            return
        self._watermark = ts
        dead_below = ts - self.window_us
        e_ts, base, head, end = self._e_ts, self._base, self._head, self._next
        while head < end and e_ts[head - base] < dead_below:
            head += 1
        self._head = head

    def _maybe_compact(self) -> None:
        expired = self._head - self._base
        if expired >= max(self._compact_min, (self._next - self._head) // 2):
            self._compact()

    def _compact(self) -> None:
        """Drop the expired prefix from the slot lists and the pair dicts."""
        cut = self._head - self._base
        if not cut:
            return
        out, inn, new_base = self._out, self._in, self._head
        for a, b in zip(self._e_src[:cut], self._e_dst[:cut], strict=True):
            latest = out[a].get(b)
            if latest is not None and latest < new_base:
                del out[a][b], inn[b][a]  # the pair's newest edge is gone, so all are
        # Links to older edges now point below the base, which ends every walk.
        by_tid = self._by_tid
        for tid in self._e_tid[:cut]:
            del by_tid[tid]
        for arr in self._edge_arrays():
            del arr[:cut]
        self._base = new_base
        self.compactions += 1
        log.debug("compacted: %d edges in the window, %d accounts", self.edges, self.accounts)

    def live_transfer_ids(self) -> Iterator[str]:
        """Transfer ids in the window, in arrival order (for checks)."""
        start = self._head - self._base
        yield from self._e_tid[start:]


__all__ = [
    "CYCLE",
    "DEFAULT_MAX_HOPS",
    "DEFAULT_WINDOW_US",
    "DIRECT",
    "INDIRECT",
    "KINDS",
    "MAX_HOPS_MAX",
    "MAX_HOPS_MIN",
    "WINDOW_US_MAX",
    "WINDOW_US_MIN",
    "Alert",
    "RelatedTransferDetector",
    "TransferEdge",
    "alert_id",
]
