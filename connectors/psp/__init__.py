"""PSP connectors and the executor (docs/payments.md, "The executor").

* ``base``: the connector interface (``PspConnector``) and the values it returns;
* ``errors``: this package's exceptions;
* ``limits``: every bound of the connectors and the executor (``ExecutorLimits``);
* ``config``: ``$PAYSTREAM_HOME/psps.toml``, one ``[[psp]]`` table per PSP;
* ``registry``: connectors registered under the ``paystream.psp_connectors`` entry points;
* ``routing``: the pure ranking of eligible PSPs (priority, then cost);
* ``simulator``: the connector of the PSP simulator (``pspsim``) over httpx;
* ``offsets``: per-partition commit points when requests complete out of order;
* ``executor``: the process that turns ``PspRequest`` records into ``PspResult`` records.
"""
