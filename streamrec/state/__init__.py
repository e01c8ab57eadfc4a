"""The database edge: tables, migrations, the store, and restoring stream state.

- ``schema``: SQLAlchemy tables (migrations in ``migrations/``).
- ``store``: ``Store``: one transaction per batch (users, applied ids, outbox, offsets),
  generation fences, outbox reads.
- ``restore``: replays a claimed partition's latest applied events into the ranking's stream
  state.
- ``batch``: what one batch writes, as plain values.
- ``memory``: an in-memory stand-in for the store's reads.

Knows nothing of ranking or Kafka.
"""
