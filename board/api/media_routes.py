"""Routes for media: a submitter's uploads (intro, outro, clips, stingers, watermark, music),
their download, by their owner or by the farmhand whose held job uses them, and their deletion.

With an object store the bytes do not pass through here: an upload begins with ``POST
/api/v1/media/uploads`` (presigned URLs for its parts) and ends with ``…/finish``, and a download
is answered with a redirect to a presigned URL."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, Response, delete, get, post
from litestar.params import HeaderParameter
from litestar.response import Redirect

from board.api.auth import caller, requires
from board.api.http import body_chunks, ranged_file
from board.api.openapi import LeaseHeader, RangeHeader, also, errors, streamed_body, typed
from board.domain.deletions import delete_media
from board.domain.links import download_url
from board.domain.media import (
    finish_media_upload,
    get_media,
    media_for_farmhand,
    start_media_upload,
    upload_media,
)
from board.domain.views import media_view
from board.state import BoardState
from wire import MediaUpload, MediaUploadStart, MediaView
from wire.routes import MEDIA, MEDIA_CONTENT, MEDIA_ITEM, MEDIA_UPLOAD_FINISH, MEDIA_UPLOADS


class MediaController(Controller):
    path = "/"
    tags = ["media"]

    @post(
        typed(MEDIA),
        status_code=201,
        opt=requires("submitter"),
        request_max_body_size=None,
        operation_class=streamed_body(
            "The file: video, audio or an image", "application/octet-stream"
        ),
        summary="Upload media (raw body; ?filename=…)",
        responses={
            **errors(400, 413, 507),
            **also(200, MediaView, "The same bytes were uploaded before: that media"),
        },
    )
    async def upload(
        self,
        request: Request,
        board: BoardState,
        filename: str | None = None,
        x_filename: Annotated[str | None, HeaderParameter(name="x-filename")] = None,
    ) -> Response[MediaView]:
        view, created = await upload_media(
            board,
            caller(request),
            body_chunks(request),
            filename=filename or x_filename,
            declared_size=request.content_length,
        )
        return Response(view, status_code=201 if created else 200)

    @post(
        typed(MEDIA_UPLOADS),
        status_code=200,
        opt=requires("submitter"),
        summary="Begin an upload: say how to send the file (or that the board has it already)",
        responses=errors(400, 403, 413, 503),
    )
    async def begin_upload(
        self, request: Request, board: BoardState, data: MediaUploadStart
    ) -> MediaUpload:
        return await start_media_upload(board, caller(request), data)

    @post(
        typed(MEDIA_UPLOAD_FINISH),
        status_code=201,
        opt=requires("submitter"),
        summary="The parts of an upload to object storage arrived: verify, probe, keep it",
        responses={
            **errors(400, 404, 409, 503),
            **also(200, MediaView, "The same bytes were uploaded before: that media"),
        },
    )
    async def finish_upload(
        self, request: Request, board: BoardState, upload_id: str
    ) -> Response[MediaView]:
        view, created = await finish_media_upload(board, caller(request), upload_id)
        return Response(view, status_code=201 if created else 200)

    @get(
        typed(MEDIA_ITEM),
        opt=requires("submitter"),
        summary="One media's details",
        responses=errors(400, 404),
    )
    async def describe(self, request: Request, board: BoardState, media_id: str) -> MediaView:
        return media_view(await get_media(board, caller(request), media_id))

    @delete(
        typed(MEDIA_ITEM),
        opt=requires("submitter"),
        summary="Delete media and its file (not while an unfinished job uses it)",
        responses=errors(400, 404, 409),
    )
    async def remove(self, request: Request, board: BoardState, media_id: str) -> None:
        await delete_media(board, caller(request), media_id)

    @get(
        typed(MEDIA_CONTENT),
        opt=requires("submitter", "farmhand"),
        summary="Download media (owner, or the farmhand holding a job that uses it)",
        media_type="application/octet-stream",
        responses={
            **errors(400, 404, 416),
            **also(206, bytes, "The byte range asked for", "application/octet-stream"),
            **also(307, None, "In object storage: a presigned URL to download it from"),
        },
    )
    async def content(
        self,
        request: Request,
        board: BoardState,
        media_id: str,
        lease: LeaseHeader = None,
        range_: RangeHeader = None,
    ) -> Response:
        who = caller(request)
        if who.role == "farmhand":
            row = await media_for_farmhand(board, who, media_id, lease)
        else:
            row = await get_media(board, who, media_id)
        elsewhere = download_url(board, row.storage_key, row.filename)
        if elsewhere is not None:
            return Redirect(elsewhere, status_code=307, media_type="text/plain")
        return ranged_file(
            board,
            row.storage_key,
            row.size,
            range_,
            media_type="application/octet-stream",
            filename=row.filename,
        )
