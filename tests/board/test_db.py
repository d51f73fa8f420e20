"""The database layer: a SAVEPOINT undoes one item's writes and leaves the transaction usable, on
SQLite as on PostgreSQL; SQLite's write connection groups units, never waits for a lock on the
event loop, and checkpoints off the commit path."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from board.config import normalize_database_url
from board.db import Database, Prepared, PreparedWrite, SqliteWriter, savepoint
from board.errors import BadRequest
from board.migrate import upgrade
from board.models import jobs, submitters
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


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


@pytest.mark.parametrize("engine", ["sqlite"])
def test_sqlite_units_queued_together_commit_together_and_fail_alone(database_url):
    """Units queued in one turn of the loop share one transaction; the one that raises is rolled
    back to its savepoint and the others are committed."""

    def add(name: str, fail: bool = False):
        def unit(conn) -> str:
            conn.execute(insert(submitters).values(name=name, created_at=0))
            if fail:
                raise BadRequest(f"{name} failed after writing")
            # every unit of the group sees the same open transaction
            return conn.connection.driver_connection.in_transaction

        return unit

    async def scenario():
        db = Database(database_url)
        try:
            results = await asyncio.gather(
                *(db.transact(add(f"s{n}", fail=n == 2)) for n in range(5)),
                return_exceptions=True,
            )
            names = await db.query(lambda c: set(c.execute(select(submitters.c.name)).scalars()))
            return results, names
        finally:
            await db.dispose()

    results, names = asyncio.run(scenario())
    assert isinstance(results[2], BadRequest)
    assert [r for n, r in enumerate(results) if n != 2] == [True] * 4
    assert names == {"s0", "s1", "s3", "s4"}


@pytest.mark.parametrize("engine", ["sqlite"])
def test_sqlite_write_waits_for_another_process_lock_off_the_loop(database_url):
    """Another process holding the write lock: the unit waits for it, retried by the event
    loop between other work (a wait inside SQLite on the loop would stall it until the busy
    timeout)."""
    other = sqlite3.connect(_sqlite_path(database_url), isolation_level=None)

    async def scenario():
        db = Database(database_url)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO submitters (name, created_at) VALUES ('other', 0)")
            write = asyncio.create_task(
                db.transact(
                    lambda c: c.execute(insert(submitters).values(name="ours", created_at=0))
                )
            )
            # The loop must keep turning while the write waits: had it blocked on the lock, this
            # sleep would not end before the busy timeout, and the write would fail "locked".
            await asyncio.sleep(0.2)
            waited = not write.done()
            other.execute("COMMIT")
            await write
            names = await db.query(lambda c: set(c.execute(select(submitters.c.name)).scalars()))
            return waited, names
        finally:
            await db.dispose()

    try:
        waited, names = asyncio.run(scenario())
    finally:
        other.close()
    assert waited
    assert names == {"other", "ours"}


@pytest.mark.parametrize("engine", ["sqlite"])
def test_sqlite_commits_are_checkpointed_into_the_database_file(database_url):
    """The write connection never checkpoints inside a COMMIT; a thread of its own copies the
    log into the database file soon after (read here without the log: ``immutable``)."""
    path = _sqlite_path(database_url)

    def in_main_file() -> set[str]:
        raw = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
        try:
            return {name for (name,) in raw.execute("SELECT name FROM submitters")}
        finally:
            raw.close()

    async def scenario() -> set[str]:
        db = Database(database_url)
        try:
            await db.transact(
                lambda c: c.execute(insert(submitters).values(name="a", created_at=0))
            )
            await asyncio.sleep(SqliteWriter.CHECKPOINT_EVERY_S)  # the next one is due then
            await db.transact(
                lambda c: c.execute(insert(submitters).values(name="b", created_at=0))
            )
            for _ in range(100):
                if (seen := in_main_file()) == {"a", "b"}:
                    return seen
                await asyncio.sleep(0.05)
            return in_main_file()
        finally:
            await db.dispose()

    assert asyncio.run(scenario()) == {"a", "b"}


def test_sqlite_write_to_an_unusable_database_fails_instead_of_hanging(tmp_path):
    """A file that is not a database: the unit's caller gets the database's error (before the
    write connection settled every unit's answer, an error while opening it left them waiting)."""
    path = tmp_path / "board.db"
    path.write_bytes(b"this is not an SQLite database, " * 200)

    async def scenario() -> BaseException | None:
        db = Database(normalize_database_url(f"sqlite:///{path}"))
        try:
            # the wait_for only guards the test run against the hang it checks for
            await asyncio.wait_for(db.transact(lambda c: c.exec_driver_sql("SELECT 1")), 30)
        except TimeoutError:
            raise
        except Exception as exc:
            return exc
        finally:
            await db.dispose()
        return None

    error = asyncio.run(scenario())
    assert error is not None and "not a database" in str(error), error


def test_a_prepared_statement_runs_on_the_driver_and_fails_as_sqlalchemy_would(database_url):
    """``Prepared`` skips SQLAlchemy's execution layer on both engines; a refused write still
    raises SQLAlchemy's ``IntegrityError`` (what ``submit`` catches), undoes only its unit, and
    the connection stays usable."""
    add = PreparedWrite(insert(submitters))
    names = Prepared(select(submitters.c.name, submitters.c.id).order_by(submitters.c.id))

    async def scenario() -> list[tuple]:
        db = Database(database_url)
        try:
            await db.transact(lambda conn: add.execute(conn, {"name": "ada", "created_at": 0.0}))
            with pytest.raises(IntegrityError):
                await db.transact(
                    lambda conn: add.execute(conn, {"name": "ada", "created_at": 1.0})
                )
            await db.transact(lambda conn: add.execute(conn, {"name": "bo", "created_at": 2.0}))
            rows = await db.lookup(lambda conn: names.execute(conn).fetchall())
            return [tuple(row) for row in rows]
        finally:
            await db.dispose()

    rows = asyncio.run(scenario())
    assert [name for name, _id in rows] == ["ada", "bo"]
    (prepared,) = add._by_columns.values()
    dialect = "sqlite" if database_url.startswith("sqlite") else "postgresql"
    assert prepared._compiled[dialect] is not False, "it ran through SQLAlchemy instead"
    assert names._compiled[dialect] is not False


@pytest.mark.parametrize("engine", ["postgres"])
def test_postgres_claims_walk_the_queue_in_order_before_statistics_catch_up(database_url):
    """Right after a bulk submit PostgreSQL's statistics still say the queue is empty (autovacuum
    analyzes up to a minute later). The claim must still walk the claim-order index to the first
    fit, not read and sort the whole queue on every claim."""
    from board.claims import WALK_THE_QUEUE_IN_ORDER, _first_unlocked
    from board.matching import skills_of
    from wire import Capabilities

    queued = 3000
    now = time.time()

    def fill(conn) -> None:
        owner = conn.execute(insert(submitters).values(name="bulk", created_at=now))
        rows = [
            {"id": f"job{n:05d}", "submitter_id": owner.inserted_primary_key[0], "title": "",
             "state": "queued", "priority": 0, "compilation": {}, "requirements": {},
             "req_codec": "h264", "req_encoder": "any", "queued_at": now + n,
             "created_at": now + n, "updated_at": now + n}
            for n in range(queued)
        ]  # fmt: skip
        conn.execute(insert(jobs), rows)

    claim = _first_unlocked(skills_of(Capabilities(encoders=["libx264"])), frozenset())
    binds = {"now": now + queued, "grace_cut": now + queued}

    def plan(conn) -> list[str]:
        WALK_THE_QUEUE_IN_ORDER.execute(conn)
        first = claim.execute(conn, binds).fetchone()
        assert first[0] == "job00000"  # the oldest
        sql, values = claim.bound(conn.dialect, binds)
        return list(conn.exec_driver_sql("EXPLAIN " + sql, values).scalars())

    async def scenario() -> list[str]:
        db = Database(database_url)
        try:
            await db.transact(fill)
            return await db.transact(plan)
        finally:
            await db.dispose()

    lines = asyncio.run(scenario())
    text = "\n".join(lines)
    assert "Index Scan using ix_jobs_claim_order on jobs" in text, text
    assert "Sort" not in text and "Bitmap" not in text, text
