"""Alembic environment: runs migrations on the board's async engines (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from board.config import normalize_database_url
from board.infra.db import migration_engine
from board.infra.models import metadata

config = context.config
target_metadata = metadata


def _database_url() -> str:
    """``alembic -x database_url=postgresql://… upgrade head`` wins over the configured URL;
    either may be written as people paste it (postgres://, sqlite:///…)."""
    given = context.get_x_argument(as_dictionary=True).get("database_url")
    return normalize_database_url(given or config.get_main_option("sqlalchemy.url"))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite can't ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = migration_engine(_database_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connectable = config.attributes.get("connection")
    if connectable is not None:  # called from code that already holds a connection
        _run(connectable)
    else:
        asyncio.run(_run_async())
