"""What a farmhand can do, read from its verified capabilities, in the terms jobs ask for.

Pure functions: the claim query (``board.domain.claims``) turns a ``Skills`` into SQL predicates;
``can_take`` answers the same question in Python for one job (is there someone else who could
take the job a farmhand failed?).
"""

from __future__ import annotations

from dataclasses import dataclass

from timeline.encoders import ENCODERS, choose_encoders
from wire import Capabilities


@dataclass(frozen=True)
class Skills:
    """The codecs a farmhand verified it can encode, split by hardware and software."""

    hardware: frozenset[str]
    software: frozenset[str]
    tags: frozenset[str]
    gpu_memory_mb: int
    encoders: frozenset[str] = frozenset()  # the verified encoders' names

    def first_encoder(self, codec: str, policy: str) -> str | None:
        """The encoder this farmhand would render ``codec`` with under ``policy``."""
        chosen = choose_encoders(codec, policy, self.encoders)
        return chosen[0].name if chosen else None

    @property
    def any_codec(self) -> frozenset[str]:
        return self.hardware | self.software


def skills_of(capabilities: Capabilities) -> Skills:
    """Only encoders named in clipfarm's encoder table count; unknown names are ignored."""
    hardware: set[str] = set()
    software: set[str] = set()
    known: set[str] = set()
    for name in capabilities.encoders:
        encoder = ENCODERS.get(name)
        if encoder is None:
            continue
        known.add(name)
        (hardware if encoder.hardware else software).add(encoder.codec)
    return Skills(
        hardware=frozenset(hardware),
        software=frozenset(software),
        tags=frozenset(capabilities.tags),
        gpu_memory_mb=max((g.memory_mb for g in capabilities.gpus), default=0),
        encoders=frozenset(known),
    )


def tags_satisfied(required: list[str] | None, skills: Skills) -> bool:
    return not required or set(required) <= skills.tags


def can_take(skills: Skills, requirements: dict) -> bool:
    """Whether a farmhand with ``skills`` meets a job's stored ``requirements`` (the GPU grace
    period is about when, not whether, and is left to the claim query)."""
    codec = requirements.get("codec")
    policy = requirements.get("encoder", "any")
    if policy == "gpu":
        able = codec in skills.hardware
    elif policy == "cpu":
        able = codec in skills.software
    else:
        able = codec in skills.any_codec
    name = requirements.get("encoder_name")  # a part of a split job: exactly this encoder
    return (
        able
        and (name is None or name in skills.encoders)
        and skills.gpu_memory_mb >= (requirements.get("min_gpu_memory_mb") or 0)
        and tags_satisfied(requirements.get("tags"), skills)
    )
