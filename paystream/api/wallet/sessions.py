"""Session tokens: JWTs (PyJWT, HS256) whose ``sub`` is the user id, with ``exp``, ``iat``, a
token id (``jti``, what a log-out revokes), a CSRF token (``csrf``), and the signing key's id
in the header (``kid``: keys rotate, see ``keys.py``).

A token is accepted when its header names a key this home holds, its algorithm is HS256 (so
``alg=none`` and every other algorithm are refused), its signature is that key's, it carries
every claim, it has not expired, its issuer and audience are ours, its id is not revoked
(``paystream.users.v1``: on every API process) and its user exists.
"""

from __future__ import annotations

import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import jwt

from .keys import KeyRing

ALGORITHM = "HS256"
ISSUER = "paystream"
AUDIENCE = "paystream-wallet"
COOKIE = "paystream_session"
CSRF_HEADER = "X-CSRF-Token"
_REQUIRED = ["exp", "iat", "sub", "jti", "csrf", "iss", "aud"]


@dataclass(frozen=True, slots=True)
class Issued:
    token: str
    csrf_token: str
    expires_at: int  # seconds since the epoch
    jti: str


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: str
    jti: str
    csrf: str
    expires_at: int  # seconds since the epoch


class Sessions:
    """Issues and verifies tokens. ``revoked(jti)`` and ``user_exists(user_id)`` ask the
    users view; both are called for every verified token."""

    def __init__(
        self,
        ring: KeyRing,
        ttl_s: int,
        revoked: Callable[[str], bool],
        user_exists: Callable[[str], bool],
    ) -> None:
        self.ring = ring
        self.ttl_s = ttl_s
        self.revoked = revoked
        self.user_exists = user_exists

    def issue(self, user_id: str, now_s: float | None = None) -> Issued:
        now = int(time.time() if now_s is None else now_s)
        key = self.ring.signing()
        jti = uuid.uuid4().hex
        csrf = secrets.token_urlsafe(32)
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "iat": now,
            "exp": now + self.ttl_s,
            "jti": jti,
            "csrf": csrf,
        }
        token = jwt.encode(claims, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})
        return Issued(token, csrf, now + self.ttl_s, jti)

    def verify(self, token: str) -> Claims | None:
        """The token's claims if it is accepted (see the module's docstring), else None."""
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
            secret = self.ring.get(kid) if isinstance(kid, str) else None
            if secret is None or header.get("alg") != ALGORITHM:
                return None
            claims: dict[str, Any] = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options={"require": _REQUIRED},
            )
        except (jwt.PyJWTError, ValueError, TypeError):
            return None
        sub, jti, csrf, exp = (claims.get(k) for k in ("sub", "jti", "csrf", "exp"))
        if not (isinstance(sub, str) and isinstance(jti, str) and isinstance(csrf, str)):
            return None
        if not isinstance(exp, int) or self.revoked(jti) or not self.user_exists(sub):
            return None
        return Claims(sub, jti, csrf, exp)


def csrf_ok(claims: Claims, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(
        header.encode("utf-8", "surrogateescape"), claims.csrf.encode()
    )


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def cookie_secure(forced: bool | None, scheme: str, server_host: str | None) -> bool:
    """``Secure`` unless the request came over plain HTTP to a loopback address (or the
    setting forces it one way)."""
    if forced is not None:
        return forced
    return scheme == "https" or not _loopback(server_host)


def set_cookie_header(token: str, max_age_s: int, secure: bool) -> str:
    parts = [f"{COOKIE}={token}", "Path=/", f"Max-Age={max_age_s}", "HttpOnly", "SameSite=Strict"]
    if secure:
        parts.append("Secure")
    return "; ".join(parts)


def clear_cookie_header(secure: bool) -> str:
    return set_cookie_header("", 0, secure)
