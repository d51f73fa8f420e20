"""HTTP plumbing the routes share: error answers, byte-range file answers, streamed bodies.

Every refusal is ``{"status_code": ..., "detail": ...}``: a service's ``BoardError`` with its
own status, Litestar's own refusals (validation, body too large, auth) as Litestar words them,
a body nested too deeply for the decoder as 400, anything unexpected as a logged 500 that names
only the exception's class.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.response import Stream

from board.errors import BoardError, RangeNotSatisfiable
from board.infra.storage import parse_range
from board.state import BoardState

log = logging.getLogger("board.api")


def board_error_handler(_: Request, exc: BoardError) -> Response:
    return Response({"status_code": exc.status, "detail": exc.message}, status_code=exc.status)


def http_error_handler(_: Request, exc: HTTPException) -> Response:
    detail = exc.detail
    if _caused_by(exc, msgspec.DecodeError):  # Litestar passes msgspec's words on bare
        detail = f"the body is not valid JSON: {detail}"
    body = {"status_code": exc.status_code, "detail": detail}
    if exc.extra:
        body["extra"] = exc.extra
    return Response(body, status_code=exc.status_code, headers=exc.headers)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = exc.__cause__
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__
    return False


def too_deep_handler(request: Request, exc: RecursionError) -> Response:
    """Input nested deeper than Python's recursion limit (a JSON body of 100,000 ``[``): the
    decoder gives up with RecursionError, which is the body's fault, not the board's."""
    log.warning("refused a too deeply nested request on %s %s", request.method, request.url.path)
    detail = (
        "the body nests too deeply to be read (arrays or objects inside each other more than "
        f"about {sys.getrecursionlimit()} levels); send a flatter body"
    )
    return Response({"status_code": 400, "detail": detail}, status_code=400)


def internal_error_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(
        {"status_code": 500, "detail": f"internal error: {type(exc).__name__}"}, status_code=500
    )


ERROR_HANDLERS = {
    BoardError: board_error_handler,
    HTTPException: http_error_handler,
    RecursionError: too_deep_handler,
    Exception: internal_error_handler,
}


def ranged_file(
    board: BoardState,
    key: str,
    size: int,
    range_header: str | None,
    *,
    media_type: str,
    filename: str | None = None,
) -> Response:
    """A file answer honouring a single ``Range`` (206 + Content-Range), else the whole (200)."""
    try:
        wanted = parse_range(range_header, size)
    except ValueError as exc:
        raise RangeNotSatisfiable(f"{exc}; the file has {size} bytes") from None
    headers = {"Accept-Ranges": "bytes"}
    if filename:
        headers["Content-Disposition"] = f'inline; filename="{filename}"'
    if wanted is None:
        start, end, status = 0, size - 1, 200
    else:
        (start, end), status = wanted, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    content = board.storage.read_range(key, start, end) if size else _empty()
    return Stream(content=content, status_code=status, headers=headers, media_type=media_type)


async def _empty() -> AsyncIterator[bytes]:
    for chunk in ():
        yield chunk


async def body_chunks(request: Request) -> AsyncIterator[bytes]:
    """The request body as it arrives (never whole in memory)."""
    async for chunk in request.stream():
        if chunk:
            yield chunk
