"""The session tokens' signing keys: ``$PAYSTREAM_HOME/session-keys/<kid>.key``, mode 0600.

Each key is 256 random bits (HS256). Its id (``kid``, in every token's header) is
``k<UTC yyyymmddHHMMSS>-<8 hex>``, so ids sort by age: the newest key signs, every key still
in the directory verifies. Rotating is adding a newer key (``paystream session-keys
--rotate``); every API process takes it up at its next request (the directory's mtime
changes). Tokens signed by an older key stay valid until they expire, or until that key is
removed (``--prune`` removes every key but the newest that is older than the tokens' lifetime).
"""

from __future__ import annotations

import base64
import calendar
import itertools
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

KEYS_DIR = "session-keys"
SUFFIX = ".key"
KID = re.compile(r"k[0-9]{14}-[0-9a-f]{8}\Z")
KEY_BYTES = 32


def keys_dir(home: Path) -> Path:
    return home / KEYS_DIR


def new_kid(now_s: float | None = None) -> str:
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() if now_s is None else now_s))
    return f"k{stamp}-{secrets.token_hex(4)}"


def _write_key(folder: Path, kid: str) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / f"{kid}{SUFFIX}"
    tmp = folder / f".{kid}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)  # atomic; never replaces a key someone already uses
    finally:
        os.unlink(tmp)


def load_keys(home: Path) -> dict[str, bytes]:
    """Every key in the directory, by kid (files of another shape are ignored)."""
    folder = keys_dir(home)
    out: dict[str, bytes] = {}
    if not folder.is_dir():
        return out
    for path in folder.iterdir():
        kid = path.name.removesuffix(SUFFIX)
        if path.name.endswith(SUFFIX) and KID.match(kid):
            raw = path.read_bytes().strip()
            if raw:
                out[kid] = base64.urlsafe_b64decode(raw)
    return out


def ensure_key(home: Path) -> str:
    """The newest key's id, after making a first key if there is none (``paystream up``, or
    the first API process to need one). Concurrent callers may each make one: harmless."""
    keys = load_keys(home)
    if not keys:
        _write_key(keys_dir(home), new_kid())
        keys = load_keys(home)
    return max(keys)


def rotate(home: Path) -> str:
    """A new key, which signs from now on (ids sort by time: it is the newest)."""
    kid = new_kid()
    current = load_keys(home)
    if current and kid <= max(current):
        raise RuntimeError(f"a key newer than {kid} exists already ({max(current)})")
    _write_key(keys_dir(home), kid)
    return kid


def prune(home: Path, older_than_s: float, now_s: float | None = None) -> list[str]:
    """Remove every key but the newest whose id is older than ``older_than_s``: tokens it
    signed have all expired once that much time has passed since a newer key took over."""
    now = time.time() if now_s is None else now_s
    kids = sorted(load_keys(home))
    removed = []
    for older, newer in itertools.pairwise(kids):
        took_over = calendar.timegm(time.strptime(newer[1:15], "%Y%m%d%H%M%S"))
        if now - took_over > older_than_s:
            (keys_dir(home) / f"{older}{SUFFIX}").unlink(missing_ok=True)
            removed.append(older)
    return removed


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: bytes


class KeyRing:
    """The keys of one home, reloaded when the directory changes (a stat per use)."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._mtime_ns = -1
        self._keys: dict[str, bytes] = {}

    def _fresh(self) -> dict[str, bytes]:
        try:
            mtime = keys_dir(self.home).stat().st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        with self._lock:
            if mtime != self._mtime_ns or not self._keys:
                if mtime == -1 or not load_keys(self.home):
                    ensure_key(self.home)
                    mtime = keys_dir(self.home).stat().st_mtime_ns
                self._keys = load_keys(self.home)
                self._mtime_ns = mtime
            return self._keys

    def signing(self) -> SigningKey:
        keys = self._fresh()
        kid = max(keys)
        return SigningKey(kid, keys[kid])

    def get(self, kid: str) -> bytes | None:
        return self._fresh().get(kid)
