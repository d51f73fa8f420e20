"""How many event streams (``/api/v1/jobs/{id}/events``, ``/dashboard/events``) a token holds
open at once on this board process.

An open stream is a connection and a task that lives as long as the client keeps it, so one
token could otherwise hold every connection the board allows. Past ``max_per_token`` a new
stream is refused with 429 before its answer starts, with a message saying why. A stream holds
its place until it ends, its client goes away, or (never started: the client left before the
answer began) it is dropped.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from typing import TypeVar

from board.errors import TooManyRequests

T = TypeVar("T")


class StreamSlots:
    """Open streams per token id, at most ``max_per_token`` each."""

    def __init__(self, max_per_token: int) -> None:
        self.max_per_token = max_per_token
        # the streams themselves, weakly: one dropped without ever running frees its place too
        self._open: dict[int, weakref.WeakSet] = {}

    def open_count(self, token_id: int) -> int:
        """Streams ``token_id`` holds open now."""
        held = self._open.get(token_id)
        return len(held) if held is not None else 0

    def guard(self, token_id: int, name: str, stream: AsyncIterator[T]) -> AsyncIterator[T]:
        """``stream``, holding one of ``token_id``'s places until it ends. Raises
        ``TooManyRequests`` (429) now, naming the token ``name``, when all are taken."""
        if self.open_count(token_id) >= self.max_per_token:
            raise TooManyRequests(
                f"{name} has {self.max_per_token} event streams open on this board already, "
                "the most one token may hold; close one (a browser tab, a follower) and retry"
            )
        held = self._open.setdefault(token_id, weakref.WeakSet())

        async def guarded() -> AsyncIterator[T]:
            try:
                async for item in stream:
                    yield item
            finally:
                held.discard(placed)
                if not held and self._open.get(token_id) is held:
                    del self._open[token_id]

        placed = guarded()
        held.add(placed)
        return placed
