"""Every topic paystream uses, declared once.

Topic names are a public contract (``paystream.<name>.v<version>``). A test namespace may put
a prefix in front (``PAYSTREAM_TOPIC_PREFIX``); production leaves it empty.
"""

from __future__ import annotations

from dataclasses import dataclass

INFINITE_MS = -1
DELAY_RETENTION_MS = 7 * 86_400_000  # far longer than the longest delay topic (1 h)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    key: str  # short name used in code
    name: str  # contract name without prefix
    doc: str
    compacted: bool = False
    # Every money topic is co-partitioned with the commands so one worker owns an account.
    co_partitioned: bool = True
    # A topic that is not compacted keeps everything forever, unless it says otherwise here
    # (the PSP delay topics: a record is read again within its delay, at most an hour).
    retention_ms: int = INFINITE_MS

    def configs(self, replication: int) -> dict[str, str]:
        cfg = {
            "min.insync.replicas": str(min_insync(replication)),
            "unclean.leader.election.enable": "false",
        }
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        else:
            # The command and ledger logs are the event store: keep everything forever.
            cfg["cleanup.policy"] = "delete"
            cfg["retention.ms"] = str(self.retention_ms)
            cfg["retention.bytes"] = "-1"
        return cfg


def min_insync(replication: int) -> int:
    # One replica may be lost without stopping writes; a single broker needs 1.
    return max(1, replication - 1)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec("commands", "paystream.commands.v1", "Commands from upstream, keyed by account."),
    TopicSpec(
        "saga",
        "paystream.ledger-saga.v1",
        "Internal steps between account agents (credit requests, voids, user reservations).",
    ),
    TopicSpec("ledger", "paystream.ledger.v1", "Double-entry postings, one per account side."),
    TopicSpec(
        "outcomes", "paystream.outcomes.v1", "One outcome per command: accepted or rejected."
    ),
    TopicSpec(
        "transfers", "paystream.transfers.v1", "Transfer lifecycle: pending, posted, voided."
    ),
    TopicSpec("accounts", "paystream.accounts.v1", "Account events: opened, blocked, related..."),
    TopicSpec(
        "ledger_state",
        "paystream.ledger-state.v1",
        "Changelog of the ledger agents' state (compacted).",
        compacted=True,
    ),
    TopicSpec("alerts", "paystream.alerts.v1", "Related-account alerts from the detector."),
    TopicSpec("deadletter", "paystream.deadletter.v1", "Input that could not be used, with why."),
    # Payments (docs/payments.md): keyed by payment id, co-partitioned with their changelog.
    TopicSpec(
        "payments",
        "paystream.payments.v1",
        "Payments workers' input: API requests, executor results, ledger replies, webhooks.",
    ),
    TopicSpec(
        "payment_events",
        "paystream.payment-events.v1",
        "Payment status changes (snapshots) and PSP attempts.",
    ),
    TopicSpec(
        "psp_requests",
        "paystream.psp-requests.v1",
        "Work for the PSP executor: create a token, execute it, ask its status.",
    ),
    TopicSpec(
        "payments_state",
        "paystream.payments-state.v1",
        "Changelog of the payments agents' state (compacted).",
        compacted=True,
    ),
    # Scheduled payments (docs/schedules.md): keyed by schedule id, co-partitioned.
    TopicSpec(
        "schedule_commands",
        "paystream.schedule-commands.v1",
        "The scheduler's input: the API's create, update, delete and backfill requests, and "
        "scheduled payments' outcomes.",
    ),
    TopicSpec(
        "schedules",
        "paystream.schedules.v1",
        "The schedule store: each schedule's state (compacted); the scheduler rebuilds from it.",
        compacted=True,
    ),
    TopicSpec(
        "schedule_events",
        "paystream.schedule-events.v1",
        "Schedule snapshots and occurrences (submitted, skipped, settled) with their payment ids.",
    ),
    # The wallet's users (docs/wallet.md): requests keyed by the name, user or key that decides
    # them, co-partitioned with their changelog, which holds the users themselves.
    TopicSpec(
        "user_requests",
        "paystream.user-requests.v1",
        "Users workers' input: sign-ups and their saga steps, log-outs, wallet transfers.",
    ),
    TopicSpec(
        "users",
        "paystream.users.v1",
        "Users, who holds each username and email, revoked sessions, wallet transfers (compacted).",
        compacted=True,
    ),
    # PSP resilience (docs/psp-resilience.md): the executor's delay topics (retries, polls and
    # janitor checks wait in them, never in a sleep), its dead letters, the circuit breakers.
    *(
        TopicSpec(
            f"psp_retry_{tier}",
            f"paystream.psp-retry-{tier}.v1",
            f"PSP requests waiting up to {tier} (retries with backoff, polls, janitor checks).",
            retention_ms=DELAY_RETENTION_MS,
        )
        for tier in ("5s", "30s", "5m", "1h")
    ),
    TopicSpec(
        "psp_deadletter",
        "paystream.psp-deadletter.v1",
        "PSP requests whose retries were exhausted, with their history (compacted by id).",
        compacted=True,
    ),
    TopicSpec(
        "psp_breakers",
        "paystream.psp-breakers.v1",
        "Circuit breaker state changes, one key per PSP (compacted).",
        compacted=True,
    ),
    TopicSpec(
        "psp_stats",
        "paystream.psp-stats.v1",
        "Each executor's calls per PSP over the breaker window, every second (compacted).",
        compacted=True,
    ),
    # Risk engine (docs/risk.md): its input keyed by user, co-partitioned with its changelog.
    TopicSpec(
        "risk_requests",
        "paystream.risk-requests.v1",
        "Risk agents' input: payments to decide and their outcomes (by user), account facts,"
        " and each published version's activation (one per partition).",
    ),
    TopicSpec(
        "risk_state",
        "paystream.risk-state.v1",
        "Changelog of the risk agents' state: velocity per user, context per partition.",
        compacted=True,
    ),
    TopicSpec(
        "risk_decisions",
        "paystream.risk-decisions.v1",
        "Every risk decision, live and shadow: rule set, matching rules, features, model.",
    ),
    TopicSpec(
        "risk_versions",
        "paystream.risk-versions.v1",
        "Published rule files and models, by content (<kind>/<sha256>; compacted).",
        compacted=True,
    ),
    TopicSpec(
        "risk_labels",
        "paystream.risk-labels.v1",
        "Training labels for payments: fraud or legit, and their source.",
    ),
    # The review queue (risk; recon: reconciliation, and the PSP orders the poller or the
    # janitor could not resolve): keyed by item id.
    TopicSpec(
        "reviews",
        "paystream.reviews.v1",
        "Review queue agents' input: open an item, decide one.",
    ),
    TopicSpec(
        "reviews_state",
        "paystream.reviews-state.v1",
        "Changelog of the review queue: every item as it stands (compacted).",
        compacted=True,
    ),
    TopicSpec(
        "review_events",
        "paystream.review-events.v1",
        "What happened to each review item: opened, decided (who, when, why), refused.",
    ),
)

_BY_KEY = {t.key: t for t in TOPICS}


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Resolved topic names for one namespace (prefix)."""

    prefix: str = ""

    def __getattr__(self, key: str) -> str:
        try:
            return self.prefix + _BY_KEY[key].name
        except KeyError:
            raise AttributeError(key) from None

    def all(self) -> dict[str, str]:
        return {t.key: self.prefix + t.name for t in TOPICS}


def replication_for(brokers: int) -> int:
    return min(3, brokers)
