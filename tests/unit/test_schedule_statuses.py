"""Property: a schedule's state machine. Hypothesis drives random sequences of everything that
can reach the core (creates, PUTs, pauses, resumes, deletes, backfills, the clock, the
payment API's answers, payments settling) and checks after each step:

* every status change is one of ``statuses.TRANSITIONS``; ``deleted`` is final;
* nothing is submitted unless the schedule is active (a backfill: unless deleted), nothing
  before its due time, nothing the pause passed over, each occurrence of the series once
  and in order;
* N failures in a row never leave a schedule active; the history stays bounded;
* the state survives its Avro record (the store) unchanged.
"""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from streams.scheduler import wire
from streams.schedules import decide, evolve_all, rules
from streams.schedules import model as sm
from streams.schedules.statuses import TRANSITIONS

US = sm.US
T0 = 1_790_000_000 * US
POLICY = sm.Policy(catchup_window_us=3600 * US, failures_to_pause=3, jitter_max_us=30 * US)
RULES = (
    "FREQ=MINUTELY",
    "FREQ=MINUTELY;INTERVAL=7",
    "FREQ=HOURLY;BYMINUTE=0,30",
    "FREQ=MINUTELY;COUNT=9",
)


class ScheduleMachine(RuleBasedStateMachine):
    @initialize(rule_text=st.sampled_from(RULES), start_s=st.integers(-7200, 600))
    def create(self, rule_text: str, start_s: int) -> None:
        self.now = T0
        self.commands = 0
        self.state: sm.ScheduleState | None = None
        self.inflight: dict[bool, tuple[int, int]] = {}  # backfill? -> (at, due)
        self.submitted: list[int] = []  # regular occurrences submitted, in order
        self.statuses = [sm.ScheduleStatus.active]
        start = datetime.fromtimestamp((T0 + start_s * US) / US, UTC)
        d = sm.Definition(
            "u", sm.PaymentType.pay_in, "card", "acct", "1.00", "USD", sm.PaymentOption.card,
            rule_text, rules.local_of(start), "UTC",
        )  # fmt: skip
        self._apply(sm.Create("s1", d, "service", "k", "dig", "c0", self.now))
        assert self.state is not None

    def _cid(self) -> str:
        self.commands += 1
        return f"c{self.commands}"

    def _apply(self, m: sm.Message) -> list[sm.Event]:
        before = self.state
        events = decide(before, m, POLICY)
        self.state = evolve_all(before, events)
        for e in events:
            if isinstance(e, sm.StatusChanged):
                assert e.status in TRANSITIONS[self.statuses[-1]] or e.status is self.statuses[-1]
                self.statuses.append(e.status)
            if isinstance(e, sm.SubmitRequested):
                s = self.state
                assert s is not None
                if e.backfill:
                    assert s.status is not sm.ScheduleStatus.deleted
                else:
                    assert s.status is sm.ScheduleStatus.active
                    assert e.due_at <= self.now and e.at >= s.not_before
                    assert not self.submitted or e.at > self.submitted[-1]
                    self.submitted.append(e.at)
                assert e.backfill not in self.inflight
                self.inflight[e.backfill] = (e.at, e.due_at)
        return events

    @rule(seconds=st.integers(1, 400))
    def tick(self, seconds: int) -> None:
        self.now += seconds * US
        if False not in self.inflight:
            for _ in range(8):
                events = self._apply(sm.Due("s1", self.now))
                if not events or any(isinstance(e, sm.SubmitRequested) for e in events):
                    break
        if True not in self.inflight:
            self._apply(sm.BackfillDue("s1", self.now))

    @precondition(lambda self: bool(self.inflight))
    @rule(ok=st.booleans(), backfill=st.booleans())
    def answer(self, ok: bool, backfill: bool) -> None:
        if backfill not in self.inflight:
            backfill = not backfill
        at, due = self.inflight.pop(backfill)
        self._apply(sm.Submitted("s1", at, ok, self.now, due, backfill, None if ok else "x"))

    @precondition(lambda self: bool(self.submitted))
    @rule(status=st.sampled_from(["succeeded", "failed", "rejected"]), back=st.integers(0, 3))
    def settle(self, status: str, back: int) -> None:
        at = self.submitted[-1 - min(back, len(self.submitted) - 1)]
        self._apply(sm.Settled("s1", at, sm.OccurrenceStatus(status), None, self.now))

    @rule(status=st.sampled_from([sm.ScheduleStatus.paused, sm.ScheduleStatus.active]))
    def set_status(self, status: sm.ScheduleStatus) -> None:
        self._apply(sm.Update("s1", self._cid(), self.now, status=status))

    @rule(amount=st.sampled_from(["2.00", "3.50"]))
    def change_amount(self, amount: str) -> None:
        self._apply(sm.Update("s1", self._cid(), self.now, amount=amount))

    @rule(rule_text=st.sampled_from(RULES))
    def change_rule(self, rule_text: str) -> None:
        self._apply(sm.Update("s1", self._cid(), self.now, rrule=rule_text))

    @rule(end_s=st.one_of(st.none(), st.integers(-600, 3600)))
    def change_end(self, end_s: int | None) -> None:
        if end_s is None:
            self._apply(sm.Update("s1", self._cid(), self.now, clear_end=True))
        else:
            self._apply(sm.Update("s1", self._cid(), self.now, end_at=self.now + end_s * US))

    @rule(back_s=st.integers(0, 7200), span_s=st.integers(0, 3600))
    def backfill(self, back_s: int, span_s: int) -> None:
        to = self.now - back_s * US
        self._apply(sm.RequestBackfill("s1", self._cid(), self.now, to - span_s * US, to))

    @rule()
    def delete(self) -> None:
        self._apply(sm.Delete("s1", self._cid(), self.now))

    @invariant()
    def holds(self) -> None:
        s = self.state
        assert s is not None
        if sm.ScheduleStatus.deleted in self.statuses:
            assert s.status is sm.ScheduleStatus.deleted
        if s.status is sm.ScheduleStatus.active:
            assert s.failures_in_row < POLICY.failures_to_pause
        assert len(s.recent) <= sm.RECENT_OCCURRENCES_MAX
        assert [o.at for o in s.recent] == sorted(o.at for o in s.recent)
        assert wire.decode_state(wire.encode_state(s)) == s


ScheduleMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40)
TestScheduleStateMachine = ScheduleMachine.TestCase
