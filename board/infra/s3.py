"""Media and outputs in an S3-compatible store (AWS S3, MinIO, Ceph, R2…): ``S3Storage``.

It is the board's ``Storage`` (keys, sizes, deletes, listings, small notes), and it does what
only an object store can: hand out **presigned URLs**, so farmhands and submitters move the bytes
to and from the store themselves, never through the board and never with the store's
credentials. A presigned URL names one key, one method and, for an upload, the sha256 of the
bytes it accepts (``x-amz-checksum-sha256`` is one of its signed headers): the store refuses
other bytes, another key, and the URL itself once it expired.

boto3 signs every request and every URL (no signing of our own). Its calls block, so the board
runs them on threads; presigning is computed locally and costs no request. A store that cannot
be reached is ``StorageUnavailable`` (503: farmhands and submitters try again).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from board.config import S3Settings
from board.errors import Conflict
from board.infra.storage import CHUNK, Storage, Written, checked_key, spool
from wire.errors import BoardError

T = TypeVar("T")
MIN_PART = 5 * 1024**2  # S3's smallest part (all but the last)
MAX_PART = 5 * 1024**3  # and its largest
MAX_PARTS = 10_000
_NOT_THERE = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


class StorageUnavailable(BoardError):
    """The object store did not answer, or refused the board itself: try again later."""

    status = 503


class UploadNotVerified(BoardError):
    """A direct upload is missing parts or holds other bytes than were declared (400)."""

    status = 400


class PartsMissing(UploadNotVerified):
    """A direct upload is not finished: parts have not arrived (or the upload is gone)."""


@dataclass(frozen=True)
class StoredPart:
    """One part of a multipart upload as the store holds it."""

    number: int
    size: int
    etag: str
    sha256_b64: str | None


def sha256_b64(hex_digest: str) -> str:
    """A hex sha256 as S3 spells checksums: base64 of the 32 bytes."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def sha256_hex(b64: str) -> str:
    """The other way round; "" when ``b64`` is not a sha256."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return ""
    return raw.hex() if len(raw) == 32 else ""


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in _NOT_THERE


class S3Storage(Storage):
    """Keys are object keys in ``settings.bucket``; ``tmp`` is a local folder for files the
    board must hold a moment (an upload it probes)."""

    direct = True

    def __init__(self, settings: S3Settings, tmp: Path) -> None:
        import boto3  # here: a board on its own disk never loads it
        from botocore.config import Config

        self.settings = settings
        self.bucket = settings.bucket
        self.tmp = tmp
        tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
        credentials = (
            {"aws_access_key_id": settings.access_key,
             "aws_secret_access_key": settings.secret_key}
            if settings.access_key else {}
        )  # fmt: skip
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},  # every S3-compatible store understands it
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
        )
        session = boto3.session.Session(region_name=settings.region, **credentials)
        self.client = session.client("s3", endpoint_url=settings.endpoint, config=config)
        # URLs for others are signed for the address they reach the store at
        self.signer = session.client(
            "s3", endpoint_url=settings.public_endpoint or settings.endpoint, config=config
        )

    # ------------------------------------------------------------ calls

    def _call(self, what: str, fn: Callable[..., T], **params: Any) -> T:
        try:
            return fn(Bucket=self.bucket, **params)
        except ClientError as exc:
            if _missing(exc):
                raise
            code = exc.response.get("Error", {}).get("Code", "?")
            raise StorageUnavailable(
                f"the object store refused {what} ({code}); check the board's BOARD_S3_* "
                "settings and the bucket's permissions"
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(
                f"the object store could not be reached for {what} ({type(exc).__name__}); "
                "try again later"
            ) from exc

    def check(self) -> None:
        """Raise StorageUnavailable unless the bucket answers (``board serve`` asks at start)."""
        try:
            self._call("a look at the bucket", self.client.head_bucket)
        except ClientError as exc:
            raise StorageUnavailable(f"bucket {self.bucket!r} does not exist") from exc

    # ------------------------------------------------------------ Storage

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def head(self, key: str) -> dict | None:
        """The object's HEAD answer, None when absent."""
        try:
            return self._call(f"HEAD {key}", self.client.head_object, Key=checked_key(key))
        except ClientError:
            return None

    def size(self, key: str) -> int:
        found = self.head(key)
        if found is None:
            raise FileNotFoundError(key)
        return int(found["ContentLength"])

    def size_or_zero(self, key: str) -> int:
        found = self.head(key)
        return int(found["ContentLength"]) if found else 0

    def delete(self, key: str) -> None:
        self._call(f"deleting {key}", self.client.delete_object, Key=checked_key(key))

    def keys(self, prefix: str) -> list[str]:
        found: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=checked_key(prefix) + "/"
        )
        try:
            for page in pages:
                found.extend(item["Key"] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"the object store could not list {prefix}/") from exc
        return sorted(found)

    def write_note(self, key: str, text: str) -> None:
        self._call(f"writing {key}", self.client.put_object, Key=checked_key(key),
                   Body=text.encode(), ContentType="application/json")  # fmt: skip

    def read_note(self, key: str) -> str | None:
        try:
            answer = self._call(f"reading {key}", self.client.get_object, Key=checked_key(key))
        except ClientError:
            return None
        with contextlib.closing(answer["Body"]) as body:
            return body.read().decode()

    def read_bytes(self, key: str, start: int, end: int) -> bytes:
        """Bytes ``start``..``end`` inclusive (fewer at the object's end)."""
        answer = self._call(f"reading {key}", self.client.get_object, Key=checked_key(key),
                            Range=f"bytes={start}-{end}")  # fmt: skip
        with contextlib.closing(answer["Body"]) as body:
            return body.read()

    def read_head(self, key: str, length: int) -> tuple[bytes, int] | None:
        """The first ``length`` bytes of ``key`` and its whole size, in one request; None when
        it is absent or empty."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=checked_key(key),
                                            Range=f"bytes=0-{length - 1}")  # fmt: skip
        except ClientError as exc:
            if _missing(exc) or exc.response.get("Error", {}).get("Code") == "InvalidRange":
                return None  # absent, or empty: nothing to read either way
            raise StorageUnavailable(f"the object store refused reading {key}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"the object store could not be reached for {key}") from exc
        with contextlib.closing(answer["Body"]) as body:
            data = body.read()
        total = answer.get("ContentRange", "").rpartition("/")[2]
        return data, int(total) if total.isdigit() else int(answer["ContentLength"])

    async def read_range(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        import asyncio

        answer = await asyncio.to_thread(
            self._call, f"reading {key}", self.client.get_object, Key=checked_key(key),
            Range=f"bytes={start}-{end}",
        )  # fmt: skip
        body = answer["Body"]
        try:
            while block := await asyncio.to_thread(body.read, CHUNK * 4):
                yield block
        finally:
            body.close()

    async def put_stream(
        self, key: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> Written:
        import asyncio

        path, written = await spool(chunks, self.tmp, max_bytes=max_bytes)
        try:
            await asyncio.to_thread(self.put_file, path, key)
        finally:
            path.unlink(missing_ok=True)
        return written

    def put_file(self, path: Path, key: str) -> None:
        """Upload a local file to ``key`` (in parts when large) and remove the local file."""
        try:
            self.client.upload_file(str(path), self.bucket, checked_key(key))
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"the object store did not take {key}") from exc
        path.unlink(missing_ok=True)

    def download_file(self, key: str, path: Path) -> None:
        """Copy ``key`` to the local file ``path``."""
        try:
            self.client.download_file(self.bucket, checked_key(key), str(path))
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"the object store did not give {key}") from exc

    async def append(self, key, chunks, *, max_total, digest=None) -> int:
        """Objects are not appended to: an upload goes to the store in parts (Conflict)."""
        raise Conflict("this board keeps files in object storage: upload them in parts")

    def temp_path(self) -> Path:
        return self.tmp / f"{os.urandom(8).hex()}.part"

    # ------------------------------------------------------------ presigned URLs

    def presigned_get(self, key: str, *, filename: str | None = None) -> str:
        """A URL that downloads ``key`` (HTTP Range works) until it expires."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": checked_key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'inline; filename="{filename}"'
        return self.signer.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=int(self.settings.url_expiry_s)
        )

    def presigned_put(self, key: str) -> str:
        """A URL that stores one object at ``key`` (a thumbnail: checked when it is used)."""
        return self.signer.generate_presigned_url(
            "put_object", Params={"Bucket": self.bucket, "Key": checked_key(key)},
            ExpiresIn=int(self.settings.url_expiry_s),
        )  # fmt: skip

    def presigned_part(self, key: str, upload_id: str, number: int, sha256_hex_: str) -> str:
        """A URL that uploads part ``number`` of ``upload_id``, and only the bytes whose sha256
        is ``sha256_hex_``: the checksum is a signed header, checked by the store."""
        params = {"Bucket": self.bucket, "Key": checked_key(key), "UploadId": upload_id,
                  "PartNumber": number, "ChecksumSHA256": sha256_b64(sha256_hex_)}  # fmt: skip
        return self.signer.generate_presigned_url(
            "upload_part", Params=params, ExpiresIn=int(self.settings.url_expiry_s)
        )

    # ------------------------------------------------------------ multipart uploads

    def create_multipart(self, key: str) -> str:
        """Begin a multipart upload to ``key`` whose parts carry sha256 checksums; its id."""
        answer = self._call(f"starting an upload to {key}", self.client.create_multipart_upload,
                            Key=checked_key(key), ChecksumAlgorithm="SHA256")  # fmt: skip
        return answer["UploadId"]

    def list_parts(self, key: str, upload_id: str) -> list[StoredPart] | None:
        """The parts that arrived, by number; None when the upload is gone (completed or
        aborted)."""
        parts: list[StoredPart] = []
        pages = self.client.get_paginator("list_parts").paginate(
            Bucket=self.bucket, Key=checked_key(key), UploadId=upload_id
        )
        try:
            for page in pages:
                parts += [
                    StoredPart(p["PartNumber"], int(p["Size"]), p["ETag"], p.get("ChecksumSHA256"))
                    for p in page.get("Parts", [])
                ]
        except ClientError as exc:
            if _missing(exc):
                return None
            raise StorageUnavailable(f"the object store could not list the parts of {key}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"the object store could not list the parts of {key}") from exc
        return sorted(parts, key=lambda p: p.number)

    def complete_verified(self, key: str, upload_id: str, declared: list[tuple[int, str]]) -> None:
        """Join the parts of ``upload_id`` into the object ``key``, after checking that every
        declared part (size, hex sha256) arrived as declared. The store checked each part's
        bytes against its checksum as it arrived (a signed header of the part's URL); its
        listing says which checksum it holds, and completing names them again, so the store
        refuses to join parts that differ. Raises UploadNotVerified."""
        stored = self.list_parts(key, upload_id)
        if stored is None:
            raise PartsMissing("the upload is gone from the store; upload again from byte 0")
        by_number = {p.number: p for p in stored}
        missing = [n for n, _ in enumerate(declared, 1) if n not in by_number]
        if missing:
            raise PartsMissing(
                f"part {', '.join(map(str, missing[:5]))} of {len(declared)} has not arrived; "
                "send the parts the upload's status lists as missing"
            )
        parts = []
        for number, (size, sha) in enumerate(declared, 1):
            got = by_number[number]
            held = sha256_hex(got.sha256_b64) if got.sha256_b64 else sha
            if got.size != size or held != sha:
                raise UploadNotVerified(
                    f"part {number} holds {got.size} bytes with sha256 {held[:12]}…, not the "
                    f"{size} bytes with sha256 {sha[:12]}… declared; upload it again"
                )
            parts.append({"PartNumber": number, "ETag": got.etag,
                          "ChecksumSHA256": sha256_b64(sha)})  # fmt: skip
        try:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=checked_key(key), UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )  # fmt: skip
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("InvalidPart", "BadDigest", "InvalidPartOrder", "EntityTooSmall"):
                raise UploadNotVerified(f"the store refused to join the parts ({code})") from exc
            raise StorageUnavailable(
                f"the object store could not join the parts of {key} ({code or exc})"
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"the object store could not join the parts of {key}") from exc

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with contextlib.suppress(ClientError):
            self._call(f"aborting an upload to {key}", self.client.abort_multipart_upload,
                       Key=checked_key(key), UploadId=upload_id)  # fmt: skip

    def multipart_uploads(self) -> list[tuple[str, str, datetime]]:
        """(key, upload id, when it began) of every unfinished multipart upload."""
        found = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket)
        try:
            for page in pages:
                found += [
                    (u["Key"], u["UploadId"], u["Initiated"]) for u in page.get("Uploads", [])
                ]
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable("the object store could not list unfinished uploads") from exc
        return found


def plan_parts(size: int, part_size: int) -> list[int]:
    """The sizes of the parts a file of ``size`` bytes is sent in, ``part_size`` each but the
    last. Raises ValueError for a part size the store would refuse."""
    if not MIN_PART <= part_size <= MAX_PART:
        raise ValueError(f"a part is {MIN_PART} to {MAX_PART} bytes, not {part_size}")
    count = max(1, -(-size // part_size))
    if count > MAX_PARTS:
        raise ValueError(f"{count} parts of {part_size} bytes: the store takes {MAX_PARTS} at most")
    return [part_size] * (count - 1) + [size - part_size * (count - 1)]
