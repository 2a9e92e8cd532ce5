"""schemathesis against the running API's own /openapi.json (real worker, real broker): for
every operation, schema-valid and schema-invalid requests with the service token; no 5xx, no
crash, every answer as documented."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from base.config import Settings
from tests.payments_stack import TOKEN, PaymentsStack

pytestmark = pytest.mark.integration

EXAMPLES_MAX = 60  # per operation and mode: about a minute in all
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# A valid body may meet a key that an earlier example already used with another body (422)
# or a payment another key created (409): the idempotency contract, not a refusal of it.
ACCEPTED = ["2xx", "401", "403", "404", "409", "422"]
# A schedule's rule, start and zone are strings whose meaning JSON Schema cannot state (an
# RFC 5545 rule, a local time, an IANA zone): a schema-valid one may still be refused with
# 400 and the field, as documented (docs/schedules.md).
SCHEDULES = "/payments/scheduled-payment/v1"
SCHEDULES_ACCEPTED = [*ACCEPTED, "400"]


def test_every_operation_survives_generated_requests(
    settings: Settings, free_port_base: Callable[[int], int]
) -> None:
    stack = PaymentsStack(settings, free_port_base(1))
    try:
        stack.start_payments_worker()
        stack.start_scheduler()  # the scheduled-payment routes' outcomes come from it
        stack.start_api()
        base = f"http://127.0.0.1:{stack.api_port}"

        def operations_of(accepted: list[str]) -> list[schemathesis.APIOperation]:
            config = schemathesis.Config.from_dict(
                {"checks": {"positive_data_acceptance": {"expected-statuses": accepted}}}
            )
            schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config)
            return [r.ok() for r in schema.get_all_operations()]

        seen: Counter[tuple[str, str, int]] = Counter()
        # The wallet's operations have their own run (test_wallet_fuzz.py).
        operations = [
            op for op in operations_of(ACCEPTED) if not op.path.startswith(("/v1/", SCHEDULES))
        ] + [op for op in operations_of(SCHEDULES_ACCEPTED) if op.path.startswith(SCHEDULES)]
        # health, create and get a payment, PSP webhooks, the review queue's list, item, decision;
        # scheduled payments' create, list, get, update, delete and backfill
        assert len(operations) == 13
        for op in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz(op, mode, base, seen)
                except Unsatisfiable:
                    # Nothing to make invalid: no parameters, or only free-form path strings.
                    assert mode is GenerationMode.NEGATIVE and op.label in (
                        "GET /health",
                        "POST /psp/webhooks/{psp}",
                        "GET /payments/review/v1/{item_id}",
                    ), op.label
        print("\n" + "\n".join(f"{k}: {n}" for k, n in sorted(seen.items())))
        assert any(status == 201 for (_, _, status) in seen), seen
        assert stack.http.get("/health").json()["status"] == "ok"  # still up
    finally:
        stack.stop()


def _fuzz(
    op: schemathesis.APIOperation,
    mode: GenerationMode,
    base: str,
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
        response = case.call(base_url=base, headers=AUTH, timeout=30)
        seen[(op.label, mode.value, response.status_code)] += 1
        assert response.status_code < 500, response.text
        case.validate_response(response, headers=AUTH)

    run()
