"""What each route takes and may answer, as the OpenAPI schema (``/schema``) tells it.

Every route's request body is in the schema: JSON bodies through their msgspec type (Litestar's
own), streamed file uploads through ``streamed_body`` (Litestar documents a body it parses; an
upload is streamed to storage, never parsed, so its operation says what it takes). Litestar
documents a route's success status and a 400; the refusals the board really gives — 401/403 on
every guarded route, 404, 409 from lease fencing, 413, 416, 429, 507 — are declared here, so a client
generated from the schema (and the schemathesis run in ``tests/reliability``) meets no status
the schema does not name. Paths come from ``wire.routes`` (``typed`` adds Litestar's converters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from litestar.params import HeaderParameter

from wire import LEASE_HEADER, UPLOAD_SHA256_HEADER, UPLOAD_SIZE_HEADER

WHY = {
    400: "Bad input: the message says what is wrong",
    401: "Missing, unknown or revoked token",
    403: "This token's role may not use the route, or the object is not its to touch",
    404: "No such object (or not one this token may see)",
    409: "Conflict: a stale lease, a final job, an idempotency key used for another body",
    413: "The body is larger than this route accepts",
    416: "The byte range cannot be satisfied",
    429: "This token holds as many event streams open as one token may; close one",
    503: "The database cannot be reached",
    507: "The board's disk is full; nothing half-written was kept; try again later",
}


# Headers some routes read. Declared optional and as plain strings: the route itself says what is
# wrong with a missing or malformed one (400), after the lease check where there is one (409).
LeaseHeader = Annotated[
    str | None, HeaderParameter(name=LEASE_HEADER, description="The lease_token of the held job")
]
RangeHeader = Annotated[
    str | None, HeaderParameter(name="range", description="One byte range: bytes=START-[END]")
]
Sha256Header = Annotated[
    str | None,
    HeaderParameter(
        name=UPLOAD_SHA256_HEADER, description="sha256 of the whole file, 64 hex digits"
    ),
]
SizeHeader = Annotated[
    str | None,
    HeaderParameter(name=UPLOAD_SIZE_HEADER, description="Size of the whole file in bytes"),
]
ContentRangeHeader = Annotated[
    str | None,
    HeaderParameter(
        name="content-range", description="Where this body goes: bytes START-END/TOTAL"
    ),
]


class ErrorBody(msgspec.Struct):
    """Every refusal: the status again and a message for the person reading it."""

    status_code: int
    detail: str
    extra: Any = None


def errors(*codes: int, guarded: bool = True) -> dict[int, ResponseSpec]:
    """Responses for ``codes``; a ``guarded`` route (one needing a token) adds 401 and 403."""
    wanted = sorted({*codes, *((401, 403) if guarded else ())})
    return {
        code: ResponseSpec(data_container=ErrorBody, description=WHY[code], generate_examples=False)
        for code in wanted
    }


def also(code: int, data: Any, description: str, media_type: str = "application/json") -> dict:
    """A second success answer (200 besides 201, 206 besides 200, 204 besides 200)."""
    return {
        code: ResponseSpec(
            data_container=data,
            description=description,
            media_type=media_type,
            generate_examples=False,
        )
    }


def typed(template: str) -> str:
    """A ``wire.routes`` template as a Litestar path: every ``{name}`` a string parameter."""
    return re.sub(r"\{(\w+)\}", r"{\1:str}", template)


def streamed_body(description: str, *media_types: str) -> type[Operation]:
    """The ``operation_class`` of a route whose body is a file streamed to storage: its
    operation documents that body (binary, of ``media_types``) though no handler parses it."""
    binary = Schema(type=OpenAPIType.STRING, format="binary")  # type: ignore[arg-type]
    body = RequestBody(
        content={kind: OpenAPIMediaType(schema=binary) for kind in media_types},
        description=description,
        required=True,
    )

    @dataclass
    class StreamedUpload(Operation):
        def __post_init__(self) -> None:
            self.request_body = body

    return StreamedUpload
