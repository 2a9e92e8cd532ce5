"""Errors of the payment API, each with the HTTP answer it becomes."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than success: ``{"error": code, "message": ..., "field"?: ...}``.

    Raised by the app's handlers (and turned into that body), and by the client for a
    non-2xx answer.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, str]:
        out = {"error": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class NotDelivered(Exception):
    """The broker did not acknowledge a record in time (the API answers 503)."""


class ViewFailed(Exception):
    """The view stopped following the changelog; the process must restart."""
