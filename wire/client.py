"""How a client calls the board: which answers are worth another try, how long to wait between
tries, and which error of ``wire.errors`` a refusal becomes.

The farmhand (``httpx.AsyncClient``) and the submit CLI (``httpx.Client``) both call through
:func:`call_async` / :func:`call`, so they retry alike and raise the same classes. A call is a
function that sends one request (called again for each try, so a streamed body starts afresh);
connection trouble, 5xx and 429 are retried with exponential backoff and jitter until the call's
deadline, then raise ``BoardUnreachable``; any other status of 400 or more is a ``BoardError``
(or the class the caller maps that status to, e.g. 409 → ``LeaseLost``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import httpx
from tenacity import (
    AsyncRetrying,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from wire.errors import BoardError, BoardUnreachable, error_detail, retryable_status

_NONE: Mapping = {}
T = TypeVar("T")


class TryAgain(Exception):
    """No answer, or one worth another try (5xx, 429); raised inside a retry loop."""


def _policy(deadline_s: float) -> dict:
    # A BoardUnreachable from a call nested in a longer one (the status check of an upload)
    # is tried again too while the outer deadline lasts.
    return dict(
        retry=retry_if_exception_type((TryAgain, BoardUnreachable)),
        wait=wait_exponential_jitter(multiplier=0.5, max=15.0),
        stop=stop_after_delay(deadline_s),
        reraise=True,
    )


def retried(attempt: Callable[[], T], *, deadline_s: float) -> T:
    """``attempt()``, tried again with backoff while it raises ``TryAgain`` (or a nested
    call's ``BoardUnreachable``) for up to ``deadline_s``; then ``BoardUnreachable``."""
    try:
        for trying in Retrying(**_policy(deadline_s)):
            with trying:
                return attempt()
    except TryAgain as exc:
        raise BoardUnreachable(str(exc)) from exc
    raise AssertionError("tenacity returns or raises")


async def retried_async(attempt: Callable[[], Awaitable[T]], *, deadline_s: float) -> T:
    """:func:`retried` for a coroutine function."""
    try:
        async for trying in AsyncRetrying(**_policy(deadline_s)):
            with trying:
                return await attempt()
    except TryAgain as exc:
        raise BoardUnreachable(str(exc)) from exc
    raise AssertionError("tenacity returns or raises")


def unreachable(what: str, exc: httpx.TransportError) -> TryAgain:
    """The retry signal for a request that got no answer, naming where it was sent."""
    try:
        url = exc.request.url
        where = f" at {url.scheme}://{url.netloc.decode()}"
    except RuntimeError:  # an error raised before httpx attached the request
        where = ""
    return TryAgain(f"{what}: cannot reach the board{where} ({exc or type(exc).__name__})")


def refusal(
    response: httpx.Response,
    what: str,
    *,
    classes: Mapping[int, type[BoardError]] = _NONE,
    hints: Mapping[int, str] = _NONE,
) -> BoardError:
    """The error a refused call raises: ``classes[status]`` (default ``BoardError``) with
    ``"{what}: HTTP {status}: {the board's detail}{hints[status]}"``. The body must be read."""
    status = response.status_code
    detail = error_detail(response.content, response.reason_phrase)
    error = classes.get(status, BoardError)
    return error(f"{what}: HTTP {status}: {detail}{hints.get(status, '')}", status)


def checked(
    response: httpx.Response,
    what: str,
    *,
    classes: Mapping[int, type[BoardError]] = _NONE,
    hints: Mapping[int, str] = _NONE,
) -> httpx.Response:
    """``response`` if the board accepted the call; ``TryAgain`` if the answer is worth another
    try; else its :func:`refusal`."""
    status = response.status_code
    if status < 400:
        return response
    if retryable_status(status):
        raise TryAgain(
            f"{what}: the board answered HTTP {status}: {error_detail(response.content)}"
        )
    raise refusal(response, what, classes=classes, hints=hints)


def call(
    send: Callable[[], httpx.Response],
    what: str,
    *,
    deadline_s: float,
    classes: Mapping[int, type[BoardError]] = _NONE,
    hints: Mapping[int, str] = _NONE,
) -> httpx.Response:
    """Run ``send`` (one request) until the board accepts or refuses it; ``BoardUnreachable``
    when it has not answered usefully within ``deadline_s``."""

    def attempt() -> httpx.Response:
        try:
            response = send()
        except httpx.TransportError as exc:
            raise unreachable(what, exc) from exc
        return checked(response, what, classes=classes, hints=hints)

    return retried(attempt, deadline_s=deadline_s)


async def call_async(
    send: Callable[[], Awaitable[httpx.Response]],
    what: str,
    *,
    deadline_s: float,
    classes: Mapping[int, type[BoardError]] = _NONE,
    hints: Mapping[int, str] = _NONE,
) -> httpx.Response:
    """:func:`call` for a coroutine ``send``."""

    async def attempt() -> httpx.Response:
        try:
            response = await send()
        except httpx.TransportError as exc:
            raise unreachable(what, exc) from exc
        return checked(response, what, classes=classes, hints=hints)

    return await retried_async(attempt, deadline_s=deadline_s)
