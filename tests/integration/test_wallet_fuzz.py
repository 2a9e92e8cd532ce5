"""schemathesis over the wallet's endpoints, from the running API's own /openapi.json (real
broker, ledger and users workers, read side): with a user's session token, schema-valid and
schema-invalid requests; no 5xx, every answer as documented."""

from __future__ import annotations

from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from schemathesis import GenerationMode

from base.config import Settings
from paystream.api.wallet.client import WalletClient
from tests.wallet_stack import PASSWORD, eventually, wallet_stack

pytestmark = pytest.mark.integration

EXAMPLES_MAX = 40  # per operation and mode
WALLET = ("/v1/user", "/v1/session", "/v1/account", "/v1/transfer", "/v1/transfer/{transfer_id}")
# 401/403/404/409/422/429: refusals the contract documents (a generated token is no session,
# a taken name, a reused key, failed log-ins locking the address out).
ACCEPTED = ["2xx", "400", "401", "403", "404", "409", "422", "429"]


def test_wallet_operations_survive_generated_requests(settings: Settings) -> None:
    stack = wallet_stack(settings, payments=False)
    try:
        stack.up(timeout_s=120)
        base = f"http://127.0.0.1:{stack.settings.api_port}"
        with WalletClient(base) as w:
            w.sign_up("fuzz@example.com", "fuzzer", PASSWORD)
            w.log_in("fuzzer", PASSWORD)
            eventually(lambda: w.account()["status"] == "open", what="the account opened")
            auth = {"Authorization": f"Bearer {w.token}"}
        config = schemathesis.Config.from_dict(
            {"checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED}}}
        )
        schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)
        seen: Counter[tuple[str, str, int]] = Counter()
        operations = [op for r in schema.get_all_operations() if (op := r.ok()).path in WALLET]
        assert len(operations) == 6
        # The log-out last: it revokes the token every other operation is called with.
        operations.sort(key=lambda op: op.label == "DELETE /v1/session")
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz(op, mode, base, auth, seen)
        print("\n" + "\n".join(f"{k}: {n}" for k, n in sorted(seen.items())))
        assert any(s == 201 for (label, _, s) in seen if label == "POST /v1/user"), seen
        assert any(s == 200 for (label, _, s) in seen if label == "GET /v1/account"), seen
        with WalletClient(base) as w:  # still up, still right
            assert w.http.get("/health").json()["status"] == "ok"
    finally:
        stack.stop()


def _fuzz(
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    base: str,
    auth: dict[str, str],
    seen: Counter[tuple[str, str, int]],
) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES_MAX,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, headers=auth, timeout=30)
        seen[(op.label, mode.value, response.status_code)] += 1
        assert response.status_code < 500, response.text
        case.validate_response(response, headers=auth)

    run()
