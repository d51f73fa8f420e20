"""The board's database: one way to change it (``transact``), one way to read it (``query``).

A *unit of work* is a plain function of a SQLAlchemy Core ``Connection``. ``transact(fn)`` runs
it in one transaction that is committed when it returns and rolled back when it raises;
``query(fn)`` runs it on a read-only snapshot. Services are written once, in plain synchronous
Core, and never hold a transaction open across an ``await`` of their own. Callers never ask
which engine they are on; what differs is decided here, when the engines are made:

- **SQLite** (the embedded default) runs in WAL mode, on Python's own driver, each unit whole on
  a thread of the database's: writes on one thread and one connection, so units of work queue
  for it, each transaction beginning with ``BEGIN IMMEDIATE`` (it holds the write lock from its
  first read, so a claim that reads a job as free and then takes it cannot race another writer,
  another process included); reads on a few threads with connections of their own, which never
  wait for the writer. (Through aiosqlite every statement of a unit went to its thread and back
  through the event loop, and the one write connection stayed held for those round trips: under
  a fleet's load the writer's queue grew without bound. BENCHMARKS.md, "Fleet".)
- **PostgreSQL** has one pooled engine on asyncpg; units run through ``AsyncConnection.run_sync``.
  Claims lock the row they take with ``FOR UPDATE SKIP LOCKED``, which SQLAlchemy's SQLite
  dialect leaves out (``BEGIN IMMEDIATE`` already made the writer alone there), so the claim
  query is one statement for both engines.

Values one engine would store and the other refuse (text with NUL, integers past 64 bits) are
refused on both, before the statement runs, as ``BadRequest``; a value the database itself
refuses is a ``BadRequest`` with its reason. See docs/architecture.md ("Storage of state").
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from sqlalchemy import Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from board.errors import BadRequest

INT64_MAX = 2**63 - 1
SQLITE_READERS = 4
T = TypeVar("T")


def _to_json(value: Any) -> str:
    """JSON columns are written with msgspec (several times faster than the stdlib's encoder: a
    batch submit writes a compilation per job)."""
    return msgspec.json.encode(value).decode()


def _from_json(text: str | bytes) -> Any:
    """JSON columns are read with msgspec; a row the stdlib's encoder wrote before may hold
    ``NaN`` or ``Infinity``, which only the stdlib reads."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


JSON_CODEC = {"json_serializer": _to_json, "json_deserializer": _from_json}


def _unstorable(value: object) -> str | None:
    """Why ``value`` (a statement parameter, or a collection of them) cannot be stored."""
    if isinstance(value, str):
        if "\x00" in value:
            return "text with a NUL character (\\u0000) cannot be stored; remove it"
    elif isinstance(value, bool):
        return None
    elif isinstance(value, int):
        if not -INT64_MAX - 1 <= value <= INT64_MAX:
            return f"the number {value} is too large to store (the limit is {INT64_MAX})"
    elif isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            why = _unstorable(item)
            if why:
                return why
    return None


def _refuse_unstorable_values(engine: Engine) -> None:
    @event.listens_for(engine, "before_cursor_execute")
    def _check(conn, cursor, statement, parameters, context, executemany) -> None:
        why = _unstorable(parameters)
        if why:
            raise BadRequest(why)


@contextmanager
def refused_values_are_bad_requests():
    """A value the database refuses (SQLSTATE class 22, "data exception": out of range, bad
    encoding…) is the caller's fault: BadRequest with the database's reason."""
    try:
        yield
    except DBAPIError as exc:
        state = getattr(exc.orig, "sqlstate", None)
        if isinstance(state, str) and state.startswith("22"):
            raise BadRequest(f"the board's database refused a value: {exc.orig}") from None
        raise


def _sqlite_pragmas(engine: Engine, begin: str) -> None:
    """WAL and friends on every connection, and transactions that start with ``begin``:
    SQLAlchemy's documented way to choose the BEGIN is to take transaction control from the
    driver on connect and emit it on the engine's "begin" event (savepoints then work too)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",  # WAL: a commit survives a crash of the process, not of the OS
            "busy_timeout=30000",  # another process (a `board` command) holds the write lock
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql(begin)

    _refuse_unstorable_values(engine)


def _sqlite_engine(url: str, *, begin: str, connections: int) -> Engine:
    """A stdlib-sqlite3 engine whose transactions start with ``begin``, its connections usable
    from the database's threads."""
    engine = create_engine(
        url.replace("sqlite+aiosqlite://", "sqlite://"),
        pool_size=connections,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"timeout": 30, "check_same_thread": False},
        **JSON_CODEC,
    )
    _sqlite_pragmas(engine, begin)
    return engine


def _committed(conn: Connection, fn: Callable[[Connection], T]) -> T:
    with conn.begin():
        return fn(conn)


class Database:
    """The board's connections. ``transact(fn)`` for units of work that change state,
    ``query(fn)`` for reads; ``fn`` is called with a Core ``Connection``."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self._sqlite = url.startswith("sqlite")
        if self._sqlite:
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", connections=1)
            self._reader = _sqlite_engine(url, begin="BEGIN", connections=SQLITE_READERS)
            self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="db-writer")
            self._thread_connection = threading.local()  # each database thread's connection
            self._opened: list[Connection] = []
            self._read_threads = ThreadPoolExecutor(SQLITE_READERS, thread_name_prefix="db-reader")
        else:
            self._engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=300, **JSON_CODEC
            )
            _refuse_unstorable_values(self._engine.sync_engine)

    async def transact(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` as one atomic unit of work: all of it is committed, or none of
        it (any exception). ``fn`` must not block on anything but the database; side effects
        outside the database belong after the await."""
        with refused_values_are_bad_requests():
            if self._sqlite:
                return await self._on_thread(self._write_thread, self._writer, fn)
            async with self._engine.connect() as conn:
                return await conn.run_sync(_committed, fn)

    async def query(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on a read-only snapshot of the database."""
        with refused_values_are_bad_requests():
            if self._sqlite:
                return await self._on_thread(self._read_threads, self._reader, fn)
            async with self._engine.connect() as conn:
                return await conn.run_sync(_committed, fn)

    async def _on_thread(self, threads: ThreadPoolExecutor, engine: Engine, fn: Callable) -> T:
        """``fn`` in a transaction on one of ``threads``, on that thread's own connection (kept
        for the thread's life: a pool checkout per unit cost as much as a small unit)."""

        def unit():
            conn = getattr(self._thread_connection, "conn", None)
            if conn is None or conn.closed or conn.invalidated:
                conn = self._thread_connection.conn = engine.connect()
                self._opened.append(conn)
            return _committed(conn, fn)

        return await asyncio.get_running_loop().run_in_executor(threads, unit)

    async def ping(self) -> None:
        """Raise unless the database answers."""
        await self.query(lambda conn: conn.execute(text("SELECT 1")).scalar())

    async def dispose(self) -> None:
        if self._sqlite:
            for threads in (self._write_thread, self._read_threads):
                threads.shutdown(wait=True)
            for conn in self._opened:
                conn.close()
            self._writer.dispose()
            self._reader.dispose()
        else:
            await self._engine.dispose()


def insert_or_ignore(conn: Connection, table: Table) -> Insert:
    """An INSERT into ``table`` that does nothing where a unique key is taken already."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def walk_indexes_in_order(conn: Connection) -> None:
    """Inside a claim's transaction: let PostgreSQL read the claim-order index in order rather
    than plan a bitmap scan and sort of the whole queue. Its planner estimates the queue from
    statistics that lag a bulk submit by up to a minute (autovacuum's analyze): believing a few
    jobs are queued, it reads and sorts all of them per claim (O(queue)), where the index walk
    stops at the first fit. SQLite has no bitmap scans: nothing to say there."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")


def migration_engine(url: str) -> AsyncEngine:
    """An engine for alembic (async, as ``migrations/env.py`` runs it): no pool, and on SQLite
    the same pragmas as the app."""
    engine = create_async_engine(url, poolclass=NullPool, **JSON_CODEC)
    if url.startswith("sqlite"):
        _sqlite_pragmas(engine.sync_engine, "BEGIN IMMEDIATE")
    return engine
