"""The database layer: one way to change the database (``transact``), one way to read it
(``query``), the same on SQLite and PostgreSQL. A unit of work is all or nothing, a savepoint
undoes one item of it, values one engine would refuse are refused on both, and a write waiting
for another process's lock never stalls the event loop."""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from board.config import normalize_database_url
from board.errors import BadRequest
from board.infra.db import Database, walk_indexes_in_order
from board.infra.migrate import upgrade
from board.infra.models import jobs, media, submitters
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


def _run(database_url: str, scenario):
    """Run ``scenario(db)`` on a fresh ``Database`` and dispose of it."""

    async def main():
        db = Database(database_url)
        try:
            return await scenario(db)
        finally:
            await db.dispose()

    return asyncio.run(main())


def _names(conn) -> set[str]:
    return set(conn.execute(select(submitters.c.name)).scalars())


def test_a_unit_of_work_is_committed_whole_or_not_at_all(database_url):
    def half_then_fail(conn) -> None:
        conn.execute(insert(submitters).values(name="half", created_at=0))
        raise BadRequest("failed after writing")

    async def scenario(db: Database) -> set[str]:
        await db.transact(lambda c: c.execute(insert(submitters).values(name="kept", created_at=0)))
        with pytest.raises(BadRequest):
            await db.transact(half_then_fail)
        return await db.query(_names)

    assert _run(database_url, scenario) == {"kept"}


def test_a_savepoint_undoes_one_item_and_the_unit_goes_on(database_url):
    """``begin_nested`` inside a unit, as the batch submit uses it: a failed item (a service
    error or a database error) leaves no row, the rest of the unit commits; concurrent units
    each get theirs."""

    def unit(conn, first: str, doomed: str) -> None:
        conn.execute(insert(submitters).values(name=first, created_at=0))
        with pytest.raises(BadRequest), conn.begin_nested():
            conn.execute(insert(submitters).values(name=doomed, created_at=0))
            raise BadRequest("this item failed after writing")
        with pytest.raises(IntegrityError), conn.begin_nested():  # a database error inside it
            conn.execute(insert(submitters).values(name=first, created_at=0))
        with conn.begin_nested():
            conn.execute(insert(submitters).values(name=first + "-kept", created_at=0))

    async def scenario(db: Database) -> set[str]:
        await asyncio.gather(
            *(db.transact(lambda c, n=n: unit(c, f"u{n}", f"undone{n}")) for n in range(4))
        )
        return await db.query(_names)

    assert _run(database_url, scenario) == {f"u{n}{s}" for n in range(4) for s in ("", "-kept")}


@pytest.mark.parametrize(
    "value, why",
    [("nul\x00inside", "NUL character"), (2**64, "too large to store")],
)
def test_a_value_one_engine_cannot_store_is_refused_on_both(database_url, value, why):
    async def scenario(db: Database) -> None:
        await db.transact(
            lambda c: c.execute(
                insert(submitters).values(name="x", max_width=value, created_at=0)
                if isinstance(value, int)
                else insert(submitters).values(name=value, created_at=0)
            )
        )

    with pytest.raises(BadRequest, match=why):
        _run(database_url, scenario)


def _sqlite_path(url: str) -> str:
    return url.split(":///", 1)[1]


@pytest.mark.parametrize("engine", ["sqlite"])
def test_a_sqlite_write_waits_for_another_process_without_stalling_the_loop(database_url):
    """Another process holds the write lock: the unit waits for it (up to the busy timeout) in
    the driver's thread while the event loop goes on serving, reads included."""
    other = sqlite3.connect(_sqlite_path(database_url), isolation_level=None)

    async def scenario(db: Database):
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO submitters (name, created_at) VALUES ('other', 0)")
        write = asyncio.create_task(
            db.transact(lambda c: c.execute(insert(submitters).values(name="ours", created_at=0)))
        )
        started = time.monotonic()
        await asyncio.sleep(0.3)
        read_meanwhile = await db.query(_names)  # a reader is not held up by the writer
        loop_turned_in = time.monotonic() - started
        waited = not write.done()
        other.execute("COMMIT")
        await write
        return waited, loop_turned_in, read_meanwhile, await db.query(_names)

    try:
        waited, turned, meanwhile, names = _run(database_url, scenario)
    finally:
        other.close()
    assert waited
    assert turned < 5, "the event loop stalled behind the lock"
    assert meanwhile == set()
    assert names == {"other", "ours"}


def test_a_sqlite_write_to_an_unusable_database_fails_instead_of_hanging(tmp_path):
    """A file that is not a database: the caller gets the database's error."""
    path = tmp_path / "board.db"
    path.write_bytes(b"this is not an SQLite database, " * 200)

    async def scenario(db: Database) -> BaseException | None:
        try:  # the wait_for only guards the test run against the hang it checks for
            await asyncio.wait_for(db.transact(lambda c: c.exec_driver_sql("SELECT 1")), 30)
        except TimeoutError:
            raise
        except Exception as exc:
            return exc
        return None

    error = _run(normalize_database_url(f"sqlite:///{path}"), scenario)
    assert error is not None and "not a database" in str(error), error


@pytest.mark.parametrize("engine", ["postgres"])
def test_postgres_claims_walk_the_queue_in_order_before_statistics_catch_up(database_url):
    """Right after a bulk submit PostgreSQL's statistics still say the queue is empty (autovacuum
    analyzes up to a minute later). The claim query must still walk the claim-order index to the
    first fit, not read and sort the whole queue on every claim."""
    from board.domain.claims import _candidates
    from board.domain.matching import skills_of
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

    query = (
        _candidates(skills_of(Capabilities(encoders=["libx264"])), frozenset())
        .limit(1)
        .with_for_update(skip_locked=True, of=jobs)
    )
    binds = {"now": now + queued, "grace_cut": now + queued}

    def plan(conn) -> list[str]:
        walk_indexes_in_order(conn)
        assert conn.execute(query, binds).first().id == "job00000"  # the oldest
        sql = query.params(**binds).compile(
            dialect=conn.dialect, compile_kwargs={"literal_binds": True}
        )
        return list(conn.exec_driver_sql(f"EXPLAIN {sql}").scalars())

    async def scenario(db: Database) -> list[str]:
        await db.transact(fill)
        return await db.transact(plan)

    text = "\n".join(_run(database_url, scenario))
    assert "Index Scan using ix_jobs_claim_order on jobs" in text, text
    assert "Sort" not in text and "Bitmap" not in text, text


@pytest.mark.parametrize("engine", ["sqlite"])
def test_json_written_by_the_stdlib_encoder_still_reads(database_url):
    """JSON columns are written and read with msgspec; a row written before that by Python's
    json module may hold NaN, which msgspec does not read: it is read as the stdlib reads it."""
    path = database_url.split(":///", 1)[1]
    with sqlite3.connect(path) as raw:
        raw.execute("INSERT INTO submitters (id, name, created_at) VALUES (1, 'old', 0)")
        raw.execute(
            "INSERT INTO media (id, submitter_id, sha256, size, filename, storage_key, probe,"
            " created_at) VALUES ('m_old', 1, 'x', 1, 'a.mp4', 'media/x', ?, 0)",
            (json.dumps({"duration": float("nan"), "has_video": True}),),
        )

    async def scenario(db: Database):
        read = select(media.c.probe).where(media.c.id == "m_old")
        old = await db.query(lambda conn: conn.execute(read).scalar_one())
        new = {"duration": 2.5, "has_video": True, "streams": [{"codec": "h264"}]}
        write = media.update().where(media.c.id == "m_old").values(probe=new)
        await db.transact(lambda conn: conn.execute(write))
        stored = await db.query(lambda conn: conn.exec_driver_sql(
            "SELECT probe FROM media WHERE id = 'm_old'").scalar_one())  # fmt: skip
        return old, await db.query(lambda conn: conn.execute(read).scalar_one()), stored

    old, new, stored = _run(database_url, scenario)
    assert math.isnan(old["duration"]) and old["has_video"] is True
    assert new == {"duration": 2.5, "has_video": True, "streams": [{"codec": "h264"}]}
    assert json.loads(stored) == new  # what msgspec wrote is plain JSON to any reader
