"""The errors the board's services raise: the one ``wire.errors`` family, one class per answer.

The HTTP layer answers each with its ``status`` and ``message`` (``board.api.http``); messages
are written for the person reading them in a terminal or on the dashboard.
"""

from __future__ import annotations

from wire.errors import BoardError, LeaseLost

__all__ = [
    "BadRequest",
    "BoardError",
    "Conflict",
    "Forbidden",
    "InsufficientStorage",
    "LeaseLost",
    "NotFound",
    "PayloadTooLarge",
    "RangeNotSatisfiable",
    "TooManyRequests",
    "lease_lost",
]


class BadRequest(BoardError):
    """The input is wrong; the message says what and where."""

    status = 400


class Forbidden(BoardError):
    """This caller may not do this (a revoked farmhand, a role without the right)."""

    status = 403


class NotFound(BoardError):
    """No such object, or not one this caller may see."""

    status = 404


class Conflict(BoardError):
    """The object is not in a state that allows this (a final job, a key used for another body)."""

    status = 409


class PayloadTooLarge(BoardError):
    """The body is over what this route or this submitter's quota accepts."""

    status = 413


class RangeNotSatisfiable(BoardError):
    """The byte range asked for is not in the file (or an upload continues at the wrong byte)."""

    status = 416


class TooManyRequests(BoardError):
    """The caller holds as much of the board as one token may (open event streams)."""

    status = 429


class InsufficientStorage(BoardError):
    """The board's disk is full: the farmhand retries later, nothing is half-written."""

    status = 507


def lease_lost(job_id: str, why: str = "") -> LeaseLost:
    """The 409 for a farmhand call whose ``lease_token`` no longer holds ``job_id``."""
    return LeaseLost(
        f"lease on job {job_id} is no longer valid"
        + (f": {why}" if why else " (it expired, was released or the job was cancelled)")
    )
