"""Tokens and roles.

Tokens are random (``cf_<43 url-safe chars>``), shown once, stored as their sha256 (a high-entropy
secret needs no slow hash), revocable. A token has one role: ``admin``, ``submitter`` (owns jobs and
media through its submitter) or ``farmhand``.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from board.errors import BadRequest, Conflict, NotFound
from board.infra.db import Database
from board.infra.models import farmhands, submitters, tokens
from board.state import BoardState

ROLES = ("admin", "submitter", "farmhand")


@dataclass(frozen=True)
class Principal:
    """Who is calling: resolved from a bearer token (or the dashboard's session cookie)."""

    token_id: int
    name: str
    role: str
    submitter_id: int | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "cf_" + secrets.token_urlsafe(32)


def ensure_submitter(conn: Connection, name: str) -> int:
    """The submitter called ``name``, created without limits if new."""
    found = conn.execute(select(submitters.c.id).where(submitters.c.name == name)).first()
    if found:
        return found.id
    result = conn.execute(insert(submitters).values(name=name, created_at=time.time()))
    return result.inserted_primary_key[0]


async def create_token(db: Database, *, role: str, name: str) -> str:
    """Create a token and return it (the only time it is visible). Submitter tokens belong to the
    submitter of the same name, created without limits if new."""
    if role not in ROLES:
        raise BadRequest(f"unknown role {role!r}: use one of {', '.join(ROLES)}")
    if not name or len(name) > 100:
        raise BadRequest("a token needs a name of 1 to 100 characters")
    token = new_token()

    def unit(conn: Connection) -> None:
        exists = conn.execute(select(tokens.c.id).where(tokens.c.name == name)).first()
        if exists:
            raise Conflict(f"a token named {name!r} exists already (revoke it first)")
        submitter_id = ensure_submitter(conn, name) if role == "submitter" else None
        conn.execute(
            insert(tokens).values(
                name=name,
                role=role,
                token_hash=hash_token(token),
                submitter_id=submitter_id,
                created_at=time.time(),
            )
        )

    await db.transact(unit)
    return token


async def revoke_token(db: Database, name: str, *, reason: str = "") -> int:
    """Revoke the token called ``name``: every request with it is refused from now on, on every
    board process (each request reads its token). A farmhand token's farmhand shows as revoked.
    Returns the token's id."""
    now = time.time()

    def unit(conn: Connection) -> None:
        row = conn.execute(
            select(tokens.c.id).where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
        ).first()
        if row is None:
            raise NotFound(f"no active token named {name!r}")
        conn.execute(update(tokens).where(tokens.c.id == row.id).values(revoked_at=now))
        conn.execute(
            update(farmhands)
            .where(farmhands.c.token_id == row.id)
            .values(state="revoked", state_reason=reason or f"its token {name!r} was revoked")
        )
        return row.id

    return await db.transact(unit)


async def revoke(board: BoardState, name: str, *, reason: str = "") -> None:
    """``revoke_token`` on a running board: its long-polls waiting in this process look again
    at once (and get no job), and its farmhand is read afresh at its next call."""
    token_id = await revoke_token(board.db, name, reason=reason)
    board.check_ins.pop(token_id, None)
    board.online.at = 0.0
    board.feed.farm_changed(wake_all=True)


# Every request runs it: built once, its values bound per call (SQLAlchemy then reuses the
# compiled statement without building it again).
_SELECT_TOKEN = select(tokens.c.id, tokens.c.name, tokens.c.role, tokens.c.submitter_id).where(
    tokens.c.token_hash == bindparam("digest"), tokens.c.revoked_at.is_(None)
)


async def authenticate(db: Database, token: str) -> Principal | None:
    """The principal for a bearer token, or None when unknown or revoked. Read on every request
    (one indexed lookup), so a revoke takes effect at once on every board process."""
    if not token or len(token) > 200:
        return None
    digest = hash_token(token)

    def lookup(conn: Connection) -> Principal | None:
        row = conn.execute(_SELECT_TOKEN, {"digest": digest}).first()
        if row is None:
            return None
        return Principal(
            token_id=row.id, name=row.name, role=row.role, submitter_id=row.submitter_id
        )

    return await db.query(lookup)


async def still_valid(db: Database, who: Principal) -> bool:
    """Whether ``who``'s token is still unrevoked: what a long answer (an event stream, a
    long-poll) asks now and then, so a revoke ends it too."""

    def lookup(conn: Connection) -> bool:
        revoked = conn.execute(
            select(tokens.c.revoked_at).where(tokens.c.id == who.token_id)
        ).first()
        return revoked is not None and revoked.revoked_at is None

    return await db.query(lookup)
