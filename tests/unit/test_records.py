"""A worker takes a transfer's next step either from the saga topic (through its record) or
directly (``transfer_step``, when it owns the step's partition). Both must be the same step."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.ledger import decide
from streams.ledger import model as m
from streams.ledger.money import AMOUNT_MINOR_MAX, CURRENCY_EXPONENTS
from streams.ledger.rejections import Rejection
from streams.records import to_records, to_saga_step, transfer_step

ids = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(
    lambda s: not s.startswith("@")
)


@st.composite
def transfers(draw: st.DrawFn) -> m.TransferInfo:
    command_id = draw(ids)
    return m.TransferInfo(
        transfer_id=command_id,  # a transfer is named by its CreateTransfer (see decide)
        command_id=command_id,
        from_account=draw(ids),
        to_account=draw(ids),
        currency=draw(st.sampled_from(sorted(CURRENCY_EXPONENTS))),
        amount=draw(st.integers(1, AMOUNT_MINOR_MAX)),
        ts=draw(st.integers(0, (1 << 63) - 1)),
        digest=draw(st.text("0123456789abcdef", min_size=16, max_size=16)),
    )


events = st.one_of(
    st.builds(m.TransferHeld, transfers()),
    st.builds(m.TransferPosted, transfers()),
    st.builds(m.TransferTurnedBack, transfers(), st.sampled_from(list(Rejection))),
)


@given(events)
def test_the_direct_step_is_the_step_its_record_carries(event: m.Event) -> None:
    step = transfer_step(event)
    assert step is not None
    with_step = list(to_records(event))
    without = list(to_records(event, transfer_steps=False))
    sagas = [o for o in with_step if o.topic == "saga"]
    assert len(sagas) == 1
    assert to_saga_step(sagas[0].record) == step
    assert sagas[0].key == step.key
    assert without == [o for o in with_step if o.topic != "saga"]


def test_events_without_a_transfer_step_keep_all_their_records() -> None:
    event = m.TransferSettled(
        m.TransferInfo("t1", "t1", "a1", "a2", "USD", 100, 0, "0123456789abcdef")
    )
    assert transfer_step(event) is None
    assert list(to_records(event)) == list(to_records(event, transfer_steps=False))


def test_decide_names_a_transfer_by_its_command_id() -> None:
    # The round trip through the saga record relies on it (the record has no transfer_id).
    state = m.AccountState("a1", m.Status.open, "u1", "USD", balance=1_000)
    cmd = m.CreateTransfer("t-7", "a1", "a2", "1.00", 5, "0123456789abcdef")
    held = [e for e in decide(state, cmd) if isinstance(e, m.TransferHeld)]
    assert len(held) == 1
    assert held[0].transfer.transfer_id == held[0].transfer.command_id == "t-7"
