"""The board's shared state: what every service function needs, built once by the app factory."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from functools import cached_property

import msgspec
from sqlalchemy import Text, select, type_coerce
from sqlalchemy.engine import Connection

from board.config import BoardConfig
from board.domain.matching import Skills, skills_of
from board.infra.db import Database
from board.infra.metrics import Metrics
from board.infra.models import farmhands
from board.infra.notify import JobFeed
from board.infra.probing import Prober
from board.infra.storage import Storage
from board.infra.streams import StreamSlots
from wire import Capabilities


@dataclass
class OnlineFarm:
    """Which farmhands are online and able, re-read at most once a second (claims ask often)."""

    at: float = 0.0
    skills: dict[int, Skills] = field(default_factory=dict)  # farmhand id → what it can do

    # Computed once per snapshot (a snapshot is replaced, never edited): every claim asks.
    @cached_property
    def active_ids(self) -> frozenset[int]:
        return frozenset(self.skills)

    def updated(self, farmhand_id: int, skills: Skills | None) -> OnlineFarm:
        """This snapshot with one farmhand's news (``None``: it stopped taking work), for a
        change the board just heard of without re-reading the whole farm."""
        known = dict(self.skills)
        if skills is None:
            known.pop(farmhand_id, None)
        else:
            known[farmhand_id] = skills
        return OnlineFarm(at=self.at, skills=known)

    @cached_property
    def gpu_codecs(self) -> frozenset[str]:
        """Hardware codecs of online, active farmhands."""
        return frozenset(codec for s in self.skills.values() for codec in s.hardware)


@dataclass
class CheckIn:
    """A farmhand's last full check-in with this board process (``farmhands.checked_in``)."""

    farmhand_id: int
    token_id: int
    name: str
    capabilities: bytes
    state: str
    state_reason: str
    at: float


class Unacknowledged:
    """Jobs this process handed out whose farmhand has not spoken about them yet (no heartbeat,
    fail, release or complete). Only these can be a claim whose answer got lost."""

    def __init__(self) -> None:
        self._by_farmhand: dict[int, set[str]] = {}  # farmhand token id → job ids
        self._owner: dict[str, int] = {}

    def add(self, farmhand: int, job_id: str) -> None:
        self._by_farmhand.setdefault(farmhand, set()).add(job_id)
        self._owner[job_id] = farmhand

    def ack(self, job_id: str) -> None:
        farmhand = self._owner.pop(job_id, None)
        if farmhand is not None:
            jobs_of = self._by_farmhand.get(farmhand)
            if jobs_of is not None:
                jobs_of.discard(job_id)
                if not jobs_of:
                    del self._by_farmhand[farmhand]

    def missing_from(self, farmhand: int, holding: list[str]) -> bool:
        """Whether the farmhand does not list a job it was handed (its claim answer got lost)."""
        return bool(self._by_farmhand.get(farmhand, set()) - set(holding))


@dataclass
class BoardState:
    config: BoardConfig
    db: Database
    storage: Storage
    feed: JobFeed = field(default_factory=JobFeed)
    metrics: Metrics = field(default_factory=Metrics)
    online: OnlineFarm = field(default_factory=OnlineFarm)
    check_ins: dict[int, CheckIn] = field(default_factory=dict)
    unacknowledged: Unacknowledged = field(default_factory=Unacknowledged)
    # farmhands whose claims wait for work on this board process, by farmhand id: who could
    # take a part if a job were split now
    idle: dict[int, Skills] = field(default_factory=dict)
    prober: Prober = field(init=False, repr=False)  # uploads' ffprobe runs (board.infra.probing)
    streams: StreamSlots = field(init=False, repr=False)  # open event streams per token
    _refreshing: asyncio.Future | None = field(default=None, repr=False)
    _skills: dict = field(default_factory=dict, repr=False)  # farmhand id -> (caps text, Skills)

    def __post_init__(self) -> None:
        config = self.config
        self.prober = Prober(
            concurrency=config.probe_concurrency,
            memory_bytes=config.probe_memory_mb * 1024**2,
            timeout_s=config.probe_timeout_s,
        )
        self.streams = StreamSlots(config.max_streams_per_token)

    async def online_farm(self, max_age_s: float = 1.0) -> OnlineFarm:
        """Farmhands seen within the lease time and not paused, quarantined or revoked. Re-read
        at most every ``max_age_s`` by one caller at a time; the others meanwhile use the
        previous answer (a thousand long-polls waking together must not all re-read it)."""
        if time.time() - self.online.at < max_age_s:
            return self.online
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._read_online_farm())
        if self.online.at == 0.0:
            return await asyncio.shield(self._refreshing)
        return self.online

    async def _read_online_farm(self) -> OnlineFarm:
        now = time.time()
        known = self._skills

        def read(conn: Connection) -> dict[int, Skills]:
            rows = conn.execute(
                select(farmhands.c.id, type_coerce(farmhands.c.capabilities, Text)).where(
                    farmhands.c.last_seen_at > now - self.config.lease_s,
                    farmhands.c.state == "active",
                    farmhands.c.owner_paused.is_(False),
                )
            ).all()
            skills: dict[int, Skills] = {}
            for farmhand_id, raw in rows:
                # capabilities rarely change: decode a farmhand's only when its text did
                cached = known.get(farmhand_id)
                if cached is not None and cached[0] == raw:
                    skills[farmhand_id] = cached[1]
                    continue
                loaded = json.loads(raw) if isinstance(raw, str) else (raw or {})
                skills[farmhand_id] = skills_of(msgspec.convert(loaded or {}, Capabilities))
                known[farmhand_id] = (raw if isinstance(raw, str) else None, skills[farmhand_id])
            return skills

        self.online = OnlineFarm(at=now, skills=await self.db.query(read))
        return self.online
