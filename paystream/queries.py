"""Reading the ledger back from Kafka: live state, outcomes, the replay audit and ``wait``.

The live state is the ledger agents' compacted changelog (committed state only). The replay
folds the ledger log from offset 0, independently of that state, and compares the two.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from base.config import Settings, kafka_client_config
from base.kafka import partition_count, position, reader, retrying, scan, watermarks
from base.topics import TopicNames
from schemas.codec import Codec
from streams.ledger import model as m
from streams.ledger.money import CURRENCY_EXPONENTS, format_amount, parse_signed
from streams.partitioner import partition_for
from streams.processor import LEDGER_GROUP
from streams.records import decode_state, state_view

# The detector's offsets (streams.detector.app.DETECTOR_GROUP; not imported: it loads the detector).
DETECTOR_GROUP = "paystream-detector"


def live_state(settings: Settings) -> dict[str, m.State]:
    """The committed state of every agent key, from the changelog."""
    states: dict[str, m.State] = {}
    for msg in scan(settings, TopicNames(settings.topic_prefix).ledger_state):
        key = (msg.key() or b"").decode()
        value = msg.value()
        if value is None:
            states.pop(key, None)
        else:
            states[key] = decode_state(value)
    return states


def balances(settings: Settings) -> list[dict[str, Any]]:
    """Every customer account (open or blocked), sorted by account id."""
    out = [
        state_view(s)
        for s in live_state(settings).values()
        if isinstance(s, m.AccountState) and s.exists
    ]
    return sorted(out, key=lambda v: v["account"])


def account(settings: Settings, account_id: str) -> dict[str, Any] | None:
    topic = TopicNames(settings.topic_prefix).ledger_state
    n = _partitions(settings, topic)
    found: m.State | None = None
    for msg in scan(settings, topic, [partition_for(account_id, n)]):
        if (msg.key() or b"").decode() == account_id:
            value = msg.value()
            found = None if value is None else decode_state(value)
    if isinstance(found, m.AccountState) and found.exists:
        return state_view(found)
    return None


# ``paystream balance --json``: one shape whichever source answers; null where it cannot know.
ACCOUNT_FIELDS = (
    "account",
    "user",
    "currency",
    "balance",
    "held",  # the changelog knows it; the read side cannot (null)
    "payouts_held",  # pay-outs held until their PSP answers (the changelog; else null)
    "status",
    "seq",
    "related",  # the read side knows these two; the changelog does not keep them (null)
    "blocked_reason",
    "source",  # "readside" or "changelog"
)


def account_view(settings: Settings, account_id: str) -> dict[str, Any] | None:
    """One account from the read side when it runs (and knows it), else from the changelog."""
    from urllib.parse import quote

    served = readside(f"/accounts/{quote(account_id, safe='')}")
    if isinstance(served, dict) and served.get("account"):
        view = {**served, "source": "readside"}
    else:
        found = account(settings, account_id)
        if found is None:
            return None
        view = {**found, "source": "changelog"}
    return {k: view.get(k) for k in ACCOUNT_FIELDS}


def outcomes(settings: Settings, command_id: str) -> list[dict[str, Any]]:
    """Every outcome record for ``command_id`` (normally one), oldest first."""
    topic = TopicNames(settings.topic_prefix).outcomes
    n = _partitions(settings, topic)
    codec = Codec.default()
    found = []
    for msg in scan(settings, topic, [partition_for(command_id, n)]):
        if (msg.key() or b"").decode() == command_id:
            found.append(codec.decode(msg.value() or b"")[1])
    return found


def _partitions(settings: Settings, topic: str) -> int:
    c = reader(settings)
    try:
        return partition_count(c, topic)
    finally:
        c.close()


# --- replay: the auditor's fold of the ledger log ---


@dataclass
class Replay:
    events: int = 0
    seconds: float = 0.0
    balances: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    currency: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    entry_sums: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    problems: list[str] = field(default_factory=list)
    duplicates: int = 0

    def totals(self) -> dict[str, int]:
        t: dict[str, int] = defaultdict(int)
        for acct, bal in self.balances.items():
            t[self.currency[acct]] += bal
        return dict(t)


def replay(settings: Settings, on_progress: Callable[[int], None] | None = None) -> Replay:
    """Fold the whole ledger log: balances, sequence gaps, duplicate and unbalanced entries."""
    codec = Codec.default()
    r = Replay()
    seen: set[str] = set()
    started = time.perf_counter()
    decode = codec.decode
    for msg in scan(settings, TopicNames(settings.topic_prefix).ledger, on_progress=on_progress):
        e = decode(msg.value() or b"")[1]
        eid = e["event_id"]
        if eid in seen:
            r.duplicates += 1
            r.problems.append(f"duplicate ledger event {eid}")
            continue
        seen.add(eid)
        acct = e["account"]
        cur = e["currency"]
        amount = parse_signed(e["amount"], cur)
        r.balances[acct] += amount
        r.currency[acct] = cur
        r.entry_sums[e["entry_id"]] += amount
        if not acct.startswith("@"):
            expected = r.seqs.get(acct, 0) + 1
            if e["account_seq"] != expected:
                r.problems.append(f"{acct}: sequence {e['account_seq']}, expected {expected}")
            r.seqs[acct] = e["account_seq"]
            if parse_signed(e["balance_after"], cur) != r.balances[acct]:
                r.problems.append(f"{acct}: balance_after differs from the fold at {eid}")
        r.events += 1
    r.seconds = time.perf_counter() - started
    for entry, total in r.entry_sums.items():
        if total != 0:
            r.problems.append(f"entry {entry} is not zero-sum ({total})")
    for cur, total in r.totals().items():
        if total != 0:
            r.problems.append(f"{cur} does not sum to zero over all accounts ({total})")
    return r


def verify(settings: Settings, r: Replay) -> list[str]:
    """Differences between the replayed balances and the live state."""
    live = {
        k: s for k, s in live_state(settings).items() if isinstance(s, m.AccountState) and s.exists
    }
    diffs = []
    for acct in sorted(set(live) | {a for a in r.balances if not a.startswith("@")}):
        s = live.get(acct)
        replayed = r.balances.get(acct, 0)
        if s is None:
            diffs.append(f"{acct}: in the ledger log but not a live account")
        elif s.balance != replayed:
            cur = s.currency if s.currency in CURRENCY_EXPONENTS else "USD"
            diffs.append(
                f"{acct}: live {format_amount(s.balance, cur)} != replayed {format_amount(replayed, cur)}"
            )
    return diffs


# --- wait: until everything produced so far has been processed ---


def _committed(c: Consumer, group_topic_parts: list[TopicPartition]) -> dict[tuple[str, int], int]:
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in retrying(lambda: c.committed(group_topic_parts, timeout=30))
    }


def _ends(c: Consumer, topic: str) -> dict[tuple[str, int], int]:
    md = retrying(lambda: c.list_topics(topic, timeout=30))
    return {(topic, p): watermarks(c, topic, p)[1] for p in md.topics[topic].partitions}


def _visible_between(
    settings: Settings, ranges: dict[tuple[str, int], tuple[int, int]], **client: Any
) -> bool:
    """Is a committed record visible in any [start, end)? Markers and aborted records are not."""
    if not ranges:
        return False
    c = reader(settings, **client)
    try:
        c.assign([TopicPartition(t, p, start) for (t, p), (start, _) in ranges.items()])
        remaining = set(ranges)
        deadline = time.monotonic() + 10
        while remaining and time.monotonic() < deadline:
            for msg in c.consume(100, timeout=0.5):
                topic, p, offset = position(msg)
                k = (topic, p)
                err = msg.error()
                if err is None:
                    if offset < ranges[k][1]:
                        return True
                    remaining.discard(k)
                elif err.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(k)
        return bool(remaining)  # could not tell in time: say "not caught up"
    finally:
        c.close()


def caught_up(
    settings: Settings,
    group: str,
    topics: list[str],
    targets: dict[tuple[str, int], int] | None = None,
    **client: Any,
) -> bool:
    """Has ``group`` consumed every committed record of ``topics`` (below ``targets``)?
    ``client``: extra consumer settings (e.g. a quiet ``logger``)."""
    probe = reader(settings, **{**client, "group.id": group})
    try:
        ends: dict[tuple[str, int], int] = {}
        for t in topics:
            ends.update(_ends(probe, t))
        if targets:
            ends.update({k: v for k, v in targets.items() if k in ends})
        committed = _committed(probe, [TopicPartition(t, p) for (t, p) in ends])
    finally:
        probe.close()
    # A partition never committed has offset -1001 (none): it is behind only if it has records.
    # Transaction markers sit between the committed offset and the end, so "behind" is settled
    # by looking for a visible record in between.
    behind = {
        k: (max(committed.get(k, -1), 0), end)
        for k, end in ends.items()
        if max(committed.get(k, -1), 0) < end
    }
    return not _visible_between(settings, behind, **client)


def wait(
    settings: Settings, timeout_s: float, poll_s: float = 0.2, *, downstream: bool = True
) -> bool:
    """Return True once every command produced before the call is fully processed: by the
    write side, and (``downstream``) by every running downstream consumer too."""
    names = TopicNames(settings.topic_prefix)
    group = settings.topic_prefix + LEDGER_GROUP
    deadline = time.monotonic() + timeout_s
    probe = reader(settings)
    try:
        targets = _ends(probe, names.commands)
    finally:
        probe.close()
    while not caught_up(settings, group, [names.commands], targets):
        if time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    # Sagas, and the payments' loop through the ledger and the PSP executor (when they run):
    # every group caught up twice in a row means no step is still producing another.
    loops = [(group, [names.commands, names.saga]), *payments_groups(settings)]
    stable = 0
    while stable < 2:
        if all(caught_up(settings, g, topics) for g, topics in loops):
            stable += 1
        else:
            stable = 0
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
    # Then every running downstream consumer (the warehouse sink, ...) over what it reads.
    for down_group, topics in downstream_groups(settings) if downstream else []:
        if not _running(settings, down_group):
            continue
        while not caught_up(settings, down_group, topics):
            if time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
    return True


def payments_groups(settings: Settings) -> list[tuple[str, list[str]]]:
    """The payments workers over their input and the executor over its requests, those of
    them that run (a ledger-only stack has neither)."""
    from connectors.psp.executor import EXECUTOR_GROUP
    from streams.processor import group_of

    n = TopicNames(settings.topic_prefix)
    p = settings.topic_prefix
    groups = [
        (p + group_of("payments"), [n.payments]),
        (p + EXECUTOR_GROUP, [n.psp_requests]),
        # The schedulers: schedule commands, and the payments' outcomes they follow.
        (p + group_of("scheduler"), [n.schedule_commands, n.payment_events]),
        (p + group_of("users"), [n.user_requests]),  # the wallet's users workers
        (p + group_of("risk"), [n.risk_requests]),
        (p + group_of("reviews"), [n.reviews]),
    ]
    return [(g, topics) for g, topics in groups if _active(settings, g)]


def downstream_groups(settings: Settings) -> list[tuple[str, list[str]]]:
    from connectors.sink import SINK_GROUP

    n = TopicNames(settings.topic_prefix)
    p = settings.topic_prefix
    return [
        (
            p + SINK_GROUP,
            [
                *(n.ledger, n.transfers, n.outcomes, n.accounts, n.payment_events),
                *(n.risk_decisions, n.review_events, n.risk_labels, n.schedule_events),
            ],
        ),
        (p + "paystream-readside", [n.ledger, n.transfers, n.outcomes, n.accounts]),
        (p + DETECTOR_GROUP, [n.transfers, n.accounts]),
    ]


# --- the read side's query API (faust web views), when it runs ---


def readside(path: str) -> Any:
    """GET a read-side view; None when the read side is not running (callers fall back)."""
    import os
    import urllib.error
    import urllib.request

    port = int(os.environ.get("PAYSTREAM_READSIDE_PORT", "6066"))
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return {}
        return None
    except (OSError, ValueError):
        return None


def detector_running(settings: Settings) -> bool:
    """Is the detector process of this stack (``paystream up``) alive?"""
    from ops.procs import Supervisor
    from paystream.bootstrap import DETECTOR_ROLE

    sup = Supervisor(settings.home)
    return any(p["role"] == DETECTOR_ROLE and sup.alive(p["name"]) for p in sup.list())


def _running(settings: Settings, group: str) -> bool:
    """Is the consumer behind ``group`` running, so that waiting for it makes sense?

    The detector assigns its partitions (no group members to see), so its process is asked;
    its committed offsets still say how far it got: it commits a partition only up to the
    oldest event in its reorder buffer, after the alerts before it were acknowledged.
    """
    if group == settings.topic_prefix + DETECTOR_GROUP:
        return detector_running(settings)
    return _active(settings, group)


def _active(settings: Settings, group: str) -> bool:
    """Does ``group`` have members right now? (a stopped consumer is not waited for)"""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**kafka_client_config(settings), "log_level": 4})
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except Exception:  # unknown group: nothing to wait for
        return False
    return len(desc.members) > 0
