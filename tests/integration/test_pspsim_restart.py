"""kill -9 of the simulator loses nothing: tokens, charges, pending completions (also those
that fell due while it was down) and webhook retries are all there after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from tests.pspsim_harness import Simulator, WebhookReceiver, wait_until

pytestmark = pytest.mark.integration

OK_BANK = "bank_DE89370400440532013000"


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    r.start()
    yield r
    r.stop()


@pytest.fixture
def sim(tmp_path: Path, receiver: WebhookReceiver) -> Iterator[Simulator]:
    s = Simulator(tmp_path / "state", ["--seed", "3", "--webhook-url", f"bankco={receiver.url}"])
    s.start()
    yield s
    s.stop()


def token(http: httpx.Client, base: str, reference: str, instrument: str, option: str) -> str:
    body = {"merchant_reference": reference, "direction": "pay_in", "amount": "25.00",
            "currency": "EUR", "payment_option": option, "instrument": instrument}  # fmt: skip
    r = http.post(f"{base}/v1/tokens", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def view(http: httpx.Client, sim: Simulator, psp: str, tok: str) -> dict[str, Any]:
    body: dict[str, Any] = http.get(f"{sim.url(psp)}/v1/tokens/{tok}").json()
    return body


def charges(http: httpx.Client, sim: Simulator, psp: str) -> dict[str, int]:
    body: dict[str, int] = http.get(f"{sim.url(psp)}/v1/admin/stats").json()["charges_by_reference"]
    return body


def test_kill9_loses_nothing(sim: Simulator, receiver: WebhookReceiver) -> None:
    http = httpx.Client(timeout=10)
    card = token(http, sim.url("cardco"), "k-card", "card_4242424242424242", "card")
    assert http.post(f"{sim.url('cardco')}/v1/tokens/{card}/execute").status_code == 200
    bank = token(http, sim.url("bankco"), "k-bank", OK_BANK, "bank_account")
    late = token(http, sim.url("bankco"), "k-late", OK_BANK, "bank_account")
    # The success webhook of k-bank fails twice: its retry schedule must survive the kill.
    receiver.failures[(bank, "payment.succeeded")] = 2
    assert http.post(f"{sim.url('bankco')}/v1/tokens/{bank}/execute").status_code == 202
    sim.kill9()  # mid-way: a charge done, a completion pending

    sim.start()
    assert view(http, sim, "cardco", card)["charged"] is True
    assert charges(http, sim, "cardco") == {"k-card": 1}
    assert view(http, sim, "bankco", bank)["status"] == "pending"
    again = http.post(f"{sim.url('bankco')}/v1/tokens/{bank}/execute")
    assert again.status_code == 202 and again.json()["already_executed"] is True
    assert view(http, sim, "bankco", late)["status"] == "created"

    def succeeded(tok: str) -> list[Any]:
        return [d for d in receiver.for_token(tok) if d.payload["type"] == "payment.succeeded"]

    # The pending completion happens after the restart; kill again after its first failed
    # delivery, and the retry resumes from the stored schedule with the same event id.
    wait_until(lambda: succeeded(bank), 10, "the first success delivery")
    assert view(http, sim, "bankco", bank)["status"] == "succeeded"
    sim.kill9()
    sim.start()
    wait_until(lambda: len(succeeded(bank)) >= 3, 15, "the retried success delivery")
    ids = {d.headers["webhook-id"] for d in succeeded(bank)}
    assert len(ids) == 1
    secret = (sim.state_dir / "webhook-secrets" / "bankco").read_text().strip()
    assert Webhook(secret).verify(succeeded(bank)[-1].body, succeeded(bank)[-1].headers)
    assert charges(http, sim, "bankco") == {"k-bank": 1}

    # A completion that falls due while the simulator is down happens right after restart.
    assert http.post(f"{sim.url('bankco')}/v1/tokens/{late}/execute").status_code == 202
    sim.kill9()
    time.sleep(5.1)  # past the longest delay (5 s)
    sim.start()
    # Due already: completed by the first polls (every 0.1 s), not a fresh 2..5 s later.
    wait_until(
        lambda: view(http, sim, "bankco", late)["status"] == "succeeded", 1.5, "late completion"
    )
    assert charges(http, sim, "bankco") == {"k-bank": 1, "k-late": 1}
    assert charges(http, sim, "cardco") == {"k-card": 1}
    http.close()
