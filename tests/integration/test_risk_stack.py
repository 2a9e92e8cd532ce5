"""The risk engine through the real stack: the API, the payments, risk and review workers,
the ledger, the PSP simulator and the warehouse, as `paystream up` runs them.

* Velocity: a burst of one user's payments, with the risk worker killed (-9) in the middle of
  it (payments arrive while it is dead), gives the exact count at every payment and the
  decisions that follow from them; `paystream risk replay --verify` decides every payment
  again from the log alone, the same.
* Versions: a published rule file decides from its log position on (each payment's request
  offset against the activation's); a shadow version records its decisions without acting.
* Hostile rule files are refused with the rule and the column, and the live version stays.
* Review: approve and decline through the API and the CLI; a second decision is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from base.config import Settings, api_token
from ops.kafka import KafkaCluster
from ops.topics import ensure_topics
from tests.risk_harness import FIXTURES, RiskWorld
from tests.stack import payments_stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, kafka_cluster: KafkaCluster
) -> Iterator[RiskWorld]:
    home: Path = tmp_path_factory.mktemp("risk")
    s = Settings(
        home=home, bootstrap=kafka_cluster.bootstrap, topic_prefix=f"t{uuid4().hex[:10]}.",
        partitions=4, readside_port=9, kafka_libs=kafka_cluster.libs, api_token="risk-token",
    )  # fmt: skip
    ensure_topics(kafka_cluster.bootstrap, s.topic_prefix, partitions=4, brokers=1)
    st = payments_stack(s)
    st.up()
    w = RiskWorld(st)
    try:
        code, _, err = w.cli_json("risk", "publish", str(FIXTURES / "v1.toml"))
        assert code == 0, err
        w.open_accounts("burst", "rev", "ver", "host")
        yield w
    finally:
        st.stop()


def test_a_burst_across_kill_9_of_the_risk_worker_counts_exactly(world: RiskWorld) -> None:
    ids = [f"burst-{i}" for i in range(10)]
    for pid in ids[:4]:
        world.pay_in("burst", pid)
    world.wait_status(ids[3], ("review",))
    world.stack.kill("risk-1")
    assert not world.stack.alive("risk-1")
    # Mid-burst: these arrive while no risk worker runs and wait in risk_check.
    for pid in ids[4:7]:
        world.pay_in("burst", pid)
    for pid in ids[4:7]:
        assert world.payment(pid)["status"] == "risk_check"
    world.stack.start("risk-1")
    world.wait_status(ids[6], ("rejected",))
    world.stack.kill("risk-1")  # and once more, between two payments
    world.stack.start("risk-1")
    for pid in ids[7:]:
        world.pay_in("burst", pid)
    for pid in ids:
        world.wait_status(pid, ("succeeded", "review", "rejected"))
    counts, actions = [], []
    for pid in ids:
        d = world.live_decision(pid)
        features = json.loads(d["features"])
        counts.append(features["user_payments_1h"])
        actions.append(d["action"])
        assert d["rules_version"] == "it-v1"
    assert counts == list(range(10))  # exact: every earlier request, never this one
    assert actions == ["allow"] * 3 + ["review"] * 3 + ["block"] * 4
    blocked = world.payment(ids[9])
    assert (blocked["status"], blocked["reason"]) == ("rejected", "risk_blocked")
    assert blocked["risk"]["rules"] == ["burst_review", "burst_block"]
    log = world.stack.log_tail("risk-1", 100_000)
    assert log.count("risk worker 1 started") >= 3, "the worker was not restarted twice"
    world.wait()
    code, body, err = world.cli_json("risk", "replay", "--verify")
    assert code == 0 and body["mismatches"] == [], (body, err)
    assert body["decisions"] >= 10


def test_hostile_rule_files_are_refused_and_the_live_version_stays(
    world: RiskWorld, tmp_path: Path
) -> None:
    huge = tmp_path / "huge.toml"
    huge.write_text('version = "huge"\n' + "# padding\n" * 40_000)
    cases = {
        "syntax_error.toml": ("syntax_error", "broken", 10),
        "unknown_symbol.toml": ("unknown_symbol", "typo", 16),
        "clock.toml": ("nondeterministic", "clock", 1),
        "not_toml.toml": ("not_toml", None, None),
    }
    for name, (code_, rule, column) in cases.items():
        for verb in ("check", "publish", "shadow"):
            code, body, _ = world.cli_json("risk", verb, str(FIXTURES / name))
            assert code == 1 and body["ok"] is False and body["error"] == code_, (name, body)
            assert (body["rule"], body["column"]) == (rule, column), (name, body)
    r = world.cli("risk", "check", str(FIXTURES / "unknown_symbol.toml"))
    assert "rule 'typo', column 16: unknown symbol 'user_paymnts_1h'" in r.stderr
    code, body, _ = world.cli_json("risk", "publish", str(huge))
    assert code == 1 and body["error"] == "too_large"
    code, status, _ = world.cli_json("risk", "status")
    assert code == 0
    assert {p["rules"]["version"] for p in status["partitions"]} == {"it-v1"}
    world.pay_in("host", "host-1", amount="600.00")
    assert world.wait_status("host-1", ("review",))["risk"]["version"] == "it-v1"


def test_a_version_decides_from_its_log_position_and_a_shadow_only_records(
    world: RiskWorld,
) -> None:
    world.pay_in("ver", "ver-1", amount="60.00")
    world.wait_status("ver-1", ("succeeded",))
    code, shadow, err = world.cli_json("risk", "shadow", str(FIXTURES / "v2.toml"))
    assert code == 0, err
    world.pay_in("ver", "ver-2", amount="60.00")
    assert world.wait_status("ver-2", ("succeeded",))["risk"]["version"] == "it-v1"
    ds = {d["decision_id"]: d for d in world.decisions()}
    sha12 = shadow["sha256"][:12]
    assert ds[f"ver-2/risk/shadow/{sha12}"]["action"] == "block"  # recorded, not acted on
    assert ds[f"ver-2/risk/shadow/{sha12}"]["mode"] == "shadow"
    assert f"ver-1/risk/shadow/{sha12}" not in ds  # before the shadow's position
    code, live, err = world.cli_json("risk", "publish", str(FIXTURES / "v2.toml"))
    assert code == 0, err
    world.pay_in("ver", "ver-3", amount="60.00")
    p3 = world.wait_status("ver-3", ("rejected",))
    assert (p3["reason"], p3["risk"]["version"]) == ("risk_blocked", "it-v2")
    # The switch is where the activation sits in each partition: before it, v1; after, v2.
    at = {p["partition"]: p["offset"] for p in live["partitions"]}
    offsets = world.request_offsets({"ver-1", "ver-2", "ver-3"})
    for pid, (partition, offset) in offsets.items():
        version = world.live_decision(pid)["rules_version"]
        assert version == ("it-v2" if offset > at[partition] else "it-v1"), (pid, offset, at)
    assert world.cli_json("risk", "shadow", "--off")[0] == 0
    # Back to v1 for the other tests.
    assert world.cli_json("risk", "publish", str(FIXTURES / "v1.toml"))[0] == 0


def test_review_approve_and_decline_through_the_api_and_the_cli(world: RiskWorld) -> None:
    for i in range(4):
        world.pay_in("rev", f"rev-{i}", amount="700.00")
    for i in range(4):
        world.wait_status(f"rev-{i}", ("review",))
    s = world.settings
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{s.api_port}",
        headers={"Authorization": f"Bearer {api_token(s)}"},
        timeout=30,
    )
    items = http.get("/payments/review/v1", params={"kind": "risk", "status": "open"}).json()
    ours = [i for i in items if i["payment_id"] and i["payment_id"].startswith("rev-")]
    assert [i["payment_id"] for i in ours] == [f"rev-{i}" for i in range(4)]  # oldest first
    first = ours[0]
    assert first["id"] == "risk:rev-0" and first["kind"] == "risk" and first["status"] == "open"
    assert first["rules"] == ["large_amount"] and first["actions"] == ["approve", "decline"]
    assert first["evidence"]["features"]["amount"] == "700.00"
    assert isinstance(first["age_s"], int) and first["created_at"].endswith("Z")

    r = http.post(
        "/payments/review/v1/risk:rev-0",
        json={"decision": "approve", "note": "known customer", "reviewer": "ana"},
    )
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["reviewer"]) == ("approved", "ana")
    again = http.post("/payments/review/v1/risk:rev-0", json={"decision": "decline", "note": "x"})
    assert again.status_code == 409 and again.json()["error"] == "review_already_decided"
    assert (
        http.post("/payments/review/v1/risk:rev-1", json={"decision": "maybe"}).status_code == 400
    )
    assert (
        http.post("/payments/review/v1/risk:nope", json={"decision": "approve"}).status_code == 404
    )
    r = http.post(
        "/payments/review/v1/risk:rev-1", json={"decision": "decline", "note": "stolen card"}
    )
    assert r.status_code == 200 and r.json()["status"] == "declined"

    code, body, err = world.cli_json(
        "review", "approve", "risk:rev-2", "--note", "ok", "--reviewer", "bo"
    )
    assert code == 0 and body["status"] == "approved" and body["decided_by_this_request"], err
    code, body, err = world.cli_json("review", "decline", "risk:rev-3", "--note", "fraud ring")
    assert code == 0 and body["status"] == "declined", err
    code, body, _ = world.cli_json("review", "approve", "risk:rev-3")
    assert code == 1 and body["status"] == "declined" and not body["decided_by_this_request"]
    code, listed, _ = world.cli_json("review", "list", "--kind", "risk", "--status", "all")
    assert {i["id"]: i["status"] for i in listed if i["id"].startswith("risk:rev-")} == {
        "risk:rev-0": "approved", "risk:rev-1": "declined", "risk:rev-2": "approved",
        "risk:rev-3": "declined",
    }  # fmt: skip
    # Each decision reached its payment once: approved ones go on, declined ones end.
    for i, want in ((0, "succeeded"), (2, "succeeded")):
        assert world.wait_status(f"rev-{i}", (want,))["risk"]["review_decision"] == "approved"
    for i in (1, 3):
        p = world.wait_status(f"rev-{i}", ("rejected",))
        assert p["reason"] == "risk_declined" and p["risk"]["review_decision"] == "declined"
    world.wait()
    rows = _sql(
        world,
        "SELECT item_id, event, reviewer, note FROM review_events FINAL WHERE item_id LIKE 'risk:rev-%' ORDER BY item_id, event_id",
    )
    events = [(r["item_id"], r["event"]) for r in rows]
    assert events.count(("risk:rev-0", "opened")) == 1 and ("risk:rev-0", "approved") in events
    assert ("risk:rev-0", "refused") in events  # the late decline: who tried, when, why
    assert ("risk:rev-1", "declined", "stolen card") in [
        (r["item_id"], r["event"], r["note"]) for r in rows
    ]


def _sql(world: RiskWorld, query: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while True:
        r = world.cli("sql", "--format", "json", query)
        rows: list[dict[str, Any]] = json.loads(r.stdout) if r.returncode == 0 else []
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(1)
