"""Database engines: one place that knows SQLite from PostgreSQL.

SQLite (the embedded default) runs in WAL mode. Writers take the database lock up front with
``BEGIN IMMEDIATE`` (so two claimers never both read a job as free and then race to update it)
and share one connection per process, which makes writes queue in the pool instead of spinning
on ``SQLITE_BUSY``; the busy timeout covers other processes. Readers get their own connections
and never block writers. PostgreSQL uses one pooled engine and ``FOR UPDATE SKIP LOCKED``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from board.errors import BadRequest

INT64_MAX = 2**63 - 1


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


def _refused_value(exc: DBAPIError) -> str | None:
    """The database's reason when it refused a value we sent (SQLSTATE class 22, "data
    exception": out of range, bad encoding...), else None."""
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and state.startswith("22"):
        return str(exc.orig)
    return None


def _sqlite_engine(url: str, *, begin: str, pool_size: int) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=60,
        connect_args={"timeout": 30},
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Take transaction control away from the driver so we can say BEGIN IMMEDIATE ourselves.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql(begin)

    _refuse_unstorable_values(engine.sync_engine)
    return engine


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
        else:
            self._writer = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )
            _refuse_unstorable_values(self._writer.sync_engine)
            self._reader = self._writer

    @property
    def engine(self) -> AsyncEngine:
        return self._writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed on success, rolled back on any exception. A value the
        database refuses is the caller's fault: BadRequest with the database's reason."""
        try:
            async with self._writer.begin() as conn:
                yield conn
        except DBAPIError as exc:
            if why := _refused_value(exc):
                raise BadRequest(f"the board's database refused a value: {why}") from None
            raise

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot (rolled back at the end)."""
        try:
            async with self._reader.connect() as conn:
                async with conn.begin():
                    yield conn
        except DBAPIError as exc:
            if why := _refused_value(exc):
                raise BadRequest(f"the board's database refused a value: {why}") from None
            raise

    async def ping(self) -> None:
        async with self._reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()


def migration_engine(url: str) -> AsyncEngine:
    """An engine for alembic: no pool, and on SQLite the same pragmas as the app."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, begin="BEGIN IMMEDIATE", pool_size=1)
    return create_async_engine(url, poolclass=NullPool)
