"""Process entry points of the risk engine and the review queue: what `paystream risk-worker`
and `paystream reviews-worker` run (started by `paystream up` beside the payments workers)."""

from __future__ import annotations

from base.config import Settings
from paystream.bootstrap import _restart_on_failure, _start_process, resolved, restart_in_place


def run_risk_worker(settings: Settings, instance: int) -> int:
    """A risk worker: the exactly-once processor running the risk agent (keyed by user)."""
    _start_process(settings)
    from streams.processor import Processor
    from streams.risk_agent import RiskAgent
    from streams.risk_library import KafkaLibrary

    settings = resolved(settings)
    library = KafkaLibrary(settings, settings.limits.risk_library_wait_s)
    processor = Processor(RiskAgent(library), settings, instance, on_stall=restart_in_place)
    return _restart_on_failure(f"risk worker {instance}", processor.run)


def run_reviews_worker(settings: Settings, instance: int) -> int:
    """A review queue worker: the exactly-once processor running the review items."""
    _start_process(settings)
    from streams.processor import Processor
    from streams.reviews_agent import ReviewsAgent

    settings = resolved(settings)
    processor = Processor(ReviewsAgent(), settings, instance, on_stall=restart_in_place)
    return _restart_on_failure(f"reviews worker {instance}", processor.run)
