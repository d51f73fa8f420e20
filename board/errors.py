"""Errors the board's services raise; the HTTP layer maps each class to one status code.

Messages are written for the person reading them in a terminal or on the dashboard.
"""

from __future__ import annotations


class BoardError(Exception):
    """Base: ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(BoardError):
    status = 400


class NotFound(BoardError):
    status = 404


class Forbidden(BoardError):
    status = 403


class Conflict(BoardError):
    status = 409


class LeaseLost(Conflict):
    """The caller's ``lease_token`` no longer holds the job (expired, requeued, cancelled…)."""

    def __init__(self, job_id: str, why: str = "") -> None:
        super().__init__(
            f"lease on job {job_id} is no longer valid"
            + (f": {why}" if why else " (it expired, was released or the job was cancelled)")
        )


class PayloadTooLarge(BoardError):
    status = 413


class RangeNotSatisfiable(BoardError):
    status = 416


class InsufficientStorage(BoardError):
    """The board's disk is full: the farmhand retries later, nothing is half-written."""

    status = 507
