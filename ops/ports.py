"""Free loopback ports for private stacks (tests, benchmarks, the chaos soak)."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection

# Below Linux's ephemeral range (32768+), so client sockets never grab a port we picked.
PORT_LOW, PORT_HIGH = 20000, 32000


def ports_free(base: int, count: int) -> bool:
    for port in range(base, base + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_base(
    count: int = 2, rng: random.Random | None = None, avoid: Collection[int] = ()
) -> int:
    """A port p with p..p+count-1 all free on 127.0.0.1 and none in ``avoid`` (random, so
    parallel runs differ; pass a seeded ``rng`` to repeat a choice)."""
    rng = rng or random.Random()
    for _ in range(500):
        base = rng.randrange(PORT_LOW, PORT_HIGH - count)
        if any(p in avoid for p in range(base, base + count)):
            continue
        if ports_free(base, count):
            return base
    raise RuntimeError(f"no {count} consecutive free ports in {PORT_LOW}..{PORT_HIGH}")
