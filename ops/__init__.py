"""Operations: the embedded Kafka broker, topics, processes and the warehouse schema."""
