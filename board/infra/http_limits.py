"""What one HTTP client may hold of the board's server: time and bytes to send a request head,
idle time, connections. The uvicorn options ``board serve`` runs with.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) and, with
``limit_concurrency``, answers 503 past a number of connections and requests; it has no timeout
on *receiving* a request: its keep-alive timer stops at the first byte, and llhttp (the
httptools parser) puts no bound on a head's size. A client that sends a header line every few
seconds (slowloris), or connects and sends nothing, would hold its connection for ever, and a
few hundred of them every connection the board has. ``HeadLimitedProtocol`` is uvicorn's
httptools protocol with the two bounds added, at the connection level, before any request
reaches the app: a request head must be complete within ``head_timeout_s`` of the connection
being made (or of the first byte after the last answer on a kept-alive connection), and within
``max_head_bytes``. The head is still parsed by httptools only; this counts time and bytes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from board.config import BoardConfig

log = logging.getLogger("board.http")

MAX_HEAD_BYTES = 64 * 1024  # a request line and headers; the board's own are well under 4 KiB
_TOO_LARGE_WHY = b"the request line and headers are over 64 KiB"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
    b"content-length: %d\r\n\r\n%s" % (len(_TOO_LARGE_WHY), _TOO_LARGE_WHY)
)


class HeadLimitedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head takes longer than
    ``head_timeout_s`` or more than ``max_head_bytes`` to arrive. Subclassed per board
    (``protocol_for``) to carry the board's setting.

    The head's time runs from the connection (a client that connects and sends nothing is bound
    too), or on a kept-alive connection from the first byte after the last answer (a blank line
    counts: llhttp skips it without starting a request, and uvicorn's idle timer stops at it),
    until the head is complete. A request being received or answered is never cut: a slow
    upload's body is not a head, nor the rest of a body the board answered early (413)."""

    head_timeout_s: float = 10.0
    max_head_bytes: int = MAX_HEAD_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_head = False  # a request began and its head is not complete
        self._in_message = False  # a request began and its body is not all here
        self._heads = 0  # heads received on this connection
        self._answered = 0  # answers finished on this connection
        super().connection_made(transport)
        self._head_transport = transport
        self._arm_head_timer()

    def _waiting_for_a_head(self) -> bool:
        """A head is being received, or the connection is between requests: every request
        received whole and answered (the rest of a body answered early is still a body)."""
        return self._in_head or (not self._in_message and self._heads == self._answered)

    def data_received(self, data: bytes) -> None:
        was_waiting = self._waiting_for_a_head()
        if self._head_timer is None and was_waiting:
            self._arm_head_timer()  # the first bytes of the next request (or a stray blank line)
        super().data_received(data)
        # What this data left of a head still incomplete counts, if the data began in a head:
        # data that began in a body (the rest of one the board answered early, then perhaps
        # the start of the next head) is not counted, so a next head may overrun the limit by
        # at most one read before it is refused.
        if was_waiting and self._waiting_for_a_head():
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self._head_transport.is_closing():
                self._head_transport.write(_TOO_LARGE)
                self._head_transport.close()

    def on_message_begin(self) -> None:
        self._in_head = self._in_message = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._heads += 1
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_message = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        self._answered += 1
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        loop = asyncio.get_running_loop()
        self._head_timer = loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._waiting_for_a_head() and not self._head_transport.is_closing():
            log.info("closed a connection whose request head took over %g s", self.head_timeout_s)
            self._head_transport.close()


def protocol_for(config: BoardConfig) -> type[HeadLimitedProtocol]:
    """``HeadLimitedProtocol`` with ``config``'s head timeout."""
    return type(
        "BoardHttpProtocol", (HeadLimitedProtocol,), {"head_timeout_s": config.header_timeout_s}
    )


def server_options(config: BoardConfig) -> dict[str, Any]:
    """The uvicorn options that bound what clients may hold: the request-head limits above,
    the idle time of a kept-alive connection, and the connections and requests at once (past
    ``BOARD_MAX_CONNECTIONS``, uvicorn answers 503 until some close)."""
    return {
        "http": protocol_for(config),
        # farmhands call every few seconds: keep their connections rather than redo TCP each time
        "timeout_keep_alive": config.keep_alive_s,
        "limit_concurrency": config.max_connections,
    }
