"""evolve(state, event) -> state: how each event changes the state at its key. Pure."""

from __future__ import annotations

from streams.ledger.errors import InvariantViolation

from .model import (
    Event,
    NameReleased,
    NameReserved,
    NameTaken,
    SessionRevoked,
    SignUpWasRefused,
    State,
    TransferCreated,
    TransferKeyReserved,
    UserCreated,
)


def evolve(state: State | None, event: Event) -> State | None:
    match event:
        case NameReserved():
            return event.hold
        case NameReleased():
            return event.hold
        case NameTaken():
            return state  # the holder keeps it; the steps go elsewhere
        case UserCreated():
            return event.user
        case SignUpWasRefused():
            return event.refused
        case SessionRevoked():
            return event.revoked
        case TransferKeyReserved():
            return event.key_state
        case TransferCreated():
            return event.transfer
    raise InvariantViolation(f"no evolve rule for {type(event).__name__}")


def evolve_all(state: State | None, events: list[Event]) -> State | None:
    for event in events:
        state = evolve(state, event)
    return state
