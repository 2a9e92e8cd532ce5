"""Stream processing: the pure ledger core (``streams.ledger``) and its Kafka adapters."""
