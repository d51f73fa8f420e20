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
from board.domain.claims import _first_candidate, skills_of
from board.infra.db import migration_engine
from board.infra.models import metadata
from tests.harness import create_pg_database, drop_pg_database
from wire import Capabilities

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


def test_the_claim_query_walks_its_index_in_order(empty_database):
    """The best job is the claim index's first entry: no claim sorts the queue. (A batch
    migration on SQLite once rebuilt the index without ``priority DESC``; 0006 re-made it.)"""
    alembic(empty_database, "upgrade", "head")
    skills = skills_of(Capabilities(encoders=["libx264", "libx265"]))
    claim_query = _first_candidate(skills, frozenset())

    def look(conn):
        if conn.dialect.name == "sqlite":
            sql = claim_query.params(now=0.0, grace_cut=0.0).compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}").all()
            index = conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'ix_jobs_claim_order'"
            ).scalar_one()
            return [row[-1] for row in plan], index
        index = conn.exec_driver_sql(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_claim_order'"
        ).scalar_one()
        return [], index

    plan, index = inspect_database(empty_database, look)
    assert "priority DESC" in index
    if empty_database.startswith("sqlite"):  # PostgreSQL: test_db.py checks its plan
        assert any("USING INDEX ix_jobs_claim_order" in step for step in plan), plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
