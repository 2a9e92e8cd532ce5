"""Getting commands into paystream: the JSON command format and the Kafka producer."""
