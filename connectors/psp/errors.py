"""Errors of the PSP connectors, their configuration and the executor."""

from __future__ import annotations

from connectors.errors import ConnectorError


class PspError(ConnectorError):
    """Base class of every error this package raises on purpose."""


class PspConfigError(PspError):
    """``psps.toml`` is missing, not TOML, or a PSP's table has a bad field.

    The message names the file, the PSP (or its position) and the field.
    """


class UnknownConnector(PspError):
    """A PSP names a connector that no ``paystream.psp_connectors`` entry point provides."""


class PspCallError(PspError):
    """A call to a PSP that ended without a usable answer.

    ``code`` is the PSP's error code or a transport code (``timeout``, ``connection_refused``,
    ``connection_dropped``...), classed by the connector's error table: ``retryable`` means the
    same call may succeed later. ``sent`` is False only when the request certainly never
    reached the PSP (refused connection, no free connection): then nothing can have happened
    there. ``retry_after_s`` is the PSP's ``Retry-After``, when it gave one.
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        retryable: bool,
        sent: bool,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        latency_us: int = 0,
    ) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.retryable = retryable
        self.sent = sent
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        self.latency_us = latency_us


class WebhookRejected(PspError):
    """A webhook that fails verification (signature, timestamp tolerance) or is malformed.

    ``code`` is one of ``missing_headers``, ``bad_timestamp``, ``timestamp_too_old``,
    ``timestamp_too_new``, ``bad_signature``, ``no_secret``, ``malformed_body``: the API
    answers 401 for every one of them.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class BadRequest(PspError):
    """A ``PspRequest`` the executor cannot work on: it goes to the dead-letter topic.

    ``code`` is stable (``unexpected_record``, ``unknown_kind``, ``unknown_psp``,
    ``missing_token``, ``invalid_field``, or the codec's decode code).
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class FatalExecutorError(PspError):
    """The executor cannot go on (a fatal Kafka error): the process stops and is restarted,
    and the uncommitted requests are replayed."""
