"""Admin routes: the farm roster and its controls, submitters and their limits."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, delete, get, post, put

from board.api.auth import caller, requires
from board.api.openapi import errors, typed
from board.domain.farmhands import list_farmhands, set_farmhand_state
from board.domain.submitters import get_submitter, list_submitters, set_limits
from board.domain.tokens import create_token, revoke
from board.state import BoardState
from wire import FarmhandAction, FarmhandView, Limits, SubmitterView
from wire.routes import (
    FARMHAND_ACTION,
    FARMHANDS,
    SUBMITTER,
    SUBMITTER_LIMITS,
    SUBMITTERS,
    TOKEN,
    TOKENS,
)


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: Annotated[str, msgspec.Meta(pattern="^(admin|submitter|farmhand)$")]
    name: Annotated[
        str, msgspec.Meta(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
    ]


class NewToken(msgspec.Struct):
    name: str
    role: str
    token: str  # shown once


class AdminController(Controller):
    path = "/"
    opt = requires("admin")
    tags = ["admin"]

    @post(
        typed(TOKENS),
        status_code=201,
        summary="Create a token (shown once)",
        responses=errors(400, 409, 413),
    )
    async def create_token(self, board: BoardState, data: TokenRequest) -> NewToken:
        token = await create_token(board.db, role=data.role, name=data.name)
        return NewToken(name=data.name, role=data.role, token=token)

    @delete(typed(TOKEN), status_code=204, summary="Revoke a token", responses=errors(400, 404))
    async def revoke_token(self, board: BoardState, name: str) -> None:
        await revoke(board, name)

    @get(
        typed(FARMHANDS),
        summary="Every farmhand: online, state, capabilities, current jobs",
        responses=errors(),
    )
    async def farmhands(self, board: BoardState) -> list[FarmhandView]:
        return await list_farmhands(board)

    @post(
        typed(FARMHAND_ACTION),
        status_code=200,
        summary="pause | resume | drain | revoke a farmhand",
        responses=errors(400, 404, 413),
    )
    async def farmhand_action(
        self,
        request: Request,
        board: BoardState,
        name: str,
        action: str,
        data: FarmhandAction | None = None,
    ) -> FarmhandView:
        reason = data.reason if data else ""
        return await set_farmhand_state(board, name, action, reason=reason, by=caller(request).name)

    @get(typed(SUBMITTERS), summary="Submitters with their limits and usage", responses=errors())
    async def submitters(self, board: BoardState) -> list[SubmitterView]:
        return await list_submitters(board)

    @get(typed(SUBMITTER), summary="One submitter", responses=errors(400, 404))
    async def submitter(self, board: BoardState, name: str) -> SubmitterView:
        return await get_submitter(board, name)

    @put(
        typed(SUBMITTER_LIMITS),
        status_code=200,
        summary="Set a submitter's limits",
        responses=errors(400, 404, 413),
    )
    async def limits(self, board: BoardState, name: str, data: Limits) -> SubmitterView:
        return await set_limits(board, name, data)
