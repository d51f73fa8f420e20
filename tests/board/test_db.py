"""The database layer under the batch submit: a SAVEPOINT undoes one item's writes and leaves
the transaction usable, on SQLite (BEGIN IMMEDIATE through aiosqlite) as on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from board.config import normalize_database_url
from board.db import Database, savepoint
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


def test_savepoint_in_a_unit_of_work_undoes_one_item_only(database_url):
    """``board.db.savepoint``, as the batch submit uses it in ``transact``: plain SQL on the
    SQLite writer's driver, ``begin_nested`` on PostgreSQL; alone or grouped with other units."""

    def unit(conn, names: tuple[str, str]) -> None:
        first, doomed = names
        conn.execute(insert(submitters).values(name=first, created_at=0))
        with pytest.raises(BadRequest), savepoint(conn):
            conn.execute(insert(submitters).values(name=doomed, created_at=0))
            raise BadRequest("this item failed after writing")
        with pytest.raises(IntegrityError), savepoint(conn):  # a database error inside it
            conn.execute(insert(submitters).values(name=first, created_at=0))
        with savepoint(conn):
            conn.execute(insert(submitters).values(name=first + "-kept", created_at=0))

    async def scenario() -> set[str]:
        db = Database(database_url)
        try:
            await db.transact(lambda conn: unit(conn, ("alone", "undone-1")))
            await asyncio.gather(  # queued together: the writer may commit them as one group
                *(db.transact(lambda conn, n=n: unit(conn, (f"g{n}", f"undone-g{n}")))
                  for n in range(4))
            )  # fmt: skip
            return set(await db.query(lambda conn: conn.execute(select(submitters.c.name))
                                      .scalars().all()))  # fmt: skip
        finally:
            await db.dispose()

    expected = {"alone", "alone-kept"} | {f"g{n}{s}" for n in range(4) for s in ("", "-kept")}
    assert asyncio.run(scenario()) == expected
