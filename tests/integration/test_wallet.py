"""The wallet through the real stack (broker, ledger, users and payments workers, read side,
PSP simulator and executor, API processes): two users sign up, one is funded by a pay-in with
her own token, she pays the other, both accounts show it; wrong passwords, lock-out; expired,
revoked, re-signed and alg=none tokens; CSRF on cookie writes; nobody reaches another's money;
and after every process restarts on wiped local state, the users are the same, from the log."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import statistics
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from base.config import Settings, api_token
from base.kafka import scan
from base.topics import TopicNames
from paystream import wallet_demo
from paystream.api.middleware import SECURITY_HEADERS
from paystream.api.wallet.client import WalletClient
from paystream.api.wallet.keys import load_keys
from paystream.stack import Stack
from schemas.codec import Codec
from streams.partitioner import partition_for
from streams.users import model as um
from streams.users_agent import decode_state, signup_record
from tests.payments_stack import PaymentsStack
from tests.wallet_stack import PASSWORD, eventually, wallet_stack

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    st = wallet_stack(settings)
    try:
        st.up(timeout_s=120)
        yield st
    finally:
        st.stop()


def _url(stack: Stack) -> str:
    return f"http://127.0.0.1:{stack.settings.api_port}"


def _fold_users(settings: Settings) -> dict[str, um.State]:
    states: dict[str, um.State] = {}
    for msg in scan(settings, TopicNames(settings.topic_prefix).users):
        value = msg.value()
        if value is not None:
            states[(msg.key() or b"").decode()] = decode_state(value)
    return states


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id: str, exp: int) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": "paystream", "aud": "paystream-wallet", "sub": user_id, "iat": now - 10,
        "exp": exp, "jti": uuid.uuid4().hex, "csrf": "x",
    }  # fmt: skip


def _open(w: WalletClient) -> dict[str, Any]:
    return eventually(
        lambda: (a := w.account())["status"] == "open" and a, what="the account opened"
    )


def test_wallet_end_to_end(stack: Stack, settings: Settings) -> None:
    s = stack.resolved
    url = _url(stack)
    alice, bob, carol, anon = (WalletClient(url) for _ in range(4))
    try:
        # --- sign-up: two users (and a third), each with one account ---
        a = alice.sign_up("Alice@Example.com", "Alice", PASSWORD)
        b = bob.sign_up("bob@example.com", "bob", PASSWORD)
        c = carol.sign_up("carol@example.com", "carol", PASSWORD)
        assert a["username"] == "alice" and a["account"] == f"wallet-{a['user_id']}"
        for body, code, field in (
            ({"email": "x1@example.com", "username": "ALICE"}, "username_taken", "username"),
            ({"email": "alice@example.COM", "username": "alice2"}, "email_taken", "email"),
            ({"email": "x2@example.com", "username": "dora", "password": "short"}, "invalid_field", "password"),
            ({"email": "x3@example.com", "username": "dora", "password": "password1234!"}, "invalid_field", "password"),
            ({"email": "not-an-email", "username": "dora"}, "invalid_field", "email"),
        ):  # fmt: skip
            r = anon.http.post("/v1/user", json={"password": PASSWORD, **body})
            assert (r.status_code, r.json()["error"], r.json()["field"]) == (
                409 if code.endswith("taken") else 400,
                code,
                field,
            ), r.text

        # --- log-in, and a pay-in with alice's own token ---
        session = alice.log_in("alice", PASSWORD)
        assert set(session) == {"token", "csrf_token", "expires_at"}
        bob.log_in("BOB", PASSWORD)
        carol.log_in("carol", PASSWORD)
        _open(alice), _open(bob), _open(carol)
        paid = alice.pay_in(a["user_id"], a["account"], "100.00")
        assert alice.wait_payment(paid["payment_id"])["status"] == "succeeded"
        eventually(lambda: alice.account()["balance"] == "100.00", what="alice funded")

        # --- a transfer, idempotent by its key ---
        key = str(uuid.uuid4())
        t = alice.transfer("Bob", "30.00", key)
        assert t["status"] == "pending" and t["transfer_id"].startswith("wt_")
        again = alice.http.post(
            "/v1/transfer", json={"username": "Bob", "amount": "30.00"},
            headers={"Authorization": f"Bearer {alice.token}", "Idempotency-Key": key},
        )  # fmt: skip
        assert (again.status_code, again.json()) == (201, t)
        assert again.headers["Idempotent-Replayed"] == "true"
        reused = alice.http.post(
            "/v1/transfer", json={"username": "bob", "amount": "31.00"},
            headers={"Authorization": f"Bearer {alice.token}", "Idempotency-Key": key},
        )  # fmt: skip
        assert (reused.status_code, reused.json()["error"]) == (422, "idempotency_key_reused")
        done = alice.wait_transfer(t["transfer_id"])
        assert (done["status"], done["from_username"], done["to_username"]) == (
            "posted",
            "alice",
            "bob",
        )
        assert bob.transfer_status(t["transfer_id"])["status"] == "posted"  # the receiver sees it
        over = alice.transfer("bob", "1000.00")
        refused = alice.wait_transfer(over["transfer_id"])
        assert (refused["status"], refused["reason"]) == ("rejected", "insufficient_funds")
        assert alice.http.post(
            "/v1/transfer", json={"username": "nobody", "amount": "1.00"},
            headers={"Authorization": f"Bearer {alice.token}", "Idempotency-Key": "k-nobody"},
        ).status_code == 404  # fmt: skip

        # --- both accounts, newest first, counterparties by username ---
        mine = eventually(lambda: (v := alice.account())["balance"] == "70.00" and v, what="alice")
        assert (mine["available"], mine["status"], mine["currency"]) == ("70.00", "open", "USD")
        first, second = mine["last_transactions"][:2]
        assert (first["kind"], first["amount"], first["counterparty"], first["status"]) == (
            "transfer_hold", "-30.00", "bob", "posted",
        )  # fmt: skip
        assert first["transfer_id"] == t["transfer_id"]
        assert (second["kind"], second["amount"], second["counterparty"]) == (
            "payin", "100.00", "@psp/cardco/USD",
        )  # fmt: skip
        assert first["at"] >= second["at"]
        theirs = eventually(lambda: (v := bob.account())["balance"] == "30.00" and v, what="bob")
        got = theirs["last_transactions"][0]
        assert (got["kind"], got["amount"], got["counterparty"], got["status"]) == (
            "transfer_post", "30.00", "alice", "posted",
        )  # fmt: skip
        r = alice.http.get("/v1/account", headers={"Authorization": f"Bearer {alice.token}"})
        for name, value in SECURITY_HEADERS.items():
            assert r.headers[name] == value

        # --- nobody reaches another's money ---
        assert (
            carol.http.get(f"/v1/transfer/{t['transfer_id']}", headers=_bearer(carol)).status_code
            == 404
        )
        assert (
            carol.http.get(
                f"/payments/payment/v1/{paid['payment_id']}", headers=_bearer(carol)
            ).status_code
            == 404
        )
        for body, field in (
            (_payout(c["user_id"], a["account"]), "from_acct"),  # her own id, alice's account
            (_payout(a["user_id"], a["account"]), "user_id"),  # alice's id
            ({**_payout(c["user_id"], c["account"]), "type": "pay_in", "from_acct": "card_4242424242424242", "to_acct": a["account"]}, "to_acct"),
        ):  # fmt: skip
            r = carol.http.post(
                "/payments/payment/v1",
                json=body,
                headers={**_bearer(carol), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert (r.status_code, r.json().get("field")) == (403, field), r.text
        service = {"Authorization": f"Bearer {api_token(s)}"}
        assert anon.http.get("/v1/account", headers=service).status_code == 403
        assert anon.http.get("/v1/account").status_code == 401
        spent = carol.wait_transfer(carol.transfer("bob", "1.00")["transfer_id"])
        assert (spent["status"], spent["reason"]) == ("rejected", "insufficient_funds")

        # --- the cookie: reads as is, writes only with the CSRF token ---
        fresh = anon.http.post("/v1/session", json={"username": "bob", "password": PASSWORD})
        set_cookie = fresh.headers["Set-Cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
        assert "Secure" not in set_cookie  # plain HTTP on loopback
        cookie = {"Cookie": f"paystream_session={fresh.json()['token']}"}
        csrf = {"X-CSRF-Token": fresh.json()["csrf_token"]}
        assert anon.http.get("/v1/account", headers=cookie).json()["username"] == "bob"
        body = {"username": "alice", "amount": "1.00"}
        for path, payload in (
            ("/v1/transfer", body),
            ("/payments/payment/v1", _payout(b["user_id"], b["account"])),
        ):
            no_csrf = anon.http.post(
                path, json=payload, headers={**cookie, "Idempotency-Key": uuid.uuid4().hex}
            )
            assert (no_csrf.status_code, no_csrf.json()["error"]) == (403, "csrf_token_invalid")
            wrong = anon.http.post(
                path,
                json=payload,
                headers={**cookie, "X-CSRF-Token": "guess", "Idempotency-Key": uuid.uuid4().hex},
            )
            assert wrong.status_code == 403
        ok = anon.http.post(
            "/v1/transfer", json=body, headers={**cookie, **csrf, "Idempotency-Key": "k-cookie"}
        )
        assert ok.status_code == 201, ok.text
        assert anon.http.delete("/v1/session", headers=cookie).status_code == 403
        assert anon.http.delete("/v1/session", headers={**cookie, **csrf}).status_code == 204
        assert anon.http.get("/v1/account", headers=cookie).status_code == 401  # revoked

        # --- tokens: expired, re-signed with another key, alg=none, revoked ---
        kid, secret = max(load_keys(s.home).items())
        uid = b["user_id"]
        expired = jwt.encode(
            _claims(uid, int(time.time()) - 1), secret, "HS256", headers={"kid": kid}
        )
        resigned = jwt.encode(
            _claims(uid, int(time.time()) + 600),
            secrets.token_bytes(32),
            "HS256",
            headers={"kid": kid},
        )
        unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(_claims(uid, int(time.time()) + 600))}."
        valid = jwt.encode(
            _claims(uid, int(time.time()) + 600), secret, "HS256", headers={"kid": kid}
        )
        assert (
            anon.http.get("/v1/account", headers={"Authorization": f"Bearer {valid}"}).status_code
            == 200
        )
        for token in (expired, resigned, unsigned, valid[:-2] + "AA", "not.a.token"):
            for path in ("/v1/account", f"/payments/payment/v1/{paid['payment_id']}"):
                r = anon.http.get(path, headers={"Authorization": f"Bearer {token}"})
                assert r.status_code == 401, (token, path, r.text)
        revoked = bob.token
        bob.log_out()
        assert (
            anon.http.get("/v1/account", headers={"Authorization": f"Bearer {revoked}"}).status_code
            == 401
        )

        # --- another API process: the same users, the revocation too; then the lock-out ---
        other = PaymentsStack(s, _free_port())
        try:
            other.start_api()
            o = other.http
            assert (
                o.get("/v1/account", headers={"Authorization": f"Bearer {revoked}"}).status_code
                == 401
            )
            assert (
                o.get("/v1/account", headers={"Authorization": f"Bearer {alice.token}"}).json()[
                    "balance"
                ]
                == "71.00"  # with bob's 1.00 sent by cookie
            )
            _lockout(o)
        finally:
            other.stop()

        # --- `paystream demo`'s wallet part against this stack ---
        demo = wallet_demo.run(s, 7)
        assert demo["verified"], demo["problems"]
        assert [u["balance"] for u in demo["users"]] == ["30.00", "20.00"]

        # --- every process restarts, local state wiped: the same users, from the log ---
        before = _fold_users(s)
        users = {k: v for k, v in before.items() if isinstance(v, um.User)}
        assert {"alice", "bob", "carol"} <= {u.username for u in users.values()}
        assert all(
            u.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$") for u in users.values()
        )
        stack.stop()
        for d in (s.home / "state").iterdir():
            if d.name.startswith(("users-", "api-")):
                shutil.rmtree(d)
        stack.start(*stack.specs.values(), timeout_s=120)
        assert _fold_users(s) == before
        for name, user in (("alice", a), ("bob", b), ("carol", c)):
            w = WalletClient(url)
            try:
                w.log_in(name, PASSWORD)
                view = w.account()
                assert (view["user_id"], view["username"], view["account"]) == (
                    user["user_id"], name, user["account"],
                )  # fmt: skip
            finally:
                w.close()
        # The restarted users worker still holds the names: a sign-up sent straight to the log
        # for a taken username is refused by it.
        _refused_by_worker(s, "alice")
    finally:
        for w in (alice, bob, carol, anon):
            w.close()


def _bearer(w: WalletClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {w.token}"}


def _payout(user_id: str, account: str) -> dict[str, str]:
    return {
        "payment_id": f"p-{uuid.uuid4().hex[:12]}", "user_id": user_id, "type": "pay_out",
        "from_acct": account, "to_acct": "card_4242424242424242", "amount": "1.00",
        "currency": "USD", "payment_option": "card",
    }  # fmt: skip


def _free_port() -> int:
    from ops.ports import free_port_base

    return free_port_base(1)


def _lockout(http: httpx.Client) -> None:
    """Wrong username and wrong password: one body, one timing; after 5 failures from this
    address, 429 with Retry-After, even for the right password."""
    timings: dict[str, list[float]] = {"user": [], "password": []}
    bodies = set()
    for i, (name, password, kind) in enumerate(
        [("nobody-1", PASSWORD, "user"), ("alice", "wrong password 1", "password"),
         ("nobody-2", PASSWORD, "user"), ("alice", "wrong password 2", "password"),
         ("alice", "wrong password 3", "password")]
    ):  # fmt: skip
        started = time.perf_counter()
        r = http.post("/v1/session", json={"username": name, "password": password})
        timings[kind].append(time.perf_counter() - started)
        assert r.status_code == 401, (i, r.text)
        bodies.add(r.text)
    assert len(bodies) == 1, bodies
    ratio = statistics.median(timings["user"]) / statistics.median(timings["password"])
    assert 0.5 < ratio < 2.0, timings
    locked = http.post("/v1/session", json={"username": "alice", "password": PASSWORD})
    assert (locked.status_code, locked.json()["error"]) == (429, "too_many_failures")
    assert 0 < int(locked.headers["Retry-After"]) <= 900


def _refused_by_worker(s: Settings, username: str) -> None:
    user_id = um.USER_ID_PREFIX + uuid.uuid4().hex
    signup = um.SignUp(user_id, username, f"{user_id}@example.com", "$argon2id$x", "USD", 0)
    step = um.SignUpStep(um.Stage.reserve_username, signup)
    from confluent_kafka import Producer

    topic = TopicNames(s.topic_prefix).user_requests
    p = Producer({"bootstrap.servers": s.bootstrap})
    p.produce(
        topic,
        Codec.default().encode("UserRequest", signup_record(step)),
        step.key.encode(),
        partition_for(step.key, s.partitions),
    )
    assert p.flush(30) == 0
    refused = eventually(lambda: _fold_users(s).get(user_id), what="the worker's answer")
    assert refused == um.SignUpRefused(user_id, um.Refusal.username_taken, refused.ts)
