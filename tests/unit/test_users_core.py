"""The users core: the sign-up saga (first in the log wins a name; a refused sign-up gives its
username back), revocations, wallet transfers; the agent's records and state codec."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.users import decide, evolve_all
from streams.users import model as um
from streams.users_agent import UsersAgent, decode_state, encode_state, to_message, to_records

AGENT = UsersAgent()


def _signup(user_id: str, username: str = "alice", email: str = "a@example.com") -> um.SignUpStep:
    s = um.SignUp(user_id, username, email, "$argon2id$h", "USD", 10)
    return um.SignUpStep(um.Stage.reserve_username, s)


def run(
    messages: list[um.Message], states: dict[str, um.State] | None = None
) -> dict[str, um.State]:
    """Every message and every step it leads to, in log order per key (a worker owning all)."""
    states = {} if states is None else states
    work: list[Any] = list(messages)
    codec = Codec.default()
    while work:
        msg = work.pop(0)
        state = states.get(msg.key)
        events = decide(state, msg)
        new = evolve_all(state, events)
        if new is not None:
            states[msg.key] = new
        for e in events:
            for out in to_records(e):
                if out.topic == "user_requests":  # a step: through Avro, as the processor does
                    _, record = codec.decode(codec.encode(out.schema, out.record))
                    work.append(AGENT.decode_step(record))
    return states


def test_a_sign_up_holds_its_names_and_creates_the_user() -> None:
    states = run([_signup("u_1")])
    user = states["u_1"]
    assert isinstance(user, um.User) and user.account == "wallet-u_1"
    assert states["@username/alice"] == um.NameHold(um.NameKind.username, "alice", "u_1", 10)
    assert states["@email/a@example.com"] == um.NameHold(
        um.NameKind.email, "a@example.com", "u_1", 10
    )
    assert "$argon2id" not in repr(user)  # never in a log line


def test_the_first_in_the_log_wins_a_username_and_a_taken_email_gives_the_username_back() -> None:
    states = run([_signup("u_1"), _signup("u_2", email="b@example.com")])
    assert states["u_2"] == um.SignUpRefused("u_2", um.Refusal.username_taken, 10)
    states = run([_signup("u_3", username="carol", email="a@example.com")], states)
    assert states["u_3"] == um.SignUpRefused("u_3", um.Refusal.email_taken, 10)
    assert states["@username/carol"].user_id is None  # type: ignore[union-attr]
    states = run([_signup("u_4", username="carol", email="c@example.com")], states)
    assert isinstance(states["u_4"], um.User)  # the released name is free again


@given(st.permutations(["u_1", "u_2", "u_3"]), st.booleans())
def test_whatever_the_order_one_user_per_name(order: list[str], redo: bool) -> None:
    messages: list[um.Message] = [_signup(u, "same", f"{u}@example.com") for u in order]
    if redo:
        messages += messages  # redelivered: changes nothing
    states = run(messages)
    users = [s for s in states.values() if isinstance(s, um.User)]
    assert [u.user_id for u in users] == [order[0]]


def test_revocations_and_transfers_are_decided_once() -> None:
    revoke = um.RevokeSession("jti-1", "u_1", 99, 5)
    states = run([revoke, revoke])
    assert states["@revoked/jti-1"] == um.Revoked("jti-1", "u_1", 99)
    order = um.TransferOrder("wt_1", "u_1", "u_2", "wallet-u_1", "wallet-u_2", "5.00")
    first = um.ReserveTransferKey("user:u_1", "k", "sha256:a", order, 7)
    other = um.ReserveTransferKey("user:u_1", "k", "sha256:b", order, 8)
    states = run([first, other, first], states)
    assert states["@idem/user:u_1/k"] == um.TransferKey("user:u_1", "k", "sha256:a", "wt_1", 7)
    assert isinstance(states["wt_1"], um.WalletTransfer)
    created = decide(None, um.CreateTransfer("user:u_1", "k", "sha256:a", order, 7))
    (command,) = list(to_records(created[0]))
    assert (command.topic, command.schema, command.key) == ("commands", "Transfer", "wallet-u_1")
    assert command.record == {
        "command_id": "wt_1",
        "from": "wallet-u_1",
        "to": "wallet-u_2",
        "amount": "5.00",
    }


def test_user_created_opens_the_ledger_account() -> None:
    (event,) = decide(None, um.SignUpStep(um.Stage.create_user, _signup("u_9").signup))
    (out,) = list(to_records(event))
    assert (out.topic, out.schema, out.key) == ("commands", "OpenAccount", "wallet-u_9")
    assert out.record == {
        "command_id": "u_9/open",
        "account": "wallet-u_9",
        "user": "u_9",
        "currency": "USD",
    }


def test_every_state_survives_the_changelog() -> None:
    order = um.TransferOrder("wt_1", "u_1", "u_2", "wallet-u_1", "wallet-u_2", "5.00")
    for state in (
        um.NameHold(um.NameKind.email, "a@example.com", None, 3),
        um.User("u_1", "alice", "a@example.com", "$argon2id$h", "wallet-u_1", "USD", 4),
        um.SignUpRefused("u_2", um.Refusal.email_taken, 5),
        um.Revoked("j", "u_1", 6),
        um.TransferKey("user:u_1", "k", "sha256:a", "wt_1", 7),
        um.WalletTransfer(order, "user:u_1", "k", "sha256:a", 8),
    ):
        assert decode_state(encode_state(state)) == state


def test_a_request_from_the_api_takes_its_time_from_the_log() -> None:
    codec = Codec.default()
    from streams.users_agent import signup_record

    step = _signup("u_1")
    record = {**signup_record(step), "ts": 0}
    _, decoded = codec.decode(codec.encode("UserRequest", record))
    msg = to_message(decoded, 1234)
    assert isinstance(msg, um.SignUpStep) and msg.signup.ts == 1234 and msg.key == "@username/alice"
