"""Dashboard sessions: what the sign-in cookie stands for, held by the board.

Signing in with a token opens a session: a random id (``cs_`` and 43 url-safe characters) goes
in the browser's cookie, and the board keeps its sha256 with the token it stands for and an
expiry. The cookie is never the token, so signing out (``end_session``) really ends it: a copy
of the cookie is worth nothing afterwards. A session is good only while its token is: revoking
the token ends every session it opened at once, on every board process. Expired and revoked
sessions are deleted by the janitor's pass (``remove_dead_sessions``).
"""

from __future__ import annotations

import hashlib
import secrets
import time

from sqlalchemy import delete, insert, or_, select
from sqlalchemy.engine import Connection

from board.domain.tokens import Principal
from board.infra.db import Database
from board.infra.models import sessions, tokens


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def open_session(db: Database, who: Principal, max_age_s: float) -> str:
    """A new session for ``who``'s token, good for ``max_age_s``; returns its id (the cookie's
    value, shown only here)."""
    session_id = "cs_" + secrets.token_urlsafe(32)
    now = time.time()
    row = dict(id_hash=_hash(session_id), token_id=who.token_id, created_at=now,
               expires_at=now + max_age_s)  # fmt: skip
    await db.transact(lambda conn: conn.execute(insert(sessions).values(**row)))
    return session_id


_LOOKUP = select(tokens.c.id, tokens.c.name, tokens.c.role, tokens.c.submitter_id).select_from(
    sessions.join(tokens, tokens.c.id == sessions.c.token_id)
)


async def session_principal(db: Database, session_id: str) -> Principal | None:
    """Who the session ``session_id`` is: None when it is unknown, ended, expired or its token
    was revoked. Read on every request, like a token."""
    if not session_id or len(session_id) > 200:
        return None
    query = _LOOKUP.where(
        sessions.c.id_hash == _hash(session_id),
        sessions.c.expires_at > time.time(),
        tokens.c.revoked_at.is_(None),
    )

    def lookup(conn: Connection) -> Principal | None:
        row = conn.execute(query).first()
        if row is None:
            return None
        return Principal(
            token_id=row.id, name=row.name, role=row.role, submitter_id=row.submitter_id
        )

    return await db.query(lookup)


async def end_session(db: Database, session_id: str) -> None:
    """Sign out: the session is gone, whoever holds a copy of its cookie."""
    digest = _hash(session_id)
    await db.transact(
        lambda conn: conn.execute(delete(sessions).where(sessions.c.id_hash == digest))
    )


async def remove_dead_sessions(db: Database) -> int:
    """Delete expired sessions and those of revoked tokens; returns how many went."""
    now = time.time()
    revoked = select(tokens.c.id).where(tokens.c.revoked_at.is_not(None))
    gone = delete(sessions).where(
        or_(sessions.c.expires_at <= now, sessions.c.token_id.in_(revoked))
    )
    return await db.transact(lambda conn: conn.execute(gone).rowcount)
