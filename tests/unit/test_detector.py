"""The incremental detector against the brute-force oracle, and hand-written cases."""

from __future__ import annotations

import ast
from collections.abc import Sequence
from pathlib import Path

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import streams.detector.graph as graph_module
from streams.detector import bruteforce
from streams.detector.bruteforce import Event, Relate, Unrelate
from streams.detector.graph import (
    CYCLE,
    DIRECT,
    INDIRECT,
    Alert,
    RelatedTransferDetector,
    TransferEdge,
    alert_id,
)

S = 1_000_000  # µs per second: tests count time in seconds
ACCOUNTS = [f"a{i}" for i in range(8)]


def xfer(tid: str, a: str, b: str, ts: int, amount: str = "1.00") -> TransferEdge:
    return TransferEdge(tid, f"cmd-{tid}", a, b, amount, "USD", ts * S)


def run(det: RelatedTransferDetector, events: Sequence[Event]) -> list[Alert]:
    alerts: list[Alert] = []
    for ev in events:
        if isinstance(ev, Relate):
            det.relate(ev.a, ev.b, ev.kind, ev.ts)
        elif isinstance(ev, Unrelate):
            det.unrelate(ev.a, ev.b, ev.ts)
        else:
            alerts.extend(det.add_transfer(ev))
    return alerts


def detect(events: Sequence[Event], max_hops: int = 4, window_s: int = 7 * 86_400) -> list[Alert]:
    return run(RelatedTransferDetector(max_hops, window_s * S, compact_min_edges=2), events)


def summary(alerts: Sequence[Alert]) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(a.kind, a.closing_transfer_id, a.accounts) for a in alerts]


# -- properties -------------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], int, int]:
    n_accounts = draw(st.integers(2, 8))
    accounts = ACCOUNTS[:n_accounts]
    n_transfers = draw(st.integers(1, 25))
    # Random, unique ids so that the lexicographic tie-break is exercised.
    tids = draw(
        st.lists(
            st.text("abcdef", min_size=1, max_size=3),
            min_size=n_transfers,
            max_size=n_transfers,
            unique=True,
        )
    )
    account = st.sampled_from(accounts)
    # Rings: transfers mostly step forward around a ring, so the shortest chains are long.
    ring = draw(st.booleans())
    # Often continue from where the last transfer went, so that long chains are common.
    walk = draw(st.sampled_from([0.0, 0.5, 0.8, 1.0]))
    raw: list[tuple[int, int, Event]] = []
    ts = 0
    last_to: str | None = None
    for tid in tids:
        for _ in range(draw(st.integers(0, 2))):
            a, b = draw(account), draw(account)
            if draw(st.booleans()):
                ev: Event = Relate(a, b, draw(st.sampled_from(["family", "business"])), ts * S)
            else:
                ev = Unrelate(a, b, ts * S)
            raw.append((ts, 0, ev))
        ts += draw(st.sampled_from([0, 0, 1, 1, 1, 2, 3, 5]))  # ties are frequent
        walking = last_to is not None and draw(st.floats(0, 1)) < walk
        src = last_to if walking and last_to is not None else draw(account)
        if ring and draw(st.integers(0, 9)) > 0:
            step = draw(st.sampled_from([1, 1, 1, 2]))
            dst = accounts[(accounts.index(src) + step) % n_accounts]
        else:
            dst = draw(account)
        t = xfer(tid, src, dst, ts, draw(st.sampled_from(["1.00", "2.50"])))
        last_to = t.to_account
        raw.append((ts, 1, t))
        if draw(st.integers(0, 9)) == 0:
            raw.append((ts, 1, t))  # a redelivered transfer
    # The stream is in ts order, relation events before transfers of equal ts.
    raw.sort(key=lambda r: (r[0], r[1]))
    window = draw(st.integers(1, 20))
    max_hops = draw(st.integers(2, 8))
    return [r[2] for r in raw], max_hops, window


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_incremental_equals_brute_force(case: tuple[list[Event], int, int]) -> None:
    events, max_hops, window = case
    det = RelatedTransferDetector(max_hops, window * S, compact_min_edges=1)
    got = run(det, events)
    want = bruteforce.detect(events, max_hops, window * S)
    assert got == want
    # Relatedness agrees with networkx on the final relation graph.
    g: nx.Graph[str] = nx.Graph()
    g.add_nodes_from(ACCOUNTS)
    for ev in events:
        if isinstance(ev, Relate) and ev.a != ev.b:
            g.add_edge(ev.a, ev.b)
        elif isinstance(ev, Unrelate) and g.has_edge(ev.a, ev.b):
            g.remove_edge(ev.a, ev.b)
    for a in ACCOUNTS:
        for b in ACCOUNTS:
            assert det.related(a, b) == nx.has_path(g, a, b), (a, b)
    # The window's edges, in arrival order; what expired is compacted away.
    assert len(list(det.live_transfer_ids())) == det.edges
    det.expire(det.watermark)
    assert det.stored_edges - det.edges < max(1, det.edges // 2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_cycle_fast_path_and_the_general_search_beyond_it(
    case: tuple[list[Event], int, int],
) -> None:
    """Cycles up to 3 hops before the closing transfer have their own search (``_cycle``):
    at max_hops 4 it is all there is, at 5 the general search takes over when it finds none."""
    events, _, window = case
    for max_hops in (4, 5):
        got = run(RelatedTransferDetector(max_hops, window * S, compact_min_edges=3), events)
        assert got == bruteforce.detect(events, max_hops, window * S)


@settings(max_examples=150, deadline=None)
@given(histories())
def test_alerts_do_not_depend_on_compaction(case: tuple[list[Event], int, int]) -> None:
    events, max_hops, window = case
    often = run(RelatedTransferDetector(max_hops, window * S, compact_min_edges=1), events)
    never = run(RelatedTransferDetector(max_hops, window * S, compact_min_edges=10**9), events)
    assert often == never


def test_brute_force_chain_definition() -> None:
    a_b, b_c, c_a = xfer("1", "a", "b", 1), xfer("2", "b", "c", 2), xfer("3", "c", "a", 3)
    assert bruteforce.is_chain([a_b, b_c], 4, 10 * S)
    assert bruteforce.is_chain([a_b, b_c, c_a], 4, 10 * S)  # a cycle: last == first
    assert not bruteforce.is_chain([a_b], 4, 10 * S)  # one hop is no chain
    assert not bruteforce.is_chain([a_b, b_c, c_a], 2, 10 * S)  # too many hops
    assert not bruteforce.is_chain([a_b, b_c], 4, 1 * S - 1)  # outside the window
    assert not bruteforce.is_chain([a_b, xfer("2", "b", "c", 1)], 4, 10 * S)  # ts not increasing
    assert not bruteforce.is_chain([a_b, xfer("2", "c", "d", 2)], 4, 10 * S)  # not connected
    b_a, a_c = xfer("4", "b", "a", 4), xfer("5", "a", "c", 5)
    assert not bruteforce.is_chain([a_b, b_a, a_c], 4, 10 * S)  # a repeated in the middle


# -- hand-written cases ---------------------------------------------------------------------


def test_related_direct() -> None:
    alerts = detect([Relate("a", "b", "family", 1 * S), xfer("t1", "a", "b", 2)])
    [al] = alerts
    assert al.kind == DIRECT
    assert al.accounts == ("a", "b") and al.transfer_ids == ("t1",)
    assert al.related_accounts == ("a", "b") and al.relation_kinds == ("family",)
    assert al.command_ids == ("cmd-t1",) and al.amounts == ("1.00",) and al.currency == "USD"
    assert al.timestamps == (2 * S,) and al.ts == 2 * S


def test_relation_counts_from_its_ts_and_transfers_before_it_do_not_alert() -> None:
    events: list[Event] = [
        xfer("t0", "a", "b", 1),
        Relate("a", "b", "family", 2 * S),
        xfer("t1", "a", "b", 2),  # same ts as the relation, after it in the stream
    ]
    assert summary(detect(events)) == [(DIRECT, "t1", ("a", "b"))]


def test_related_through_a_component_not_an_edge() -> None:
    events: list[Event] = [
        Relate("a", "m", "family", 0),
        Relate("m", "b", "business", 0),
        xfer("t1", "a", "b", 1),
    ]
    [al] = detect(events)
    assert al.kind == DIRECT and al.relation_path == ("a", "m", "b")
    assert al.relation_kinds == ("family", "business")


def test_related_indirect_through_a_mule() -> None:
    events: list[Event] = [
        Relate("u", "w", "family", 0),
        xfer("t1", "u", "m1", 1),
        xfer("t2", "m1", "m2", 2),
        xfer("t3", "m2", "w", 3),
    ]
    [al] = detect(events)
    assert al.kind == INDIRECT
    assert al.accounts == ("u", "m1", "m2", "w")
    assert al.transfer_ids == ("t1", "t2", "t3")
    assert al.related_accounts == ("u", "w") and al.relation_kinds == ("family",)


def test_cycle() -> None:
    events: list[Event] = [
        xfer("t1", "a", "b", 1),
        xfer("t2", "b", "c", 2),
        xfer("t3", "c", "a", 3),
    ]
    [al] = detect(events)
    assert al.kind == CYCLE and al.accounts == ("a", "b", "c", "a")
    assert al.related_accounts == () and al.relation_kinds == () and al.relation_path == ()


def test_several_kinds_on_one_transfer() -> None:
    events: list[Event] = [
        Relate("a", "b", "family", 0),
        xfer("t1", "b", "a", 1),  # direct: a ~ b
        xfer("t2", "a", "c", 2),
        xfer("t3", "c", "b", 3),  # indirect a->c->b; cycle b->a->c->b
        xfer("t4", "b", "c", 4),  # cycle c->b->c
        xfer("t5", "c", "b", 5),  # indirect a->c->b (t2, t5); cycle b->c->b
        xfer("t6", "a", "b", 6),  # direct; cycle b->a->b; no indirect (a->..->a->b)
    ]
    assert summary(detect(events)) == [
        (DIRECT, "t1", ("b", "a")),
        (INDIRECT, "t3", ("a", "c", "b")),
        (CYCLE, "t3", ("b", "a", "c", "b")),
        (CYCLE, "t4", ("c", "b", "c")),
        (INDIRECT, "t5", ("a", "c", "b")),
        (CYCLE, "t5", ("b", "c", "b")),
        (DIRECT, "t6", ("a", "b")),
        (CYCLE, "t6", ("b", "a", "b")),
    ]


def test_window_is_inclusive_and_expires() -> None:
    window = 10
    on_edge = [xfer("t1", "a", "b", 0), xfer("t2", "b", "a", window)]
    assert summary(detect(on_edge, window_s=window)) == [(CYCLE, "t2", ("a", "b", "a"))]
    too_late = [xfer("t1", "a", "b", 0), xfer("t2", "b", "a", window + 1)]
    assert detect(too_late, window_s=window) == []


def test_expired_edges_leave_memory() -> None:
    det = RelatedTransferDetector(4, 10 * S, compact_min_edges=4)
    for i in range(100):
        det.add_transfer(xfer(f"t{i:03d}", f"a{i % 7}", f"a{(i + 1) % 7}", i))
    assert det.edges <= 11  # ts 89..99 are within 10 s of 99
    assert det.stored_edges - det.edges < max(4, det.edges // 2)
    assert det.compactions > 1
    det.expire(1000 * S)
    assert det.edges == 0 and det.stored_edges == 0


def test_ties_in_ts_do_not_chain() -> None:
    events: list[Event] = [xfer("t1", "a", "b", 5), xfer("t2", "b", "a", 5)]
    assert detect(events) == []
    events.append(xfer("t3", "b", "a", 6))
    assert summary(detect(events)) == [(CYCLE, "t3", ("a", "b", "a"))]


def test_unrelate_splits_a_component() -> None:
    det = RelatedTransferDetector()
    for a, b in [("a", "b"), ("b", "c"), ("c", "d"), ("b", "e")]:
        det.relate(a, b, "family", 0)
    assert det.related("a", "d") and det.related("e", "d")
    det.unrelate("c", "b", 1)
    assert det.related("a", "e") and det.related("c", "d")
    assert not det.related("a", "d") and not det.related("e", "c")
    det.relate("e", "d", "business", 2)  # joined again through another edge
    assert det.related("a", "c")
    [al] = det.add_transfer(xfer("t1", "a", "c", 3))
    assert al.relation_path == ("a", "b", "e", "d", "c")
    assert al.relation_kinds == ("family", "family", "business", "family")


def test_relation_edges_are_a_set() -> None:
    det = RelatedTransferDetector()
    det.relate("a", "b", "family", 0)
    det.relate("b", "a", "business", 0)  # same edge, new kind
    det.unrelate("a", "b", 1)
    assert not det.related("a", "b")
    det.unrelate("a", "b", 1)  # unrelating again is nothing
    det.relate("a", "a", "self", 1)  # a self-relation is nothing
    assert det.add_transfer(xfer("t1", "a", "b", 2)) == []


def test_cycle_inside_a_relation_path_stays_shortest() -> None:
    det = RelatedTransferDetector()
    for a, b, k in [("a", "z", "k1"), ("z", "b", "k2"), ("a", "y", "k3"), ("y", "b", "k4")]:
        det.relate(a, b, k, 0)
    [al] = det.add_transfer(xfer("t1", "a", "b", 1))
    assert al.relation_path == ("a", "y", "b") and al.relation_kinds == ("k3", "k4")


def test_max_hops_limit() -> None:
    ring = [xfer(f"t{i}", f"v{i}", f"v{(i + 1) % 5}", i + 1) for i in range(5)]  # 5 hops
    assert detect(ring, max_hops=4) == []
    assert summary(detect(ring, max_hops=5)) == [
        (CYCLE, "t4", ("v0", "v1", "v2", "v3", "v4", "v0"))
    ]


def test_fewest_hops_then_smallest_transfer_ids() -> None:
    events: list[Event] = [
        xfer("z1", "a", "b", 1),
        xfer("a1", "a", "m", 1),
        xfer("a2", "m", "b", 2),
        xfer("y1", "a", "b", 2),
        xfer("c9", "b", "a", 3),
    ]
    # 2-hop cycles a->b->a via z1 or y1; the 3-hop one a->m->b->a has smaller ids but more hops.
    [al] = detect(events)
    assert al.transfer_ids == ("y1", "c9")
    # Among equal hops the first transfer id decides, even if a later one is bigger.
    events2: list[Event] = [
        xfer("b1", "a", "m", 1),
        xfer("a9", "m", "b", 2),
        xfer("a5", "a", "n", 1),
        xfer("z9", "n", "b", 2),
        xfer("c0", "b", "a", 3),
    ]
    [al] = detect(events2)
    assert al.transfer_ids == ("a5", "z9", "c0")


def test_chain_accounts_are_distinct() -> None:
    # u -> a -> u -> w is no chain (u twice); u -> w directly is direct, not indirect.
    events: list[Event] = [
        Relate("u", "w", "family", 0),
        xfer("t1", "u", "a", 1),
        xfer("t2", "a", "u", 2),  # a cycle u->a->u
        xfer("t3", "u", "b", 3),
        xfer("t4", "b", "w", 4),  # indirect u->b->w
        xfer("t5", "w", "c", 5),
        xfer("t6", "c", "w", 6),  # cycle w->c->w; u->..->w->c->w is not a chain
    ]
    assert summary(detect(events)) == [
        (CYCLE, "t2", ("u", "a", "u")),
        (INDIRECT, "t4", ("u", "b", "w")),
        (CYCLE, "t6", ("w", "c", "w")),
    ]


def test_duplicates_self_transfers_and_late_transfers_are_ignored() -> None:
    det = RelatedTransferDetector(4, 10 * S)
    det.relate("a", "b", "family", 0)
    t1 = xfer("t1", "a", "b", 1)
    assert len(det.add_transfer(t1)) == 1
    assert det.add_transfer(t1) == []  # redelivered
    assert det.add_transfer(xfer("t2", "a", "a", 2)) == []
    det.add_transfer(xfer("t3", "c", "d", 100))
    assert det.add_transfer(xfer("t4", "a", "b", 50)) == []  # older than the window
    assert det.late_ignored == 1


def test_out_of_order_within_the_window_is_indexed_in_ts_order() -> None:
    det = RelatedTransferDetector(4, 100 * S)
    det.add_transfer(xfer("t2", "b", "c", 5))
    det.add_transfer(xfer("t1", "a", "b", 3))  # arrives late, still within the window
    [al] = det.add_transfer(xfer("t3", "c", "a", 6))
    assert al.transfer_ids == ("t1", "t2", "t3")


def test_parallel_edges_and_late_ones_between_them() -> None:
    det = RelatedTransferDetector(4, 100 * S, compact_min_edges=1)
    for t in [xfer("p9", "a", "b", 10), xfer("p5", "a", "b", 30), xfer("p7", "a", "b", 20)]:
        det.add_transfer(t)  # p7 arrives after p5 but is older: linked between p5 and p9
    det.add_transfer(xfer("q1", "b", "c", 25))
    # a->b->c->a: p9 (ts 10) and p7 (ts 20) both precede q1 (ts 25); p7 has the smaller id.
    [al] = det.add_transfer(xfer("r1", "c", "a", 40))
    assert al.transfer_ids == ("p7", "q1", "r1")
    # Past the window of p9 and p7, only p5 (ts 30) is left, and it is after q1.
    det.expire(128 * S)
    assert det.add_transfer(xfer("r2", "c", "a", 129)) == []
    [al] = det.add_transfer(xfer("r3", "b", "a", 130))
    assert al.transfer_ids == ("p5", "r3")


def test_alert_ids_are_deterministic() -> None:
    events: list[Event] = [
        Relate("a", "b", "family", 0),
        xfer("t1", "a", "b", 1),
        xfer("t2", "b", "a", 2),
    ]
    first, second = detect(events), detect(events)
    assert first == second
    assert [a.alert_id for a in first] == [
        alert_id(DIRECT, "t1"),
        alert_id(DIRECT, "t2"),
        alert_id(CYCLE, "t2"),
    ]
    assert alert_id(CYCLE, "t2") != alert_id(DIRECT, "t2")
    assert len(first[0].alert_id) == 24
    assert Alert.from_record(first[2].to_record()) == first[2]


def test_load_transfer_rebuilds_without_alerts() -> None:
    events = [xfer("t1", "a", "b", 1), xfer("t2", "b", "c", 2)]
    det = RelatedTransferDetector()
    det.relate("a", "c", "family", 0)
    for t in events:
        det.load_transfer(t)
    direct, cycle = det.add_transfer(xfer("t3", "c", "a", 3))
    assert (direct.kind, direct.transfer_ids) == (DIRECT, ("t3",))
    assert (cycle.kind, cycle.transfer_ids) == (CYCLE, ("t1", "t2", "t3"))
    assert det.memory_bytes() > 0


@pytest.mark.parametrize(
    ("max_hops", "window_us"),
    [(1, 10 * S), (9, 10 * S), (4, S - 1), (4, 90 * 86_400 * S + 1)],
)
def test_configuration_limits(max_hops: int, window_us: int) -> None:
    with pytest.raises(ValueError):
        RelatedTransferDetector(max_hops, window_us)


def test_limits_themselves_are_accepted() -> None:
    RelatedTransferDetector(2, S)
    RelatedTransferDetector(8, 90 * 86_400 * S)


def test_detector_is_pure() -> None:
    allowed = {"__future__", "hashlib", "logging", "sys", "bisect", "collections", "dataclasses"}
    allowed |= {"typing", "itertools", "operator", "streams"}
    for module in (graph_module, bruteforce):
        path = Path(module.__file__ or "")
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_wait_knows_the_detectors_group() -> None:
    from paystream import queries
    from streams.detector import app

    assert queries.DETECTOR_GROUP == app.DETECTOR_GROUP
