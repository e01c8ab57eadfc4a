"""Alembic environment: runs on the worker's connection, or on ``-x url=...`` from the CLI."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from streamrec.state.schema import metadata

config = context.config
target_metadata = metadata


def _run(connection: object) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url", "sqlite:///streamrec.db")
    with create_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
