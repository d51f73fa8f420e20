"""The errors a render can end with, typed so a caller knows whether a retry can help.

``PermanentRenderError`` (and ``InputError``) is the input's fault: retrying elsewhere gives the
same result. ``EncoderError`` is the machine's: another encoder or farmhand may succeed. Plain
``RenderError`` is anything else that went wrong at run time (retryable). Every message is written
for the person reading it on the dashboard; ``stderr_tail`` keeps ffmpeg's last words for debugging.
"""

from __future__ import annotations


class RenderError(Exception):
    """A render failed. ``message`` is for humans; ``stderr_tail`` is ffmpeg's last output."""

    def __init__(self, message: str, *, stderr_tail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.stderr_tail = stderr_tail

    def __str__(self) -> str:
        return self.message


class PermanentRenderError(RenderError):
    """The input is at fault (corrupt or unreadable clip, no video, trim past the end, bad spec):
    rendering it again anywhere fails the same way."""


class InputError(PermanentRenderError):
    """One source cannot be used. ``source_key`` is its ``Source.key``; ``label`` names it for
    people, e.g. ``clip 3 (https://example.com/a.mp4)``."""

    def __init__(
        self,
        message: str,
        *,
        source_key: str | None = None,
        label: str | None = None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message, stderr_tail=stderr_tail)
        self.source_key = source_key
        self.label = label


class EncoderError(RenderError):
    """The encoder failed at run time (no device, session limit, driver error): another encoder
    or another farmhand may succeed, so a fallback or retry is worth it."""


class RenderCancelled(RenderError):
    """The render was cancelled; every ffmpeg it started was killed and its files removed."""


class PlanMismatch(PermanentRenderError):
    """A part of a split render (``timeline.split``) was planned from other facts than this
    machine's plan of the same compilation: another length of a source, other transitions. Its
    frames would not line up with the other parts', so it is never rendered."""


class PartRejected(RenderError):
    """A piece of a split render handed to the join does not fit: ``part`` is its index (None:
    the audio track). Rendering that piece again (with the same encoder settings as the others)
    may succeed; the other pieces stand."""

    def __init__(self, message: str, *, part: int | None, stderr_tail: str = "") -> None:
        super().__init__(message, stderr_tail=stderr_tail)
        self.part = part
