"""Database engines: one place that knows SQLite from PostgreSQL.

Services hand the database *units of work*: plain functions of a SQLAlchemy ``Connection``
(``transact(fn)`` for changes, ``query(fn)`` for reads), never holding a transaction open across
the event loop.

SQLite (the embedded default) runs in WAL mode with one write connection per process, driven
from the event loop's thread (``SqliteWriter``). It takes the database lock up front with ``BEGIN
IMMEDIATE`` (so two claimers never both read a job as free and then race to update it) and
*commits in groups*: every unit of work queued in one turn of the event loop runs in one
transaction, each in its own SAVEPOINT (a failing one is rolled back alone), then one COMMIT
makes them all durable. Under load that turns hundreds of small transactions a second into a few
dozen, and no lock is ever held while the event loop does something else. When another board
process holds the lock, the group waits for it on a thread, never on the loop. Readers run in a
small thread pool on their own connections and never block the writer.

PostgreSQL uses one pooled engine (units of work run through ``run_sync`` on asyncpg) and
``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Float, bindparam, create_engine, event, literal, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from board.errors import BadRequest

INT64_MAX = 2**63 - 1
GROUP_MAX = 128  # units of work committed together at most
T = TypeVar("T")
log = logging.getLogger("board.db")


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
    """Refuse, the same way on both engines, values only one of them would refuse later (and
    then with a driver error): PostgreSQL stores no NUL in text, neither engine an integer past
    64 bits. Raised as a 400 before the statement runs."""

    @event.listens_for(engine, "before_cursor_execute")
    def _check(conn, cursor, statement, parameters, context, executemany) -> None:
        why = _unstorable(parameters)
        if why:
            raise BadRequest(why)


class Prepared:
    """A hot statement, compiled once per dialect and then run straight on the driver's cursor.

    ``Connection.execute`` costs about 25 µs of Python per statement (cache key, parameter and
    result processing, events), more than SQLite takes to run an indexed statement (2–3 µs,
    measured): on the paths every cycle of every farmhand takes (its token, claim, upload,
    heartbeat, complete) it was a third of the board's CPU. On PostgreSQL the statement goes to
    SQLAlchemy's asyncpg adapter cursor, which keeps asyncpg's prepared statement cache and the
    transaction it began. The driver's errors are raised as SQLAlchemy's (``IntegrityError``…),
    and a lost connection is invalidated, as ``Connection.execute`` would do. ``execute``
    answers a cursor: it has ``fetchone``, ``fetchall`` and ``rowcount``, and its rows unpack as
    tuples.

    Only for statements whose values need no conversion on the way in or out (text, numbers;
    JSON read as text with ``type_coerce``) and that name every column they write (no Python-side
    defaults): checked when it is first compiled, so a statement that does not fit fails its
    first test on SQLite rather than storing something different. (On PostgreSQL a statement
    that does not fit runs through SQLAlchemy: its driver converts some types itself.)
    """

    __slots__ = ("_compiled", "statement", "strict")

    def __init__(self, statement, *, strict: bool = True) -> None:
        """``strict=False``: a statement that does not fit runs through SQLAlchemy instead."""
        self.statement = statement
        self.strict = strict
        self._compiled: dict[str, tuple[str, tuple[str, ...], dict[str, Any]] | bool] = {}

    def _compile(self, dialect) -> tuple[str, tuple[str, ...], dict[str, Any]] | bool:
        compiled = self.statement.compile(dialect=dialect)
        if why := self._unfit(compiled, dialect):
            if self.strict and dialect.name == "sqlite":
                raise TypeError(f"{why}: {compiled.string}")
            return False
        names = tuple(compiled.positiontup or ())
        defaults = {
            name: compiled.binds[name].value
            for name in names
            if compiled.binds[name].value is not None or not compiled.binds[name].required
        }
        return compiled.string, names, defaults

    @staticmethod
    def _unfit(compiled, dialect) -> str | None:
        if compiled.insert_prefetch or compiled.update_prefetch:
            return "not preparable: it has Python-side column defaults"
        if "POSTCOMPILE" in compiled.string:
            return "not preparable: an IN list expands when it runs (use among())"
        if not compiled.positional and compiled.binds:
            return "not preparable: the driver takes named parameters"
        for name in compiled.positiontup or ():
            kind = compiled.binds[name].type
            # Float's only conversion (int → float) is what a REAL column's affinity does anyway
            exact = isinstance(kind, Float) and not kind.asdecimal and dialect.name == "sqlite"
            if not exact and kind._cached_bind_processor(dialect) is not None:
                return f"not preparable: parameter {name} needs conversion"
        for column in compiled._result_columns:
            kind = column[3]
            if isinstance(kind, Float) and not kind.asdecimal:
                continue  # a float column reads as a float on both drivers
            if kind._cached_result_processor(dialect, None) is not None:
                return f"not preparable: column {column[0]} needs conversion"
        return None

    def bound(self, dialect, params: dict[str, Any]) -> tuple[str, tuple] | None:
        """The SQL for ``dialect`` and its positional values for ``params``; None when this
        statement runs through SQLAlchemy there."""
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = self._compile(dialect)
        if compiled is False:
            return None
        sql, names, defaults = compiled
        return sql, tuple(params[n] if n in params else defaults[n] for n in names)

    def execute(self, conn: Connection, params: dict[str, Any] | None = None) -> Any:
        params = params or {}
        dialect = conn.dialect
        bound = self.bound(dialect, params)
        if bound is None:
            return conn.execute(self.statement, params)
        sql, values = bound
        if why := _unstorable(values):  # the event listener does not see the driver's cursor
            raise BadRequest(why)
        # the DBAPI connection: sqlite3's own, aiosqlite's adapter inside ``run_sync``, or the
        # asyncpg adapter
        dbapi_conn = conn.connection.dbapi_connection
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute(sql, values)
        except dialect.loaded_dbapi.Error as exc:
            lost = dialect.is_disconnect(exc, dbapi_conn, cursor)
            if lost:
                conn.invalidate(exc)
            raise DBAPIError.instance(
                sql, values, exc, dialect.loaded_dbapi.Error, connection_invalidated=lost,
                dialect=dialect,
            ) from exc  # fmt: skip
        return cursor


class PreparedWrite:
    """An INSERT, or an UPDATE with its WHERE, whose written columns are the keys of each call's
    ``values``: one ``Prepared`` per set of columns, compiled on first use (one that writes a
    column needing conversion, JSON say, runs through SQLAlchemy)."""

    __slots__ = ("_by_columns", "statement")

    def __init__(self, statement) -> None:
        self.statement = statement
        self._by_columns: dict[tuple[str, ...], Prepared] = {}

    def execute(
        self, conn: Connection, values: dict[str, Any], where: dict[str, Any] | None = None
    ) -> Any:
        columns = tuple(values)
        prepared = self._by_columns.get(columns)
        if prepared is None:  # bind names differ from column names: those are SQLAlchemy's own
            binds = {column: bindparam(f"v_{column}") for column in columns}
            prepared = Prepared(self.statement.values(binds), strict=False)
            self._by_columns[columns] = prepared
        params = {f"v_{column}": value for column, value in values.items()}
        if where:
            params.update(where)
        return prepared.execute(conn, params)


def among(column, values) -> Any:
    """``column IN (values)`` with one placeholder per value (a ``Prepared`` statement cannot
    expand a list when it runs)."""
    return column.in_([literal(value) for value in values])


@contextmanager
def savepoint(conn: Connection):
    """A savepoint inside a unit of work: what the block wrote is undone if it raises. On SQLite
    it is plain SQL on the driver (SQLAlchemy's nested transaction cost a batch submit more
    Python than the inserts it wraps); elsewhere ``begin_nested``."""
    raw = conn.connection.driver_connection
    if not isinstance(raw, sqlite3.Connection):  # PostgreSQL, or SQLite through aiosqlite
        with conn.begin_nested():
            yield
        return
    raw.execute("SAVEPOINT item")
    try:
        yield
    except BaseException:
        raw.execute("ROLLBACK TO SAVEPOINT item")
        raw.execute("RELEASE SAVEPOINT item")
        raise
    raw.execute("RELEASE SAVEPOINT item")


def _refused_value(exc: DBAPIError) -> str | None:
    """The database's reason when it refused a value we sent (SQLSTATE class 22, "data
    exception": out of range, bad encoding...), else None."""
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and state.startswith("22"):
        return str(exc.orig)
    return None


@contextmanager
def refused_values_are_bad_requests():
    """A value the database refuses is the caller's fault: BadRequest with the database's
    reason (every other database error passes through)."""
    try:
        yield
    except DBAPIError as exc:
        if why := _refused_value(exc):
            raise BadRequest(f"the board's database refused a value: {why}") from None
        raise


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"timeout": 30},
    )

    _sqlite_pragmas(engine.sync_engine, begin)
    return engine


def _sqlite_pragmas(engine: Engine, begin: str | None) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control away from the driver so we can say BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    if begin is not None:

        @event.listens_for(engine, "begin")
        def _on_begin(conn) -> None:
            conn.exec_driver_sql(begin)

    _refuse_unstorable_values(engine)


def _sync_sqlite_engine(url: str, *, begin: str | None, pool_size: int) -> Engine:
    """``begin``: the statement that opens a transaction; None for a connection that runs each
    statement on its own (autocommit), which is enough for one SELECT."""
    engine = create_engine(
        url.replace("sqlite+aiosqlite://", "sqlite://"),
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"timeout": 30, "check_same_thread": False},
    )
    _sqlite_pragmas(engine, begin)
    return engine


class SqliteWriter:
    """This process's SQLite write connection, driven from the event loop's own thread.

    ``run(fn)`` queues a unit of work; once per loop iteration every unit queued so far runs in
    one ``BEGIN IMMEDIATE`` transaction, each in its own SAVEPOINT, and one COMMIT makes them
    durable (a group commit). It runs right there on the loop: SQLite in WAL mode commits without
    waiting for the disk, and a hand-off to a writer thread and back cost more than the unit
    itself (two interpreter-lock switches per statement: measured in BENCHMARKS.md).

    The loop never waits for a lock. The connection's busy timeout is 0; when another process
    holds the database's write lock (another worker of ``board serve --workers``, a ``board``
    command), or another thread this connection, the group goes back to the head of the queue
    and the loop tries again in 0.5 ms, then 1, 2 and at most every 4 ms, for up to 30 s; what
    is queued meanwhile commits with it. (A thread that waited in SQLite's own busy handler
    slept 1, 2, 5, 10 ms… and then waited for the interpreter lock: with two workers it put
    claim p99s past 140 ms.) Checkpoints (which wait for the disk) run on their own thread and
    connection, never inside a COMMIT on the loop."""

    BUSY_WAIT_S = 30.0
    RETRY_FIRST_S = 0.0005
    RETRY_MAX_S = 0.004
    CHECKPOINT_EVERY_S = 0.5

    def __init__(self, url: str) -> None:
        self._engine = _sync_sqlite_engine(url, begin=None, pool_size=1)
        self._checkpoint_engine = _sync_sqlite_engine(url, begin=None, pool_size=1)
        self._conn: Connection | None = None
        self._conn_lock = threading.Lock()  # held by whoever runs a group on the connection
        self._pending: list[tuple[Callable[[Connection], Any], asyncio.Future, Any]] = []
        self._pending_lock = threading.Lock()
        self._scheduled = False
        self._checkpoints = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._checkpoint_due = 0.0
        self._checkpointing = False
        self._closed = False
        self._busy_since: float | None = None  # when the lock was first found taken
        self._retry_at = 0.0
        self._retry_s = self.RETRY_FIRST_S

    async def run(self, fn: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._pending_lock:
            self._pending.append((fn, future, loop))
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        """Commit what is queued, on this loop, unless backing off from a lock another holds."""
        loop = asyncio.get_running_loop()
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            loop.call_later(wait, self._flush)  # one flush pending, as ``_scheduled`` says
            return
        with self._pending_lock:
            group = self._pending[:GROUP_MAX]
            del self._pending[:GROUP_MAX]
            self._scheduled = bool(self._pending)
        if self._scheduled:  # more than a group's worth: the rest after what else is ready
            loop.call_soon(self._flush)
        if not group:
            return
        now = time.monotonic()
        give_up = self._busy_since is not None and now - self._busy_since > self.BUSY_WAIT_S
        committed = False
        if self._conn_lock.acquire(blocking=False):
            try:
                committed = self._commit_group(group, give_up=give_up)
            finally:
                self._conn_lock.release()
        if committed:
            self._busy_since, self._retry_s = None, self.RETRY_FIRST_S
            return
        if self._busy_since is None:
            self._busy_since = now
        self._retry_at = now + self._retry_s
        self._retry_s = min(self._retry_s * 2, self.RETRY_MAX_S)
        with self._pending_lock:
            self._pending[:0] = group  # first in line again, with what arrives meanwhile
            schedule, self._scheduled = not self._scheduled, True
        if schedule:
            loop.call_later(self._retry_at - now, self._flush)

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.invalidated:
            self._conn = self._engine.connect()
            raw = self._conn.connection.driver_connection
            raw.execute("PRAGMA busy_timeout=0")
            raw.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoint
        return self._conn

    def _commit_group(self, group: list, *, give_up: bool) -> bool:
        """Run ``group`` in one transaction and settle its futures. False (nothing run) when the
        database's write lock is someone else's, unless ``give_up``: then each unit fails with
        SQLite's "database is locked"."""
        try:
            conn = self._connection()
            raw = conn.connection.driver_connection
            raw.execute("BEGIN IMMEDIATE")
        except Exception as exc:  # no transaction began: every unit fails with why, none hangs
            busy = (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not give_up and getattr(exc, "sqlite_errorcode", None) in busy:
                return False
            _settle_all([(future, loop, None, exc) for _, future, loop in group])
            return True
        outcomes: list[tuple[asyncio.Future, Any, Any, BaseException | None]] = []
        try:
            if len(group) == 1:  # alone: the transaction itself is its savepoint
                fn, future, loop = group[0]
                outcomes.append((future, loop, fn(conn), None))
            else:
                for fn, future, loop in group:
                    # plain SQL savepoints, on the driver: SQLAlchemy's nested transactions
                    # cost more Python than the statements they wrap
                    raw.execute("SAVEPOINT unit")
                    try:
                        result = fn(conn)
                    except Exception as exc:
                        raw.execute("ROLLBACK TO SAVEPOINT unit")
                        outcomes.append((future, loop, None, exc))
                    else:
                        outcomes.append((future, loop, result, None))
                    raw.execute("RELEASE SAVEPOINT unit")
            raw.execute("COMMIT")
        except Exception as exc:  # the COMMIT (or a lone unit) failed: nothing of it happened
            outcomes = [(future, loop, None, exc) for _, future, loop in group]
            self._rollback(conn)
        else:
            if conn.in_transaction():  # SQLAlchemy's note of a transaction the COMMIT ended
                conn.rollback()
        _settle_all(outcomes)
        self._maybe_checkpoint()
        return True

    def _rollback(self, conn: Connection) -> None:
        try:
            raw = conn.connection.driver_connection
            if raw.in_transaction:
                raw.execute("ROLLBACK")
            if conn.in_transaction():
                conn.rollback()
        except Exception:  # a broken connection: a fresh one next time
            log.exception("rollback of a failed write group failed; reconnecting")
            conn.invalidate()

    def _maybe_checkpoint(self) -> None:
        now = time.monotonic()
        if self._checkpointing or now < self._checkpoint_due or self._closed:
            return
        self._checkpointing, self._checkpoint_due = True, now + self.CHECKPOINT_EVERY_S
        try:
            self._checkpoints.submit(self._checkpoint)
        except RuntimeError:  # closing: the last connection's close checkpoints
            self._checkpointing = False

    def _checkpoint(self) -> None:
        """Copy the write-ahead log into the database (what the commit itself would do every
        1,000 pages, waiting for the disk twice). PASSIVE: it never blocks the writer or readers."""
        try:
            with self._checkpoint_engine.connect() as conn:
                conn.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:
            log.exception("WAL checkpoint failed (the next one retries)")
        finally:
            self._checkpointing = False

    def close(self) -> None:
        self._closed = True
        with self._pending_lock:  # still waiting for another's lock: those writes never happen
            left, self._pending = self._pending, []
        _settle_all(
            [(f, loop, None, RuntimeError("the board is shutting down")) for _, f, loop in left]
        )
        self._checkpoints.shutdown(wait=True)
        with self._conn_lock:
            if self._conn is not None:
                self._conn.close()
        self._engine.dispose()
        self._checkpoint_engine.dispose()


def _committed(conn: Connection, fn: Callable[[Connection], T]) -> T:
    """``fn(conn)`` in a transaction, committed when it returns (rolled back when it raises).
    Begun and ended inside ``run_sync``: ``AsyncEngine.begin`` crosses into the greenlet once
    more to begin and once more to commit, about 40 µs of the 290 µs of Python a one-statement
    unit cost on PostgreSQL (measured: 32 concurrent callers, 3,200 units)."""
    with conn.begin():
        return fn(conn)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _settle_all(outcomes: list) -> None:
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    for future, loop, result, error in outcomes:
        if loop is here:
            _settle(future, result, error)
        else:
            try:
                loop.call_soon_threadsafe(_settle, future, result, error)
            except RuntimeError:  # that loop is closed: nobody waits for the answer
                pass


class Database:
    """The board's connections: ``write()`` for transactions that change state, ``read()`` for
    queries. Both yield a Core ``AsyncConnection`` inside a transaction."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
            self._reader = _sqlite_engine(url, begin="BEGIN", pool_size=4)
            self._sqlite_writer = SqliteWriter(url)
            self._sync_reader = _sync_sqlite_engine(url, begin="BEGIN", pool_size=4)
            self._read_pool = ThreadPoolExecutor(4, thread_name_prefix="sqlite-reader")
            self._lookups = _sync_sqlite_engine(url, begin=None, pool_size=1)
            self._lookup_conn: Connection | None = None
        else:
            self._writer = create_async_engine(
                # no pre-ping: a round trip per checkout; a dropped connection fails one request
                # and is replaced (pool_recycle bounds how stale one can get)
                url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=300,
            )
            _refuse_unstorable_values(self._writer.sync_engine)
            self._reader = self._writer
            # lookups: one statement, no BEGIN and COMMIT around it (two round trips fewer);
            # the same pool, its connections switched to autocommit while checked out
            self._autocommit = self._writer.execution_options(isolation_level="AUTOCOMMIT")

    @property
    def engine(self) -> AsyncEngine:
        return self._writer

    async def transact(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` as one atomic unit of work that may change the database: all of
        it is committed, or none of it (any exception). ``fn`` must not block on anything but the
        database; its side effects outside the database belong after the await."""
        with refused_values_are_bad_requests():
            if self.is_sqlite:
                return await self._sqlite_writer.run(fn)
            async with self._writer.connect() as conn:
                return await conn.run_sync(_committed, fn)

    async def query(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)`` on a read-only snapshot."""
        with refused_values_are_bad_requests():
            if self.is_sqlite:
                return await asyncio.get_running_loop().run_in_executor(
                    self._read_pool, self._read_sync, fn
                )
            async with self._reader.connect() as conn:
                return await conn.run_sync(_committed, fn)

    async def lookup(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(connection)``, which must be a single SELECT of rows found by an index (the
        token of a request, the jobs a batch wrote by primary key). On SQLite it runs right here, on the event loop's thread, outside
        any transaction (one statement reads one consistent snapshot): an indexed read takes
        microseconds, less than handing it to a reader thread and back. On PostgreSQL it runs
        on a pooled connection in autocommit: the statement alone, without BEGIN and COMMIT."""
        if not self.is_sqlite:
            with refused_values_are_bad_requests():
                async with self._autocommit.connect() as conn:
                    return await conn.run_sync(fn)
        if self._lookup_conn is None or self._lookup_conn.closed:
            self._lookup_conn = self._lookups.connect()
            # it runs on the event loop: never wait long for a lock (WAL readers rarely do)
            self._lookup_conn.exec_driver_sql("PRAGMA busy_timeout=2000")
        conn = self._lookup_conn
        try:
            return fn(conn)
        except DBAPIError:
            conn.invalidate()
            self._lookup_conn = None
            raise
        finally:
            if self._lookup_conn is not None:
                conn.rollback()  # ends SQLAlchemy's autobegun transaction; SQLite has none open

    def _read_sync(self, fn: Callable[[Connection], T]) -> T:
        with self._sync_reader.connect() as conn:
            with conn.begin():
                return fn(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception. A value the
        database refuses is the caller's fault: BadRequest with the database's reason."""
        with refused_values_are_bad_requests():
            async with self._writer.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot (rolled back at the end)."""
        with refused_values_are_bad_requests():
            async with self._reader.connect() as conn:
                async with conn.begin():
                    yield conn

    async def ping(self) -> None:
        async with self._reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self.is_sqlite:
            await asyncio.to_thread(self._sqlite_writer.close)
            self._read_pool.shutdown(wait=False)
            self._sync_reader.dispose()
            if self._lookup_conn is not None:
                self._lookup_conn.close()
            self._lookups.dispose()
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


def migration_engine(url: str) -> AsyncEngine:
    """An engine for alembic: no pool, and on SQLite the same pragmas as the app."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
    return create_async_engine(url, poolclass=NullPool)
