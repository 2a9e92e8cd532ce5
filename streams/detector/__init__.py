"""Related-account and cycle detection over the transfers and accounts topics.

``graph`` is the pure incremental detector, ``bruteforce`` its test oracle, ``app`` the
streaming runner (Kafka in, Avro ``Alert`` records out).
"""

from streams.detector.graph import (
    CYCLE,
    DIRECT,
    INDIRECT,
    KINDS,
    Alert,
    RelatedTransferDetector,
    TransferEdge,
    alert_id,
)

__all__ = [
    "CYCLE",
    "DIRECT",
    "INDIRECT",
    "KINDS",
    "Alert",
    "RelatedTransferDetector",
    "TransferEdge",
    "alert_id",
]
