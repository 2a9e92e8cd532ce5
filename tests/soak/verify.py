"""The checks: every result of the run against the model, the detector's definition and the
logs (nothing lost, nothing twice, every outcome, row and alert exact, no process stuck)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import sys
import time
import traceback
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.soak.definition import definition_alerts
from tests.soak.plan import Expected, Plan
from tests.soak.stack import STALL_S, SoakStack


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "detail": self.detail,
            "counts": self.counts,
            "problems": self.problems[:50],
            "problems_total": len(self.problems),
        }


def _diff_balances(got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for acct in sorted(set(got) | set(want)):
        g, w = got.get(acct), want.get(acct)
        if g is None:
            out.append(f"{acct}: missing (want {w})")
        elif w is None:
            out.append(f"{acct}: unexpected {g}")
        elif g != w:
            out.append(f"{acct}: got {g}, want {w}")
    return out


def _norm(rows: Iterator[dict[str, Any]]) -> dict[str, dict[str, str]]:
    keys = ("account", "user", "currency", "balance", "status")
    return {r["account"]: {k: str(r[k]) for k in keys} for r in rows}


def _scan_decoded(stack: SoakStack, topic: str) -> Iterator[tuple[Any, int, int, dict[str, Any]]]:
    from base.kafka import scan
    from schemas.codec import Codec

    codec = Codec.default()
    for msg in scan(stack.resolved, topic):
        value = msg.value()
        if value is None:
            continue
        key = (msg.key() or b"").decode()
        yield key, int(msg.partition() or 0), int(msg.offset() or 0), codec.decode(value)[1]


class Verifier:
    def __init__(self, stack: SoakStack, plan: Plan, exp: Expected, say: Callable[[str], None]):
        from base.topics import TopicNames

        self.stack = stack
        self.plan = plan
        self.exp = exp
        self.say = say
        self.topics = TopicNames(stack.settings.topic_prefix)
        self.checks: list[Check] = []
        self.stats: dict[str, Any] = {}

    def add(self, check: Check) -> None:
        self.checks.append(check)
        mark = "PASS" if check.ok else "FAIL"
        self.say(f"[verify] {mark} {check.name}: {check.detail}")
        for p in check.problems[:5]:
            self.say(f"           {p}")

    def run(self, readside_timeout_s: float) -> None:
        steps: list[Callable[[], None]] = [
            self.balances_write_side,
            self.ledger_replay,
            self.ledger_events,
            self.transfer_lifecycle,
            self.account_events,
            self.outcomes,
            self.dead_letters,
            self.alerts,
            self.warehouse,
            lambda: self.readside(readside_timeout_s),
        ]
        for step in steps:
            try:
                step()
            except Exception as exc:
                name = getattr(step, "__name__", "readside")
                self.add(
                    Check(
                        name,
                        False,
                        f"the check itself failed: {exc!r}",
                        problems=traceback.format_exc().splitlines()[-8:],
                    )
                )

    # -- balances ---------------------------------------------------------------------------

    def balances_write_side(self) -> None:
        from paystream import queries

        want = self.exp.oracle.balances()
        got = _norm(iter(queries.balances(self.stack.resolved)))
        diffs = _diff_balances(got, want)
        self.add(
            Check(
                "balances: write side = model",
                not diffs,
                f"{len(got)} accounts, {len(diffs)} differ",
                {"accounts": len(got), "differ": len(diffs)},
                diffs,
            )
        )

    # -- the ledger log ---------------------------------------------------------------------

    def ledger_replay(self) -> None:
        from paystream import queries
        from streams.ledger.money import format_amount

        t0 = time.monotonic()
        r = queries.replay(self.stack.resolved)
        self.stats["replay_events"] = r.events
        self.stats["replay_s"] = round(time.monotonic() - t0, 1)
        unbalanced = [e for e, total in r.entry_sums.items() if total != 0]
        totals = r.totals()
        self.add(
            Check(
                "ledger zero-sum (replay)",
                not unbalanced and all(v == 0 for v in totals.values()) and not r.problems,
                f"{len(r.entry_sums)} entries, {len(unbalanced)} not zero-sum; "
                f"currency totals {dict(totals)}; {len(r.problems)} replay problems",
                {
                    "entries": len(r.entry_sums),
                    "unbalanced": len(unbalanced),
                    "problems": len(r.problems),
                },
                r.problems,
            )
        )
        want = self.exp.oracle.balances()
        replayed = {
            acct: {
                **want[acct],
                "balance": format_amount(r.balances.get(acct, 0), want[acct]["currency"]),
            }
            for acct in want
        }
        extra = [a for a in r.balances if not a.startswith("@") and a not in want]
        diffs = _diff_balances(replayed, want) + [
            f"{a}: in the log, not in the model" for a in extra
        ]
        live = queries.verify(self.stack.resolved, r)
        self.add(
            Check(
                "balances: ledger replay = model = live",
                not diffs and not live,
                f"{len(want)} accounts, {len(diffs)} differ from the model, "
                f"{len(live)} differ from the live state",
                {"accounts": len(want), "differ_model": len(diffs), "differ_live": len(live)},
                diffs + live,
            )
        )

    def ledger_events(self) -> None:
        ids: Counter[str] = Counter()
        command_of: dict[str, str] = {}
        records = 0
        for _, _, _, e in _scan_decoded(self.stack, self.topics.ledger):
            records += 1
            ids[e["event_id"]] += 1
            command_of[e["event_id"]] = e["command_id"]
        self.ledger_ids = set(ids)
        dups = {i: n for i, n in ids.items() if n > 1}
        dup_records = sum(n - 1 for n in dups.values())
        problems = [f"duplicate ledger event {i} x{n}" for i, n in sorted(dups.items())]
        # Distinct postings per command against the model's: nothing missing, nothing extra.
        per_command = Counter(command_of.values())
        want_total = 0
        for cmd_id in self.exp.commands:
            want = self.exp.postings(cmd_id)
            want_total += want
            got = per_command.pop(cmd_id, 0)
            if got != want:
                problems.append(f"command {cmd_id}: {got} postings, want {want}")
        for cmd_id, got in sorted(per_command.items()):
            problems.append(f"postings of an unknown command {cmd_id}: {got}")
        self.add(
            Check(
                "ledger events: none duplicated, none missing",
                not problems,
                f"{records} records, {len(ids)} distinct ids, {dup_records} duplicates; "
                f"model wants {want_total}",
                {
                    "records": records,
                    "distinct": len(ids),
                    "duplicates": dup_records,
                    "expected": want_total,
                },
                problems,
            )
        )

    def transfer_lifecycle(self) -> None:
        ids: Counter[str] = Counter()
        per: dict[str, list[str]] = defaultdict(list)
        self.edges: list[tuple[int, int, int, int, int, Any]] = []
        from streams.detector.graph import TransferEdge

        for _, part, off, e in _scan_decoded(self.stack, self.topics.transfers):
            ids[e["event_id"]] += 1
            if ids[e["event_id"]] > 1:
                continue
            per[e["transfer_id"]].append(e["status"])
            if e["status"] == "posted":
                edge = TransferEdge(
                    e["transfer_id"],
                    e["command_id"],
                    e["from_account"],
                    e["to_account"],
                    e["amount"],
                    e["currency"],
                    int(e["ts"]),
                )
                self.edges.append((int(e["ts"]), 1, 0, part, off, edge))
        self.transfer_ids = set(ids)
        problems = [f"duplicate transfer event {i} x{n}" for i, n in ids.items() if n > 1]
        posted = voided = 0
        for cmd_id, c in self.exp.commands.items():
            if c["type"] != "transfer":
                continue
            want = self.exp.lifecycle(cmd_id)
            got = sorted(per.pop(cmd_id, []))
            posted += want == ["pending", "posted"]
            voided += want == ["pending", "voided"]
            if got != sorted(want):
                problems.append(f"transfer {cmd_id}: {got}, want {want}")
        problems += [f"events of an unknown transfer {t}: {s}" for t, s in sorted(per.items())]
        self.add(
            Check(
                "transfers: pending -> posted | voided, exactly",
                not problems,
                f"{sum(ids.values())} events; {posted} posted, {voided} voided (turned back)",
                {"events": sum(ids.values()), "posted": posted, "voided": voided},
                problems,
            )
        )

    def account_events(self) -> None:
        ids: Counter[str] = Counter()
        per: dict[str, list[str]] = defaultdict(list)
        self.relation_events: list[tuple[int, int, int, int, int, Any]] = []
        self.relation_ids: set[str] = set()
        from streams.detector.bruteforce import Relate, Unrelate

        for _, part, off, e in _scan_decoded(self.stack, self.topics.accounts):
            ids[e["event_id"]] += 1
            if ids[e["event_id"]] > 1:
                continue
            per[e["command_id"]].append(e["kind"])
            ts = int(e["ts"])
            if e["kind"] == "related" and e.get("related"):
                self.relation_ids.add(e["event_id"])
                ev = Relate(e["account"], e["related"], e["relation_kind"] or "", ts)
                self.relation_events.append((ts, 0, 1, part, off, ev))
            elif e["kind"] == "unrelated" and e.get("related"):
                self.relation_ids.add(e["event_id"])
                self.relation_events.append(
                    (ts, 0, 1, part, off, Unrelate(e["account"], e["related"], ts))
                )
        self.account_ids = set(ids)
        problems = [f"duplicate account event {i} x{n}" for i, n in ids.items() if n > 1]
        for cmd_id in self.exp.commands:
            want = self.exp.account_events(cmd_id)
            got = per.pop(cmd_id, [])
            if sorted(got) != sorted(want):
                problems.append(f"command {cmd_id}: account events {got}, want {want}")
        problems += [f"account events of an unknown command {c}: {k}" for c, k in per.items()]
        self.add(
            Check(
                "account events (opened, blocked, related...) exactly",
                not problems,
                f"{sum(ids.values())} events, {len(self.relation_events)} relation changes",
                {"events": sum(ids.values()), "relations": len(self.relation_events)},
                problems,
            )
        )

    def outcomes(self) -> None:
        ids: Counter[str] = Counter()
        main: dict[str, list[str]] = defaultdict(list)
        reused: Counter[str] = Counter()
        for _, _, _, o in _scan_decoded(self.stack, self.topics.outcomes):
            ids[o["event_id"]] += 1
            if ids[o["event_id"]] > 1:
                continue
            if o["reason"] == "exists_with_different_payload":
                reused[o["command_id"]] += 1
            else:
                main[o["command_id"]].append(o["reason"] or "accepted")
        self.outcome_ids = set(ids)
        problems = [f"duplicate outcome record {i} x{n}" for i, n in ids.items() if n > 1]
        wrong = 0
        for cmd_id, want in self.exp.oracle.outcomes.items():
            got = main.pop(cmd_id, [])
            if len(got) != 1:
                problems.append(f"command {cmd_id}: {len(got)} outcomes {got}, want 1 ({want})")
            elif got[0] != want:
                wrong += 1
                problems.append(f"command {cmd_id}: {got[0]}, model says {want}")
        problems += [f"outcome of an unknown command {c}: {r}" for c, r in sorted(main.items())]
        if reused != self.exp.reuses:
            problems.append(
                f"reused-id rejections {sum(reused.values())} on {len(reused)} ids, "
                f"want {sum(self.exp.reuses.values())} on {len(self.exp.reuses)}"
            )
        statuses = Counter(
            "accepted" if r == "accepted" else "rejected" for r in self.exp.oracle.outcomes.values()
        )
        self.add(
            Check(
                "every command exactly one outcome, = model",
                not problems,
                f"{len(self.exp.oracle.outcomes)} commands: {statuses['accepted']} accepted, "
                f"{statuses['rejected']} rejected; {sum(reused.values())} reused-id rejections; "
                f"{self.exp.duplicates} exact repeats ignored",
                {
                    "commands": len(self.exp.oracle.outcomes),
                    "accepted": statuses["accepted"],
                    "rejected": statuses["rejected"],
                    "reused": sum(reused.values()),
                    "repeats": self.exp.duplicates,
                    "wrong": wrong,
                },
                problems,
            )
        )

    def dead_letters(self) -> None:
        sources: Counter[str] = Counter()
        for _, _, _, d in _scan_decoded(self.stack, self.topics.deadletter):
            sources["producer" if d["source"].startswith("cli:") else "other"] += 1
        ok = sources["producer"] == self.exp.raw_lines and sources["other"] == 0
        self.add(
            Check(
                "refused lines: one dead letter each",
                ok,
                f"{sources['producer']} dead letters from the producer (want "
                f"{self.exp.raw_lines}), {sources['other']} from elsewhere (want 0)",
                dict(sources),
            )
        )

    # -- alerts -----------------------------------------------------------------------------

    def alerts(self) -> None:
        import subprocess

        from streams.detector.graph import DEFAULT_MAX_HOPS, DEFAULT_WINDOW_US

        events = sorted(self.relation_events + self.edges, key=lambda e: e[:5])
        t0 = time.monotonic()
        want = {
            a.alert_id: a.to_record()
            for a in definition_alerts([e[5] for e in events], DEFAULT_MAX_HOPS, DEFAULT_WINDOW_US)
        }
        self.stats["definition_s"] = round(time.monotonic() - t0, 1)
        proc = subprocess.run(
            [sys.executable, "-m", "paystream.cli", "alerts", "--json"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **self.stack.env()},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"paystream alerts --json: {proc.stderr[-2000:]}")
        cli = {a["alert_id"]: a for a in json.loads(proc.stdout)}
        # The CLI shows a few fields; the topic (what it reads) holds the whole records.
        from streams.detector.app import read_alerts

        got = {a["alert_id"]: a for a in read_alerts(self.stack.resolved)}
        self.alert_ids = set(got)
        problems = []
        for aid in sorted(set(want) - set(got)):
            problems.append(f"missing alert {_alert_brief(want[aid])}")
        for aid in sorted(set(got) - set(want)):
            problems.append(f"unexpected alert {_alert_brief(got[aid])}")
        for aid in sorted(set(got) & set(want)):
            g = {k: got[aid].get(k) for k in want[aid]}
            if json.loads(json.dumps(g)) != json.loads(json.dumps(want[aid])):
                problems.append(f"alert differs: got {g}, want {want[aid]}")
        if set(cli) != set(got):
            problems.append(
                f"paystream alerts --json lists {len(cli)} alerts, the topic {len(got)}"
            )
        for aid in sorted(set(cli) & set(want)):
            c, w = cli[aid], want[aid]
            if any(json.dumps(c[k]) != json.dumps(w[k]) for k in c if k in w):
                problems.append(f"paystream alerts --json shows {c}, want {w}")
        kinds = Counter(a["kind"] for a in want.values())
        by_closing = {a["command_ids"][-1]: a for a in want.values()}
        planted_bad = []
        for cmd_id, (kind, hops) in self.plan.planted_alerts.items():
            a = next(
                (x for x in want.values() if x["command_ids"][-1] == cmd_id and x["kind"] == kind),
                None,
            )
            if a is None or len(a["transfer_ids"]) != hops:
                planted_bad.append(f"planted {kind} ({hops} hops) closed by {cmd_id}: {a}")
        planted_bad += [
            f"planted quiet transfer {c} raised {_alert_brief(by_closing[c])}"
            for c in self.plan.planted_quiet
            if c in by_closing
        ]
        self.add(
            Check(
                "alerts (paystream alerts) = detector definition",
                not problems and not planted_bad,
                f"{len(got)} alerts, {len(want)} by definition "
                f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}); "
                f"planted {len(self.plan.planted_alerts) - len(planted_bad)}"
                f"/{len(self.plan.planted_alerts)} found",
                {"alerts": len(got), "expected": len(want), **dict(kinds)},
                problems + planted_bad,
            )
        )

    # -- the warehouse ----------------------------------------------------------------------

    def warehouse(self) -> None:
        from connectors.warehouse import query_client

        client = query_client(self.stack.resolved)
        tables = [
            ("ledger_entries", "event_id", self.ledger_ids),
            ("transfers", "event_id", self.transfer_ids),
            ("command_outcomes", "event_id", self.outcome_ids),
            ("account_events", "event_id", self.account_ids),
            ("relations", "event_id", self.relation_ids),
            ("alerts", "alert_id", self.alert_ids),
        ]
        problems: list[str] = []
        counts: dict[str, Any] = {}
        raw_dups_total = 0
        for table, col, want in tables:
            rows = client.query(f"SELECT {col}, count() FROM {table} GROUP BY {col}").result_rows
            have = {r[0]: int(r[1]) for r in rows}
            raw = sum(have.values())
            final = int(client.query(f"SELECT count() FROM {table} FINAL").result_rows[0][0])
            missing = want - set(have)
            extra = set(have) - want
            raw_dups = raw - len(have)
            raw_dups_total += raw_dups
            counts[table] = {
                "log": len(want),
                "distinct": len(have),
                "raw": raw,
                "final": final,
                "raw_duplicates": raw_dups,
            }
            problems += [f"{table}: missing {i}" for i in sorted(missing)[:20]]
            if len(missing) > 20:
                problems.append(f"{table}: ... {len(missing)} missing in all")
            problems += [f"{table}: not in the log {i}" for i in sorted(extra)[:20]]
            if final != len(have):
                problems.append(f"{table}: {final} rows with FINAL, {len(have)} distinct ids")
        rows = client.query("SELECT account, currency, balance FROM account_balances").result_rows
        want_bal = self.exp.oracle.balances()
        bal_diffs = []
        got_bal = {r[0]: (r[1], Decimal(str(r[2]))) for r in rows if not str(r[0]).startswith("@")}
        for acct in sorted(set(got_bal) | set(want_bal)):
            g, w = got_bal.get(acct), want_bal.get(acct)
            if g is None or w is None or g != (w["currency"], Decimal(w["balance"])):
                bal_diffs.append(f"account_balances {acct}: {g}, want {w}")
        self.add(
            Check(
                "warehouse rows = log (distinct ids, FINAL)",
                not problems,
                " ".join(f"{t} {c['distinct']}/{c['log']}" for t, c in counts.items())
                + f"; raw duplicates before merge: {raw_dups_total}",
                counts,
                problems,
            )
        )
        self.add(
            Check(
                "balances: warehouse = model",
                not bal_diffs,
                f"{len(got_bal)} accounts, {len(bal_diffs)} differ",
                {"accounts": len(got_bal), "differ": len(bal_diffs)},
                bal_diffs,
            )
        )

    # -- the read side ----------------------------------------------------------------------

    def readside(self, timeout_s: float) -> None:
        want = self.exp.oracle.balances()
        port = self.stack.readside_port
        t0 = time.monotonic()
        diffs: list[str] = ["not asked yet"]
        while time.monotonic() - t0 < timeout_s:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts", timeout=30) as r:
                    got = _norm(iter(json.loads(r.read())))
                diffs = _diff_balances(got, want)
            except OSError as exc:
                diffs = [f"read side not answering: {exc}"]
            if not diffs:
                break
            time.sleep(2.0)
        converged = round(time.monotonic() - t0, 1)
        self.stats["readside_converged_s"] = converged
        rng = random.Random(self.stack.cfg.seed)
        sample = rng.sample(
            sorted(self.exp.oracle.outcomes), min(200, len(self.exp.oracle.outcomes))
        )
        wrong = []
        for cmd_id in sample:
            from urllib.parse import quote

            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/commands/{quote(cmd_id, safe='')}", timeout=30
                ) as r:
                    o = json.loads(r.read())
                got_o = o.get("reason") or o.get("status")
            except OSError as exc:
                got_o = f"error {exc}"
            if got_o != self.exp.oracle.outcomes[cmd_id]:
                wrong.append(
                    f"/commands/{cmd_id}: {got_o}, want {self.exp.oracle.outcomes[cmd_id]}"
                )
        self.add(
            Check(
                "read side: balances = model, outcomes sample = model",
                not diffs and not wrong,
                f"{len(want)} accounts, {len(diffs)} differ (after {converged}s); "
                f"{len(sample) - len(wrong)}/{len(sample)} outcomes right",
                {
                    "accounts": len(want),
                    "differ": len(diffs),
                    "outcomes_sampled": len(sample),
                    "outcomes_wrong": len(wrong),
                },
                diffs + wrong,
            )
        )


def _alert_brief(a: dict[str, Any]) -> str:
    return f"{a.get('kind')} {'->'.join(a.get('accounts') or [])} closing {(a.get('command_ids') or ['?'])[-1]}"


# librdkafka's own words for a client that stopped working while its process lives on: the
# application did not poll for max.poll.interval.ms (its main loop is blocked), or a fatal
# error (the client is unusable until the process restarts).
_HUNG_MARKS = ("|MAXPOLL|", "|FATAL|")
_RESTART_MARKS = ("restarting in place", " started (")


def liveness_check(log_dir: Path, stalls: list[dict[str, Any]]) -> Check:
    """Every process kept working or exited: none blocked for minutes while alive."""
    found = [
        f"ledger stalled {st['idle_s']}s from {st['since']} in phase {st['phase']!r}: "
        f"commands partition {st['partition']} at offset {st['offset']}, {st['pending']} pending"
        for st in stalls
    ]
    recovered = 0
    for path in sorted(log_dir.glob("*.log")):
        if path.name.startswith("kafka-"):
            continue
        marks: list[str] = []
        with contextlib.suppress(OSError), path.open(errors="replace") as f:
            for line in f:
                if any(mark in line for mark in _HUNG_MARKS):
                    marks.append(f"{path.stem}: {line.strip()[:300]}")
                elif any(mark in line for mark in _RESTART_MARKS):
                    # The process restarted itself in place (paystream.bootstrap), or was
                    # replaced (a chaos kill): the broken client is gone. Whether its
                    # partitions waited too long is the stall check's business.
                    recovered += len(marks)
                    marks = []
        found += marks
    return Check(
        "liveness: no process blocked or fatally broken",
        not found,
        f"{len(stalls)} ledger stalls of {STALL_S:.0f}s or more; "
        f"{len(found) - len(stalls)} blocked or fatal clients in the process logs"
        f" ({recovered} more whose process restarted, in place or after a kill)",
        {"stalls": len(stalls), "hung_clients": len(found) - len(stalls), "recovered": recovered},
        found,
    )
