"""The read side's OpenAPI 3.0 document (served at /openapi.json, and kept in openapi.json)."""

from __future__ import annotations

from typing import Any

from base.config import Limits
from producers.commands import COMMAND_TYPES

LIMIT_DEFAULT = 20  # postings per /accounts/{id}/transfers, unless ?limit=
LIMIT_MAX = 500


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.0 description of every endpoint (also written to openapi.json)."""
    s, n = {"type": "string"}, {"type": "string", "nullable": True}
    i = {"type": "integer"}
    id_param = {"name": "id", "in": "path", "required": True, "schema": s}
    not_found = _json_response("unknown key", _ref("Error"))

    def get(summary: str, ok: dict[str, Any], params: list[Any] | None = None, **more: Any) -> Any:
        op = {"summary": summary, "responses": {"200": ok, **more}}
        if params:
            op["parameters"] = params
        return {"get": op}

    summary_props = {
        "account": s,
        "user": n,
        "currency": n,
        "balance": {**n, "description": "decimal string in the account currency"},
        "status": {"type": "string", "enum": ["open", "blocked"], "nullable": True},
        "seq": {**i, "description": "account_seq of the last posting folded"},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "paystream read side",
            "version": "1",
            "description": "Query views folded from paystream's event topics by faust. "
            "Eventually consistent with the ledger; a request for a key is routed to the "
            "worker that owns the key's partition.",
        },
        "paths": {
            "/accounts": get(
                "Every open or blocked account held by this worker",
                _json_response(
                    "accounts, sorted by id", {"type": "array", "items": _ref("AccountSummary")}
                ),
            ),
            "/accounts/{id}": get(
                "One account",
                _json_response("the account", _ref("Account")),
                [id_param],
                **{"404": not_found},
            ),
            "/accounts/{id}/transfers": get(
                "The account's recent postings, newest first (at most 50 are kept)",
                _json_response("recent postings", _ref("AccountPostings")),
                [
                    id_param,
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {
                            **i,
                            "minimum": 1,
                            "maximum": LIMIT_MAX,
                            "default": LIMIT_DEFAULT,
                        },
                    },
                ],
                **{"404": not_found, "400": _json_response("bad limit", _ref("Error"))},
            ),
            "/transfers/{id}": get(
                "One transfer's lifecycle",
                _json_response("the transfer", _ref("Transfer")),
                [id_param],
                **{"404": not_found},
            ),
            "/commands": {
                "post": {
                    "summary": "Send one command to the ledger (needs the API token)",
                    "description": "The body is one command in the JSON format of "
                    "`paystream send` (command_id required: a retry with the same id takes "
                    "effect once). 202 means the commands topic has it; its outcome follows at "
                    "/commands/{id}. The token is PAYSTREAM_API_TOKEN, else the contents of "
                    "$PAYSTREAM_HOME/api-token (made by `paystream up`, mode 0600).",
                    "security": [{"bearerAuth": []}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("Command")}},
                    },
                    "responses": {
                        "202": _json_response("on the commands topic", _ref("CommandSent")),
                        "400": _json_response(
                            "not a valid command (error: the producer's code)", _ref("Error")
                        ),
                        "401": _json_response("missing or wrong bearer token", _ref("Error")),
                        "413": _json_response(
                            f"body over {Limits().http_body_bytes_max} bytes", _ref("Error")
                        ),
                        "503": _json_response(
                            "the broker did not acknowledge it (retry: same command_id)",
                            _ref("Error"),
                        ),
                    },
                }
            },
            "/commands/{id}": get(
                "A command's outcome",
                _json_response("the outcome", _ref("Outcome")),
                [id_param],
                **{"404": not_found},
            ),
            "/openapi.json": get(
                "This document", _json_response("OpenAPI 3.0", {"type": "object"})
            ),
            "/health": get(
                "Liveness and per-partition progress", _json_response("health", _ref("Health"))
            ),
        },
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "properties": {"error": s, "message": s, "field": n},
                    "required": ["error"],
                },
                "Command": {
                    "type": "object",
                    "description": "One command of the JSON command format; every value a "
                    "string (amounts too: decimal strings).",
                    "properties": {
                        "type": {"type": "string", "enum": list(COMMAND_TYPES)},
                        **{
                            f: s
                            for f in dict.fromkeys(
                                f for spec in COMMAND_TYPES.values() for f in spec.fields
                            )
                        },
                    },
                    "required": ["type", "command_id"],
                    "example": {
                        "type": "deposit",
                        "command_id": "c2",
                        "account": "acct-1",
                        "amount": "100.00",
                    },
                },
                "CommandSent": {
                    "type": "object",
                    "properties": {
                        "command_id": s,
                        "type": s,
                        "partition": i,
                        "offset": i,
                        "outcome": {**s, "description": "where its outcome will be"},
                    },
                },
                "AccountSummary": {
                    "type": "object",
                    "properties": summary_props,
                    "required": list(summary_props),
                },
                "Account": {
                    "type": "object",
                    "properties": {
                        **summary_props,
                        "held": {
                            **n,
                            "description": "always null: the held (in-flight) amount depends "
                            "on transfer lifecycle events, keyed by transfer id, so held on "
                            "other partitions than the account (`paystream balance` without "
                            "the read side shows it)",
                        },
                        "related": {"type": "object", "additionalProperties": n},
                        "blocked_reason": n,
                    },
                },
                "Posting": {
                    "type": "object",
                    "properties": {
                        "event_id": s,
                        "seq": i,
                        "kind": {
                            "type": "string",
                            "enum": [
                                "deposit",
                                "withdrawal",
                                "transfer_hold",
                                "transfer_post",
                                "transfer_void",
                                "payin",
                                "payout_hold",
                                "payout_post",
                                "payout_void",
                            ],
                        },
                        "amount": {**s, "description": "signed decimal string"},
                        "balance_after": s,
                        "counterparty": s,
                        "transfer_id": n,
                        "command_id": s,
                        "entry_id": s,
                        "ts": {**i, "description": "microseconds since the epoch"},
                    },
                },
                "AccountPostings": {
                    "type": "object",
                    "properties": {
                        "account": s,
                        "seq": i,
                        "postings": {"type": "array", "items": _ref("Posting")},
                    },
                },
                "Transfer": {
                    "type": "object",
                    "properties": {
                        "transfer_id": s,
                        "command_id": s,
                        "from": s,
                        "to": s,
                        "currency": s,
                        "amount": s,
                        "status": {"type": "string", "enum": ["pending", "posted", "voided"]},
                        "reason": n,
                        "ts": {
                            "type": "object",
                            "additionalProperties": i,
                            "description": "status -> µs",
                        },
                    },
                },
                "Outcome": {
                    "type": "object",
                    "properties": {
                        "command_id": s,
                        "command_type": n,
                        "account": n,
                        "status": {
                            "type": "string",
                            "enum": ["accepted", "rejected"],
                            "nullable": True,
                        },
                        "reason": n,
                        "digest": n,
                        "event_id": n,
                        "ts": {**i, "nullable": True},
                        "reused": {
                            "type": "array",
                            "description": "later commands that reused the id with another payload",
                            "items": {"type": "object"},
                        },
                    },
                },
                "Health": {"type": "object"},
            },
        },
    }
