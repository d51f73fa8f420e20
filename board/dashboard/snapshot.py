"""What a live update carries: HTML fragments rendered by the same template macros as the page,
so the page and its updates can never disagree. ``regions`` replace an element's content by id;
``lists`` set a container's children, in order, by key (rows come, go and move)."""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


@dataclass
class Snapshot:
    regions: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def encode(self) -> str:
        return msgspec.json.encode({"regions": self.regions, "lists": self.lists}).decode()
