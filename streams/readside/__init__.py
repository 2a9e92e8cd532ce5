"""The read side: faust projections of the ledger's event topics, served as a JSON web API."""
