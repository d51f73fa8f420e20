"""The board's shared state: what every service function needs, built once by the app factory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from sqlalchemy import select

from board.config import BoardConfig
from board.db import Database
from board.metrics import Metrics
from board.models import farmhands
from board.notify import JobFeed
from board.storage import Storage


@dataclass
class OnlineFarm:
    """Which farmhands are online and able, re-read at most once a second (claims ask often)."""

    at: float = 0.0
    active_ids: frozenset[int] = frozenset()
    gpu_codecs: frozenset[str] = frozenset()  # hardware codecs of online, active farmhands


@dataclass
class BoardState:
    config: BoardConfig
    db: Database
    storage: Storage
    feed: JobFeed = field(default_factory=JobFeed)
    metrics: Metrics = field(default_factory=Metrics)
    online: OnlineFarm = field(default_factory=OnlineFarm)

    async def online_farm(self, max_age_s: float = 1.0) -> OnlineFarm:
        """Farmhands seen within the lease time and not paused, quarantined or revoked."""
        now = time.time()
        if now - self.online.at < max_age_s:
            return self.online
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(farmhands.c.id, farmhands.c.hw_codecs).where(
                        farmhands.c.last_seen_at > now - self.config.lease_s,
                        farmhands.c.state == "active",
                        farmhands.c.owner_paused.is_(False),
                    )
                )
            ).all()
        codecs: set[str] = set()
        for row in rows:
            codecs.update(c for c in row.hw_codecs.split(",") if c)
        self.online = OnlineFarm(
            at=now, active_ids=frozenset(r.id for r in rows), gpu_codecs=frozenset(codecs)
        )
        return self.online
