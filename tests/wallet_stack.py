"""The wallet's stack for the integration tests: ledger, users and payments workers, the
read side, the PSP simulator and executor, and the API, as real processes on free ports."""

from __future__ import annotations

import time
from typing import Any

from base.config import Settings
from paystream.api.errors import ApiError
from paystream.stack import Layout, Stack
from tests.stack import stack_for

PASSWORD = "correct horse battery staple"


def wallet_stack(settings: Settings, payments: bool = True) -> Stack:
    from ops.ports import free_port_base

    base = free_port_base(8)
    s = settings.with_(
        api_port=base, warehouse_port=base + 1, readside_port=base + 2, psp_sim_port=base + 3
    )
    layout = Layout(
        workers=1,
        warehouse=False,
        readside=True,
        detector=False,
        payment_workers=1 if payments else 0,
        executor=payments,
        api=True,
        psp_sim=payments,
        user_workers=1,
    )
    return stack_for(s, layout)


def eventually(check: Any, timeout_s: float = 60.0, what: str = "") -> Any:
    """``check()``'s first truthy answer, polling; AssertionError with the last one at the end.

    A 503 counts as "not yet": it is the API's documented answer while the read side or the
    users workers are still catching up after a start."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except ApiError as err:
            if err.status != 503:
                raise
            last = err
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"not in {timeout_s} s: {what} (last: {last!r})")
