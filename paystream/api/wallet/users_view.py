"""The API's read model of ``paystream.users.v1``: users, names, revocations, transfers.

A ``ChangelogView`` (rocksdict under ``$PAYSTREAM_HOME/state/api-<port>-users/``), so every
API process sees every user and every revoked token, restart-safe, from the log alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from base.config import Settings
from base.topics import TopicNames
from paystream.api.changelog import ChangelogView
from streams.users import model as um
from streams.users_agent import decode_state, encode_state

T = TypeVar("T")


class UsersView(ChangelogView[um.State]):
    def __init__(
        self,
        settings: Settings,
        state_dir: Path,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        topic = TopicNames(settings.topic_prefix).users
        super().__init__(settings, state_dir, topic, encode_state, decode_state, on_failure)

    def _typed(self, key: str, kind: type[T]) -> T | None:
        state = self.get(key)
        return state if isinstance(state, kind) else None

    def user(self, user_id: str) -> um.User | None:
        return self._typed(user_id, um.User)

    def refused(self, user_id: str) -> um.SignUpRefused | None:
        return self._typed(user_id, um.SignUpRefused)

    def holder(self, kind: um.NameKind, name: str) -> str | None:
        """The user id holding a username or an email (a sign-up may still be on its way)."""
        key = um.username_key(name) if kind is um.NameKind.username else um.email_key(name)
        hold = self._typed(key, um.NameHold)
        return None if hold is None else hold.user_id

    def user_named(self, username: str) -> um.User | None:
        holder = self.holder(um.NameKind.username, username)
        return None if holder is None else self.user(holder)

    def revoked(self, jti: str) -> bool:
        return self.get(um.revoked_key(jti)) is not None

    def transfer_key(self, scope: str, key: str) -> um.TransferKey | None:
        return self._typed(um.idem_key(scope, key), um.TransferKey)

    def transfer(self, transfer_id: str) -> um.WalletTransfer | None:
        return self._typed(transfer_id, um.WalletTransfer)

    async def settled(
        self, keys: list[str], read: Callable[[], T | None], timeout_s: float
    ) -> T | None:
        """``read()`` once it answers (re-read whenever a record for one of ``keys``
        arrives), or None after ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            fut = self.watch(keys)
            try:
                found = read()  # only after watching: an arrival in between still wakes us
                if found is not None:
                    return found
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                try:
                    await asyncio.wait_for(fut, remaining)
                except TimeoutError:
                    return None
            finally:
                self.unwatch(keys, fut)
