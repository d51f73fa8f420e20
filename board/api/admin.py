"""Admin routes: the farm roster and its controls, submitters and their limits."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, delete, get, post, put

from board.api.responses import errors
from board.auth import create_token, revoke_token
from board.farm import list_farmhands, set_farmhand_state
from board.http import requires
from board.state import BoardState
from board.submitters import get_submitter, list_submitters, set_limits
from wire import API, FarmhandAction, FarmhandView, Limits, SubmitterView


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
    path = API
    opt = requires("admin")
    tags = ["admin"]

    @post(
        "/tokens",
        status_code=201,
        summary="Create a token (shown once)",
        responses=errors(400, 409, 413),
    )
    async def create_token(self, board: BoardState, data: TokenRequest) -> NewToken:
        token = await create_token(board.db, role=data.role, name=data.name)
        return NewToken(name=data.name, role=data.role, token=token)

    @delete(
        "/tokens/{name:str}", status_code=204, summary="Revoke a token", responses=errors(400, 404)
    )
    async def revoke_token(self, board: BoardState, name: str) -> None:
        await revoke_token(board.db, name)

    @get(
        "/farmhands",
        summary="Every farmhand: online, state, capabilities, current jobs",
        responses=errors(),
    )
    async def farmhands(self, board: BoardState) -> list[FarmhandView]:
        return await list_farmhands(board)

    @post(
        "/farmhands/{name:str}/{action:str}",
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
        return await set_farmhand_state(board, name, action, reason=reason, by=request.user.name)

    @get("/submitters", summary="Submitters with their limits and usage", responses=errors())
    async def submitters(self, board: BoardState) -> list[SubmitterView]:
        return await list_submitters(board)

    @get("/submitters/{name:str}", summary="One submitter", responses=errors(400, 404))
    async def submitter(self, board: BoardState, name: str) -> SubmitterView:
        return await get_submitter(board, name)

    @put(
        "/submitters/{name:str}/limits",
        status_code=200,
        summary="Set a submitter's limits",
        responses=errors(400, 404, 413),
    )
    async def limits(self, board: BoardState, name: str, data: Limits) -> SubmitterView:
        return await set_limits(board, name, data)
