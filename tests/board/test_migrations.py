"""The schema is alembic's: ``alembic upgrade head`` builds it on an empty database, on both
engines, and the models agree with what the migrations build (no autogenerate drift)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from board.config import normalize_database_url
from board.infra.db import migration_engine
from board.infra.models import metadata
from tests.harness import create_pg_database, drop_pg_database

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def empty_database(engine, tmp_path) -> Iterator[str]:
    """The URL of an empty database on ``engine``."""
    if engine == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    url, name = create_pg_database()
    yield url
    drop_pg_database(name)


def alembic(url: str, *args: str) -> str:
    """Run the ``alembic`` command line (as a developer would) against ``url``."""
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"),
         "-x", f"database_url={url}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def inspect_database(url: str, look):
    """Run ``look(sync_connection)`` on the database and return its result."""

    async def run():
        engine = migration_engine(normalize_database_url(url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(look)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_upgrade_head_builds_the_schema_on_an_empty_database(empty_database):
    alembic(empty_database, "upgrade", "head")
    tables = set(inspect_database(empty_database, lambda c: inspect(c).get_table_names()))
    assert tables == set(metadata.tables) | {"alembic_version"}
    assert "(head)" in alembic(empty_database, "current")


def test_models_and_migrations_agree(empty_database):
    alembic(empty_database, "upgrade", "head")

    def drift(conn):
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, metadata)

    assert inspect_database(empty_database, drift) == []


def test_downgrade_to_base_and_back(empty_database):
    alembic(empty_database, "upgrade", "head")
    alembic(empty_database, "downgrade", "base")
    tables = set(inspect_database(empty_database, lambda c: inspect(c).get_table_names()))
    assert tables == {"alembic_version"}
    alembic(empty_database, "upgrade", "head")
