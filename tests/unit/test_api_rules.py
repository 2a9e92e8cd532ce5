"""The payment API's pure parts: body validation, the digest, answers from the state, the
error mapping and the principal."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from paystream.api.answers import answer_for, digest, normalised
from paystream.api.auth import Principal, ServiceToken, authenticate
from paystream.api.errors import ApiError
from paystream.api.handlers import invalid_field
from paystream.api.models import FIELD_RULES, PaymentBody, PaymentView
from streams.payments import model as pm
from streams.payments.views import admission_view, payment_view

BODY: dict[str, str] = {
    "payment_id": "p-1",
    "user_id": "user-1",
    "type": "pay_in",
    "from_acct": "card_4242424242424242",
    "to_acct": "acct-1",
    "amount": "10.50",
    "currency": "USD",
    "payment_option": "card",
}


def _body(**changes: Any) -> PaymentBody:
    return PaymentBody.model_validate({**BODY, **changes})


def _refused(raw: dict[str, Any]) -> ApiError:
    with pytest.raises(ValidationError) as info:
        PaymentBody.model_validate(raw)
    # As FastAPI reports them: under "body".
    return invalid_field([{**e, "loc": ("body", *e["loc"])} for e in info.value.errors()])


# --- validation ---


def test_a_good_body_is_accepted() -> None:
    req = _body().to_request()
    assert req.type is pm.PaymentType.pay_in and req.payment_option is pm.PaymentOption.card
    assert req.account == "acct-1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payment_id", ""),
        ("payment_id", "-starts-with-dash"),
        ("payment_id", "has/slash"),
        ("payment_id", "@idem"),
        ("payment_id", "x" * 101),
        ("user_id", ""),
        ("user_id", "u\x00"),
        ("user_id", "line\nbreak"),
        ("user_id", "c1\x85"),
        ("user_id", "u" * 129),
        ("type", "refund"),
        ("from_acct", ""),
        ("from_acct", "tab\there"),
        ("to_acct", "x" * 129),
        ("to_acct", "\x7f"),
        ("amount", ""),
        ("amount", "-1"),
        ("amount", "1e5"),
        ("amount", "1."),
        ("amount", ".5"),
        ("amount", " 1"),
        ("amount", "1,00"),
        ("amount", "1" * 31),
        ("amount", "1." + "0" * 19),
        ("amount", "1" * 30 + "." + "1" * 10),  # 41 characters: more than the workers take
        ("currency", "usd"),
        ("currency", "USDX"),
        ("currency", "US"),
        ("payment_option", "cash"),
    ],
)
def test_every_bad_field_is_refused_with_its_name(field: str, value: str) -> None:
    err = _refused({**BODY, field: value})
    assert (err.status, err.code, err.field) == (400, "invalid_field", field)
    assert err.message == FIELD_RULES[field]  # the rule, never the value


@pytest.mark.parametrize("field", sorted(BODY))
def test_a_missing_or_non_string_field_is_refused(field: str) -> None:
    missing = _refused({k: v for k, v in BODY.items() if k != field})
    assert (missing.field, missing.message) == (field, f"{field} is required")
    for value in (5, None, True, ["x"], {"a": "b"}):
        assert _refused({**BODY, field: value}).field == field


def test_an_unknown_field_is_refused() -> None:
    err = _refused({**BODY, "note": "x"})
    assert (err.field, err.code) == ("note", "invalid_field")
    assert _refused({**BODY, "n" * 1000: "x"}).field == "n" * 64  # echoed short


def test_body_level_errors_name_the_body() -> None:
    assert invalid_field([{"type": "json_invalid", "loc": ("body", 3)}]).field == "body"
    assert invalid_field([{"type": "model_attributes_type", "loc": ("body",)}]).field == "body"
    assert invalid_field([]).field == "body"
    header = invalid_field([{"type": "string_too_long", "loc": ("header", "Idempotency-Key")}])
    assert (header.field, header.status) == ("Idempotency-Key", 400)


def test_the_largest_amount_the_workers_take_is_accepted() -> None:
    assert _body(amount="1" * 30 + "." + "1" * 9).amount  # 40 characters
    assert _body(amount="0").amount == "0"  # the ledger says amount_must_be_positive


# --- the digest ---


def test_digest_ignores_key_order_and_whitespace() -> None:
    a = PaymentBody.model_validate_json(json.dumps(BODY))
    b = PaymentBody.model_validate_json(
        json.dumps(dict(reversed(list(BODY.items()))), indent=4, separators=(" ,", " :  "))
    )
    assert digest(a) == digest(b)
    assert digest(a).startswith("sha256:") and len(digest(a)) <= 128  # the workers' limit
    assert json.loads(normalised(a)) == BODY


@given(st.permutations(sorted(BODY)), st.sampled_from(["", " ", "\n", "\t  "]))
def test_digest_is_one_per_body(order: list[str], ws: str) -> None:
    raw = "{" + ws + ("," + ws).join(f'"{k}"{ws}:{ws}"{BODY[k]}"' for k in order) + ws + "}"
    assert digest(PaymentBody.model_validate_json(raw)) == digest(_body())


@pytest.mark.parametrize("field", sorted(BODY))
def test_digest_changes_with_any_value(field: str) -> None:
    other = {
        "type": "pay_out",
        "payment_option": "paypal",
        "currency": "EUR",
        "amount": "10.5",  # the same money, another body: values are compared as sent
    }.get(field, BODY[field] + "x")
    assert digest(_body(**{field: other})) != digest(_body())


# --- answers from the state ---


def _key(digest_: str, payment_id: str = "p-1", key: str = "k1") -> pm.KeyState:
    return pm.KeyState("service", key, payment_id, digest_, 1)


def _payment(digest_: str, key: str = "k1") -> pm.PaymentState:
    return pm.PaymentState(
        request=_body().to_request(),
        scope="service",
        idempotency_key=key,
        digest=digest_,
        created_at=1_700_000_000_000_000,
        status=pm.Status.authorizing,
        history=((pm.Status.received, 1_700_000_000_000_000),),
    )


def test_no_answer_until_the_key_and_its_payment_are_known() -> None:
    d = digest(_body())
    assert answer_for(None, None, d) is None
    assert answer_for(_key(d), None, d) is None


def test_the_keys_own_payment_is_201_as_admitted() -> None:
    d = digest(_body())
    answer = answer_for(_key(d), _payment(d), d)
    assert answer is not None and answer.status == 201
    assert answer.body == admission_view(_payment(d))
    assert answer.body["status"] == "received"  # as admitted, whatever it became since
    later = replace(_payment(d), status=pm.Status.succeeded)
    assert answer_for(_key(d), later, d) == answer
    PaymentView.model_validate(answer.body)


def test_a_key_won_by_another_body_is_422_at_once() -> None:
    answer = answer_for(_key("sha256:other"), None, digest(_body()))
    assert answer is not None and answer.status == 422
    assert answer.body["error"] == "idempotency_key_reused"


def test_a_payment_of_another_key_is_409() -> None:
    d = digest(_body())
    answer = answer_for(_key(d, key="k2"), _payment(d, key="k1"), d)
    assert answer is not None and answer.status == 409
    assert answer.body["error"] == "payment_exists"


def test_payment_view_conforms_to_the_documented_schema() -> None:
    p = _payment("d")
    attempt = pm.Attempt(
        1,
        "cardco",
        ("cardco",),
        "why",
        5,
        pm.Phase.answered,
        "tok",
        pm.PspStatus.succeeded,
        None,
        "ref",
        9,
        2,
    )
    p = replace(p, attempts=(attempt,), reason="x")
    PaymentView.model_validate(payment_view(p))


# --- auth ---


def test_the_service_token_is_the_service_principal() -> None:
    auth = (ServiceToken("s3cret"),)
    assert authenticate(auth, "s3cret") == Principal.service()
    for token in (None, "", "s3cre", "s3cret ", "S3CRET", "s3cret\x00"):
        with pytest.raises(ApiError) as info:
            authenticate(auth, token)
        assert info.value.status == 401 and info.value.code == "unauthorized"
    with pytest.raises(ValueError):
        ServiceToken("")


def test_a_user_acts_only_for_themself() -> None:
    assert Principal.service().may_act_for("anyone")
    alice = Principal.user("alice")
    assert alice.scope == "user:alice"
    assert alice.may_act_for("alice") and not alice.may_act_for("bob")


def test_importing_the_api_starts_nothing() -> None:
    code = (
        "import threading\n"
        "import paystream.api.app, paystream.api.server, paystream.api.client, paystream.api.view\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
