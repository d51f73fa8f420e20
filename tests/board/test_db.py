"""The database layer under the batch submit: a SAVEPOINT undoes one item's writes and leaves
the transaction usable, on SQLite (BEGIN IMMEDIATE through aiosqlite) as on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from board.config import normalize_database_url
from board.db import Database
from board.errors import BadRequest
from board.migrate import upgrade
from board.models import submitters
from tests.harness import create_pg_database, drop_pg_database


@pytest.fixture
def database_url(engine, tmp_path) -> Iterator[str]:
    """A migrated, empty database on ``engine``."""
    name = None
    if engine == "sqlite":
        url = normalize_database_url(f"sqlite:///{tmp_path}/board.db")
    else:
        raw, name = create_pg_database()
        url = normalize_database_url(raw)
    upgrade(url)
    yield url
    if name:
        drop_pg_database(name)


def test_a_failed_item_rolls_back_to_its_savepoint_only(database_url):
    async def scenario() -> set[str]:
        db = Database(database_url)
        try:
            async with db.write() as conn:
                await conn.execute(insert(submitters).values(name="first", created_at=0))
                with pytest.raises(BadRequest):
                    async with conn.begin_nested():
                        await conn.execute(insert(submitters).values(name="undone", created_at=0))
                        raise BadRequest("this item failed after writing")
                with pytest.raises(IntegrityError):  # a database error inside the savepoint
                    async with conn.begin_nested():
                        await conn.execute(insert(submitters).values(name="first", created_at=0))
                await conn.execute(insert(submitters).values(name="after", created_at=0))
            async with db.read() as conn:
                return set((await conn.execute(select(submitters.c.name))).scalars())
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == {"first", "after"}
