"""The chaos soak (``make soak``, part of ``make chaos``): a seeded run under kill -9, verified.

One run, from nothing:

1. A private stack in a temporary home on free ports (embedded broker, ledger workers,
   warehouse, read side, detector), brought up by ``bootstrap.up`` as ``paystream up`` does.
2. The phased ``Workload`` (opens, deposits, blocks, relations, two transfer phases,
   withdrawals, unblocks) plus what the soak adds: exact duplicates and reused command ids
   among the transfers, malformed amounts, lines the producer refuses (dead letters),
   unrelations, and planted related chains and cycles in phases of their own (each hop one
   phase later, so their order in time is certain). Every phase is order independent; the
   soak waits for the ledger between phases, never for the slower downstream consumers.
3. Meanwhile a chaos thread runs a seeded schedule: ``kill -9`` of random processes (ledger
   workers, warehouse sink, read side, detector) and one broker restart; a killed process
   is started again after a seeded pause, and a process that exits on its own is restarted
   too (and reported). The supervisor does not restart anything by itself.
4. When the schedule is done and everything is drained (every consumer group caught up),
   the results are checked against an independent sequential model (``paystream.oracle``)
   and the detector's definition (``streams.detector.bruteforce``), and a one-screen
   verdict is printed and written as JSON.

``python -m tests.soak --help`` (``make soak``) for the knobs; exit status 0 only if every check passed.
"""
