"""Passwords: the rules a new one must meet, and argon2id (argon2-cffi) to hash and check.

Parameters (argon2-cffi's defaults, RFC 9106's second recommended option): argon2id,
time cost 3, memory 64 MiB, parallelism 4, 16-byte random salt, 32-byte hash, in the PHC
string format (``$argon2id$v=19$m=65536,t=3,p=4$<salt>$<hash>``), about 50 ms of CPU per
hash here. The hash is made by the API process that signs the user up, travels to the users
workers in the sign-up request, lives in ``paystream.users.v1`` and is read back only by the
API processes that check log-ins: never in an answer, a log line, ``--json`` output or the
warehouse.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

TIME_COST = 3
MEMORY_COST_KIB = 65_536
PARALLELISM = 4
HASH_BYTES = 32
SALT_BYTES = 16

COMMON_FILE = Path(__file__).with_name("common_passwords.txt")
# Trimmed from both ends before the list is asked again: "password2024!" is "password".
_DECORATION = re.compile(r"^[\d\W_]+|[\d\W_]+$")


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher(
        time_cost=TIME_COST,
        memory_cost=MEMORY_COST_KIB,
        parallelism=PARALLELISM,
        hash_len=HASH_BYTES,
        salt_len=SALT_BYTES,
        type=Type.ID,
    )


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line and not line.startswith("#"))


def weakness(password: str, chars_min: int, chars_max: int) -> str | None:
    """Why ``password`` may not be used (the API's 400 message), or None."""
    if len(password) < chars_min:
        return f"password must be at least {chars_min} characters"
    if len(password) > chars_max:
        return f"password must be at most {chars_max} characters"
    common = common_passwords()
    lowered = password.lower()
    core = _DECORATION.sub("", lowered)
    if lowered in common or core in common or len(set(lowered)) <= 2:
        return "password is too common; choose another"
    return None


def hash_password(password: str) -> str:
    return hasher().hash(password)


@cache
def dummy_hash() -> str:
    """A hash to check a wrong username against, so that it costs what a wrong password does."""
    return hasher().hash("no user has this password: it only spends the same time")


def verify(password_hash: str | None, password: str) -> bool:
    """Does ``password`` match? With no hash (no such user) the same work is done anyway."""
    try:
        return hasher().verify(password_hash or dummy_hash(), password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
