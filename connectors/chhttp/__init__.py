"""ClickHouse's HTTP interface in front of the embedded chDB warehouse.

Only one process may open a chDB path, so the warehouse process owns it (``executor``) and
serves the part of ClickHouse's HTTP protocol that clickhouse-connect and curl use
(``server``, on aiohttp), so analysts and the CLI query with standard clients while the sink
writes in-process.

One thing per module:

* ``errors``: ClickHouse's error codes and ``QueryError``;
* ``lexer``: tokens, as ClickHouse's lexer sees them (strings, heredocs, nested comments);
* ``gate``: the read-only gate, ``classify``;
* ``statements``: rewriting a statement and its request's settings for chDB, ``prepare``;
* ``policy``: what an analyst query runs with (``readonly = 1`` last, allowed settings);
* ``executor``: the chDB engine, ``ChdbExecutor``;
* ``encodings``: HTTP content types and content encodings;
* ``server``: the HTTP front, ``serve``.

The front is read-only by default: the gate refuses anything but one read statement, and
the engine runs what it allows with ``readonly = 1`` (no files, no network, no settings
beyond an allow-list), should the gate ever be fooled.
"""

from connectors.chhttp.errors import QueryError
from connectors.chhttp.executor import ChdbExecutor, ExecResult
from connectors.chhttp.gate import Classification, classify
from connectors.chhttp.lexer import tokens
from connectors.chhttp.policy import ANALYST_SETTINGS, analyst_settings
from connectors.chhttp.server import Server, serve
from connectors.chhttp.statements import prepare

__all__ = [
    "ANALYST_SETTINGS",
    "ChdbExecutor",
    "Classification",
    "ExecResult",
    "QueryError",
    "Server",
    "analyst_settings",
    "classify",
    "prepare",
    "serve",
    "tokens",
]
