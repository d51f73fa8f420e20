"""The one family of board errors, for the board and every client of it.

The board raises these in its services and answers each with its ``status``; clients (the
farmhand, the submit CLI, the benches) raise the same classes from the answers they get, so a
caller catches ``LeaseLost`` or ``BoardError`` whichever side of the wire it is on. Every
refusal's body is ``{"status_code": ..., "detail": ...}``; ``detail`` is written for the person
who reads it on a terminal or the dashboard.
"""

from __future__ import annotations

import msgspec


class BoardError(Exception):
    """The board refused a call (or, for ``BoardUnreachable``, never answered). ``status`` is the
    HTTP status (0: no answer at all); ``message`` is the board's own words."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class LeaseLost(BoardError):
    """409 on a farmhand's call about a job: its ``lease_token`` no longer holds the job (the
    lease expired, the job was released, requeued or cancelled). The farmhand aborts the job."""

    status = 409


class BoardUnreachable(BoardError):
    """No answer from the board (connection trouble, or only 5xx) within the call's deadline."""

    status = 0


def error_detail(body: bytes, fallback: str = "") -> str:
    """The message of a board error answer (``{"status_code": ..., "detail": ...}``), else the
    start of whatever the body is."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:500].decode("utf-8", "replace") or fallback
    if isinstance(decoded, dict) and "detail" in decoded:
        return str(decoded["detail"])
    return str(decoded)[:500]


def retryable_status(status: int) -> bool:
    """Answers worth another try after a pause: the board is overloaded or unwell."""
    return status >= 500 or status == 429
