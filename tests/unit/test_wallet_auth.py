"""The wallet's sessions (JWT with rotating keys), passwords (argon2id, the common list) and
lock-out, without a server."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import jwt
import pytest

from paystream.api.wallet import keys, passwords
from paystream.api.wallet.lockout import Lockout
from paystream.api.wallet.sessions import Sessions, cookie_secure, set_cookie_header


def _sessions(home: Path, revoked: set[str] | None = None, ttl_s: int = 60) -> Sessions:
    gone = revoked if revoked is not None else set()
    return Sessions(keys.KeyRing(home), ttl_s, gone.__contains__, lambda u: u != "deleted")


def test_keys_are_private_and_rotate(tmp_path: Path) -> None:
    s = _sessions(tmp_path)
    old = s.issue("u_1")
    folder = keys.keys_dir(tmp_path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in folder.iterdir())
    first = max(keys.load_keys(tmp_path))
    time.sleep(1.1)  # key ids carry the second they were made
    new_kid = keys.rotate(tmp_path)
    os.utime(folder)  # some filesystems keep the mtime's second: the ring reloads anyway
    new = s.issue("u_1")
    assert jwt.get_unverified_header(new.token)["kid"] == new_kid != first
    assert s.verify(old.token) is not None and s.verify(new.token) is not None
    assert keys.prune(tmp_path, older_than_s=0, now_s=time.time() + 1) == [first]
    assert s.verify(old.token) is None and s.verify(new.token) is not None


def test_tokens_refused(tmp_path: Path) -> None:
    revoked: set[str] = set()
    s = _sessions(tmp_path, revoked)
    issued = s.issue("u_1")
    claims = s.verify(issued.token)
    assert claims is not None and claims.user_id == "u_1" and claims.csrf == issued.csrf_token
    kid = jwt.get_unverified_header(issued.token)["kid"]
    body = jwt.decode(issued.token, options={"verify_signature": False})

    def b64(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    secret = keys.load_keys(tmp_path)[kid]
    refused = {
        "expired": s.issue("u_1", now_s=time.time() - 120).token,
        "re-signed": jwt.encode(
            body, b"another key entirely, 32 bytes!!", "HS256", headers={"kid": kid}
        ),
        "alg none": f"{b64({'alg': 'none', 'kid': kid})}.{b64(body)}.",
        "HS512": jwt.encode(body, secret, "HS512", headers={"kid": kid}),
        "unknown kid": jwt.encode(
            body, secret, "HS256", headers={"kid": "k20000101000000-00000000"}
        ),
        "no kid": jwt.encode(body, secret, "HS256"),
        "no jti": jwt.encode(
            {k: v for k, v in body.items() if k != "jti"}, secret, "HS256", headers={"kid": kid}
        ),
        "other audience": jwt.encode(
            {**body, "aud": "else"}, secret, "HS256", headers={"kid": kid}
        ),
        "no such user": s.issue("deleted").token,
        "garbage": "a.b.c",
    }
    for why, token in refused.items():
        assert s.verify(token) is None, why
    revoked.add(issued.jti)
    assert s.verify(issued.token) is None


def test_cookie_attributes() -> None:
    assert cookie_secure(None, "http", "127.0.0.1") is False
    assert cookie_secure(None, "http", "10.0.0.5") is True
    assert cookie_secure(None, "https", "127.0.0.1") is True
    assert cookie_secure(False, "https", "10.0.0.5") is False
    header = set_cookie_header("t", 60, True)
    assert header == "paystream_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"


@pytest.mark.parametrize(
    ("password", "weak"),
    [
        ("short", True),
        ("password1234", True),
        ("Password2024!!", True),
        ("iloveyou1234", True),
        ("aaaaaaaaaaaaaaa", True),
        ("correct horse battery staple", False),
        ("Tr0ub4dor&3-and-more", False),
    ],
)
def test_password_rules(password: str, weak: bool) -> None:
    assert (passwords.weakness(password, 12, 1024) is not None) is weak


def test_argon2id_with_documented_parameters() -> None:
    h = passwords.hash_password("correct horse battery staple")
    assert h.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert passwords.verify(h, "correct horse battery staple")
    assert not passwords.verify(h, "correct horse battery stapler")
    assert not passwords.verify(None, "correct horse battery staple")  # no user: same work, no


def test_lockout_per_key_with_retry_after() -> None:
    lock = Lockout(failures_max=5, window_s=900, keys_max=3)
    for i in range(5):
        assert lock.retry_after_s(["user:a", "addr:1"], 100.0 + i) is None
        lock.failed(["user:a", "addr:1"], 100.0 + i)
    assert lock.retry_after_s(["user:a", "addr:2"], 110.0) == 890  # the username is locked
    assert lock.retry_after_s(["user:b", "addr:1"], 110.0) == 890  # and the address
    assert lock.retry_after_s(["user:b", "addr:2"], 110.0) is None
    assert lock.retry_after_s(["user:a"], 1000.0) is None  # the window moved on
    lock.succeeded("user:a")
    for k in ("x", "y", "z", "w"):
        lock.failed([k], 1.0)
    assert len(lock) <= 3  # bounded
