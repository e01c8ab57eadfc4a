"""The Kafka edge: topic contracts, clients, the embedded broker, traffic sources.

- ``codec``: decode and validate input and catalog records, encode outputs, dead-letter headers
  (pure: no sockets).
- ``clients``: kafka-python consumers, producers and topic creation with our defaults.
- ``broker``: the embedded Kafka-compatible broker (tansu) for tests and the demo.
- ``simulate``, ``traffic``: synthetic events and writing them to a topic or a file.

Knows nothing of ranking or the database.
"""
