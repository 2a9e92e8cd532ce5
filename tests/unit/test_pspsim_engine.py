"""The PSP rules on a real sqlite store, without HTTP: tokens, at-most-once execution,
asynchronous completion, and what a reopened store still knows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pspsim.engine import PspEngine
from pspsim.errors import ApiError
from pspsim.instruments import Behavior
from pspsim.psps import DEFAULT_PSPS
from pspsim.settlement import settlement_rows
from pspsim.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "pspsim.sqlite3")


def engine(store: Store, psp: str = "cardco", seed: int | None = 7) -> PspEngine:
    return PspEngine(DEFAULT_PSPS[psp], store, seed=seed, default_webhook_url="http://x/h")


def body(ref: str, instrument: str = "card_4242424242424242", **over: object) -> dict[str, object]:
    b: dict[str, object] = {
        "merchant_reference": ref, "direction": "pay_in", "amount": "10.00", "currency": "USD",
        "payment_option": "card", "instrument": instrument,
    }  # fmt: skip
    return {**b, **over}


def test_tokens_are_idempotent_on_the_reference(store: Store) -> None:
    e = engine(store)
    status, first = e.create_token(body("po-1"))
    assert status == 201 and first["status"] == "created" and first["amount"] == "10.00"
    assert e.create_token(body("po-1", amount="10")) == (200, first)  # the same amount
    with pytest.raises(ApiError) as err:
        e.create_token(body("po-1", currency="EUR"))
    assert (err.value.status, err.value.code, err.value.field) == (
        409,
        "idempotency_mismatch",
        "currency",
    )


@pytest.mark.parametrize(
    ("over", "code", "field"),
    [({"currency": "SEK"}, "unsupported_currency", "currency"),
     ({"payment_option": "paypal"}, "unsupported_payment_option", "payment_option"),
     ({"amount": "1.001"}, "invalid_amount", "amount"),
     ({"amount": 10}, "invalid_amount", "amount"),
     ({"amount": None}, "invalid_amount", "amount"),
     ({"direction": "sideways"}, "invalid_field", "direction"),
     ({"merchant_reference": 5}, "invalid_field", "merchant_reference"),
     ({"merchant_reference": "x" * 129}, "invalid_field", "merchant_reference"),
     ({"instrument": ["card"]}, "invalid_field", "instrument"),
     ({"webhook_url": "ftp://x"}, "invalid_field", "webhook_url")],
)  # fmt: skip
def test_bad_token_requests(store: Store, over: dict[str, object], code: str, field: str) -> None:
    with pytest.raises(ApiError) as err:
        engine(store).create_token(body("po-1", **over))
    assert (err.value.status, err.value.code, err.value.field) == (400, code, field)
    assert engine(store).stats()["tokens"] == 0


def test_missing_fields_and_non_objects(store: Store) -> None:
    b = body("po-1")
    del b["instrument"]
    with pytest.raises(ApiError, match="instrument is required"):
        engine(store).create_token(b)
    with pytest.raises(ApiError, match="JSON object"):
        engine(store).create_token([b])


def test_execute_moves_money_once_and_then_answers_the_original(store: Store) -> None:
    e = engine(store)
    token = str(e.create_token(body("po-1"))[1]["token"])
    first = e.execute(token)
    again = e.execute(token)
    assert first.http_status == again.http_status == 200
    assert first.body["already_executed"] is False and again.body["already_executed"] is True
    assert {**first.body, "already_executed": True} == again.body
    assert e.stats() == {
        "tokens": 1,
        "executions": 2,
        "charges": 1,
        "charges_by_reference": {"po-1": 1},
    }
    with pytest.raises(ApiError) as err:
        e.execute("tok_nope")
    assert err.value.status == 404 and err.value.code == "token_not_found"


def test_a_decline_is_final(store: Store) -> None:
    e = engine(store)
    token = str(e.create_token(body("po-1", "card_4000000000009995"))[1]["token"])
    for already in (False, True):
        ex = e.execute(token)
        assert ex.http_status == 402 and ex.body["code"] == "insufficient_funds"
        assert ex.body["already_executed"] is already
    assert e.stats()["charges"] == 0 and not e.get(token).charged


def test_the_flaky_card_fails_twice_then_charges_once(store: Store) -> None:
    e = engine(store)
    token = str(e.create_token(body("po-1", "card_4000000000000119"))[1]["token"])
    statuses = [e.execute(token).http_status for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert e.get(token).executions == 4 and e.stats()["charges"] == 1


@pytest.mark.parametrize(("card", "then"), [("card_4000000000000259", Behavior.DROP),
                                            ("card_4000000000000341", Behavior.HANG)])  # fmt: skip
def test_drop_and_hang_are_charged_before_the_answer(
    store: Store, card: str, then: Behavior
) -> None:
    e = engine(store)
    token = str(e.create_token(body("po-1", card))[1]["token"])
    ex = e.execute(token)
    assert ex.then is then and e.get(token).charged
    assert e.execute(token).then is None


def test_bankco_is_pending_then_completes_and_stores_its_events(store: Store) -> None:
    e = engine(store, "bankco")
    ok = str(
        e.create_token(body("b-1", "bank_DE89370400440532013000", payment_option="bank_account"))[
            1
        ]["token"]
    )
    closed = str(
        e.create_token(body("b-2", "bank_DE62370400440532013001", payment_option="bank_account"))[
            1
        ]["token"]
    )
    bad = str(e.create_token(body("b-3", "bank_XX", payment_option="bank_account"))[1]["token"])
    assert e.execute(ok).http_status == 202 and e.execute(closed).http_status == 202
    assert e.execute(bad).http_status == 402  # not even a bank account: refused at once
    pending = e.get(ok)
    assert pending.status == "pending" and not pending.charged
    assert pending.complete_due is not None and 2 <= pending.complete_due - time.time() <= 5.1
    assert e.complete_due() == []  # nothing is due yet
    done = e.complete_due(now_s=time.time() + 6)
    assert {t.token: (t.status, t.code) for t in done} == {
        ok: ("succeeded", None),
        closed: ("declined", "account_closed"),
    }
    assert e.execute(ok).body["already_executed"] is True and e.execute(ok).http_status == 200
    assert e.stats()["charges_by_reference"] == {"b-1": 1}
    # An async PSP tells every outcome by webhook, the immediate refusal included.
    types = sorted((ev.token, ev.type) for ev in store.events("bankco"))
    assert types == sorted([(ok, "payment.pending"), (closed, "payment.pending"),
                            (bad, "payment.declined"), (ok, "payment.succeeded"),
                            (closed, "payment.declined")])  # fmt: skip


def test_seeded_delays_depend_on_the_payment_not_the_order(tmp_path: Path) -> None:
    def due(path: Path, refs: list[str]) -> dict[str, float]:
        e = engine(Store(path), "bankco", seed=42)
        out = {}
        for ref in refs:
            token = str(
                e.create_token(
                    body(ref, "bank_DE89370400440532013000", payment_option="bank_account")
                )[1]["token"]
            )
            t0 = time.time()
            e.execute(token)
            out[ref] = round(e.get(token).complete_due - t0, 1)  # type: ignore[operator]
        return out

    assert due(tmp_path / "a.db", ["x", "y"]) == due(tmp_path / "b.db", ["y", "x"])


def test_everything_survives_reopening_the_store(tmp_path: Path) -> None:
    path = tmp_path / "pspsim.sqlite3"
    e = engine(Store(path))
    token = str(e.create_token(body("po-1"))[1]["token"])
    e.execute(token)
    e.store.close()
    reopened = engine(Store(path))
    assert reopened.get(token).charged
    assert reopened.execute(token).body["already_executed"] is True
    day = str(reopened.get(token).completed_at)[:10]
    rows = settlement_rows(reopened.store, "cardco", day)
    assert [r["Type"] for r in rows] == ["Settled", "Fee", "MerchantPayout"]


def test_tokens_belong_to_their_psp(store: Store) -> None:
    token = str(engine(store).create_token(body("po-1"))[1]["token"])
    with pytest.raises(ApiError):
        engine(store, "backupcard").get(token)
    # The same reference at another PSP is another payment.
    assert engine(store, "backupcard").create_token(body("po-1"))[0] == 201
