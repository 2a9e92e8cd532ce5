"""The users' vocabulary (docs/wallet.md): messages in, state, events out.

Pure data: no I/O, no clocks, no hashing. The API hashes passwords and picks ids; every
message brings its log time (``ts``, microseconds), so deciding the same input twice gives
the same events. Every state lives at one key of ``paystream.users.v1``:

* ``@username/<name>`` and ``@email/<address>``: who holds a name (the first sign-up in the
  log), or nobody once a sign-up that held it was refused;
* ``<user_id>``: the user (or why the sign-up with that id was refused);
* ``@revoked/<jti>``: a revoked session token, until it expires;
* ``@idem/<scope>/<key>`` and ``<transfer_id>``: a wallet transfer's idempotency key and the
  transfer it created (the ledger moves the money).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

USERNAME_KEY = "@username/"
EMAIL_KEY = "@email/"
REVOKED_KEY = "@revoked/"
IDEM_KEY = "@idem/"
USER_ID_PREFIX = "u_"
TRANSFER_ID_PREFIX = "wt_"
ACCOUNT_PREFIX = "wallet-"


def username_key(username: str) -> str:
    return USERNAME_KEY + username


def email_key(email: str) -> str:
    return EMAIL_KEY + email


def revoked_key(jti: str) -> str:
    return REVOKED_KEY + jti


def idem_key(scope: str, key: str) -> str:
    return f"{IDEM_KEY}{scope}/{key}"


def account_of(user_id: str) -> str:
    """A wallet user's one ledger account."""
    return ACCOUNT_PREFIX + user_id


class NameKind(StrEnum):
    username = "username"
    email = "email"


class Refusal(StrEnum):
    """Why a sign-up was refused (the API answers 409 with it)."""

    username_taken = "username_taken"
    email_taken = "email_taken"


class Stage(StrEnum):
    """Where a sign-up stands in its saga: each stage is decided at its own key."""

    reserve_username = "reserve_username"  # at @username/<name> (from the API)
    reserve_email = "reserve_email"  # at @email/<address>
    create_user = "create_user"  # at <user_id>
    release_username = "release_username"  # at @username/<name>, when the email was taken
    refuse = "refuse"  # at <user_id>, with the reason


# --- Messages ---


@dataclass(frozen=True, slots=True)
class SignUp:
    """What the API asks for; the password arrives hashed (argon2id), never in clear."""

    user_id: str
    username: str  # canonical: lower case
    email: str  # canonical: lower case
    password_hash: str
    currency: str
    ts: int


@dataclass(frozen=True, slots=True)
class SignUpStep:
    """One step of a sign-up's saga (``stage``); the first comes from the API."""

    stage: Stage
    signup: SignUp
    reason: Refusal | None = None  # for Stage.refuse

    @property
    def key(self) -> str:
        s = self.signup
        match self.stage:
            case Stage.reserve_username | Stage.release_username:
                return username_key(s.username)
            case Stage.reserve_email:
                return email_key(s.email)
            case _:
                return s.user_id


@dataclass(frozen=True, slots=True)
class RevokeSession:
    """Log-out: the token with this id is refused until it expires."""

    jti: str
    user_id: str
    expires_at: int  # µs since the epoch (the token's ``exp``)
    ts: int

    @property
    def key(self) -> str:
        return revoked_key(self.jti)


@dataclass(frozen=True, slots=True)
class TransferOrder:
    """A wallet transfer as the API resolved it (usernames to users and accounts)."""

    transfer_id: str
    from_user: str
    to_user: str
    from_account: str
    to_account: str
    amount: str  # a decimal string; the ledger judges it


@dataclass(frozen=True, slots=True)
class ReserveTransferKey:
    """Stage 1 of a transfer, at ``@idem/<scope>/<key>``: the first request in the log wins."""

    scope: str
    idempotency_key: str
    digest: str
    order: TransferOrder
    ts: int

    @property
    def key(self) -> str:
        return idem_key(self.scope, self.idempotency_key)


@dataclass(frozen=True, slots=True)
class CreateTransfer:
    """Stage 2, at the transfer id: the transfer is recorded and the ledger asked to move it."""

    scope: str
    idempotency_key: str
    digest: str
    order: TransferOrder
    ts: int

    @property
    def key(self) -> str:
        return self.order.transfer_id


Message = SignUpStep | RevokeSession | ReserveTransferKey | CreateTransfer

# --- State ---


@dataclass(frozen=True, slots=True)
class NameHold:
    """A username or an email address: held by the first sign-up in the log that asked."""

    kind: NameKind
    name: str
    user_id: str | None  # None: released (its sign-up was refused for the other name)
    ts: int


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str
    email: str
    password_hash: str  # argon2id, PHC string; never logged, never in the warehouse
    account: str
    currency: str
    created_at: int

    def __repr__(self) -> str:  # no hash in any log line or traceback
        return f"User({self.user_id!r}, {self.username!r}, account={self.account!r})"


@dataclass(frozen=True, slots=True)
class SignUpRefused:
    user_id: str
    reason: Refusal
    ts: int


@dataclass(frozen=True, slots=True)
class Revoked:
    jti: str
    user_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class TransferKey:
    scope: str
    idempotency_key: str
    digest: str
    transfer_id: str
    ts: int


@dataclass(frozen=True, slots=True)
class WalletTransfer:
    order: TransferOrder
    scope: str
    idempotency_key: str
    digest: str
    created_at: int


State = NameHold | User | SignUpRefused | Revoked | TransferKey | WalletTransfer

# --- Events ---


@dataclass(frozen=True, slots=True)
class NameReserved:
    hold: NameHold
    step: SignUpStep  # the next step (reserve the email, or create the user)


@dataclass(frozen=True, slots=True)
class NameTaken:
    """The name is someone else's: the sign-up is refused (and its username released)."""

    steps: tuple[SignUpStep, ...]


@dataclass(frozen=True, slots=True)
class NameReleased:
    hold: NameHold


@dataclass(frozen=True, slots=True)
class UserCreated:
    user: User


@dataclass(frozen=True, slots=True)
class SignUpWasRefused:
    refused: SignUpRefused


@dataclass(frozen=True, slots=True)
class SessionRevoked:
    revoked: Revoked


@dataclass(frozen=True, slots=True)
class TransferKeyReserved:
    key_state: TransferKey
    order: TransferOrder


@dataclass(frozen=True, slots=True)
class TransferCreated:
    transfer: WalletTransfer


Event = (
    NameReserved
    | NameTaken
    | NameReleased
    | UserCreated
    | SignUpWasRefused
    | SessionRevoked
    | TransferKeyReserved
    | TransferCreated
)
