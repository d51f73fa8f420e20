"""An MP4's header read from object storage by byte ranges: the board checks an output there
without downloading it.

The top-level boxes are walked as ``timeline.mp4info`` walks a file (a file cut short, with its
last box running past the end, is refused); only their headers, ``ftyp`` and ``moov`` are read.
Those two boxes are written to a small local file that ``timeline.mp4info.read_mp4`` reads, so
the header is understood by the same code whichever store holds the file.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

from timeline.mp4info import MAX_MOOV, Mp4Error, Mp4Info, read_mp4

FIRST_READ = 256 * 1024  # a faststart MP4 has ftyp and moov here: one request
MAX_TOP_BOXES = 10_000


def read_mp4_ranges(read: Callable[[int, int], bytes], size: int, scratch: Path) -> Mp4Info:
    """The ``Mp4Info`` of an object of ``size`` bytes that ``read(start, end)`` (inclusive)
    reads; ``scratch`` is a local file name it may use (removed afterwards). Raises Mp4Error."""
    head = read(0, min(size, FIRST_READ) - 1) if size else b""

    def at(start: int, length: int) -> bytes:
        if start + length <= len(head):
            return head[start : start + length]
        return read(start, min(size, start + length) - 1)

    boxes: dict[bytes, bytes] = {}
    pos = 0
    for _ in range(MAX_TOP_BOXES):
        if pos + 8 > size:
            break
        header = at(pos, 16)
        length, kind = struct.unpack_from(">I4s", header, 0)
        skip = 8
        if length == 1:
            if len(header) < 16:
                raise Mp4Error(f"top-level box {kind!r} at byte {pos} is truncated")
            length, skip = struct.unpack_from(">Q", header, 8)[0], 16
        elif length == 0:
            length = size - pos
        if length < skip or pos + length > size:
            raise Mp4Error(f"top-level box {kind!r} at byte {pos} is truncated")
        if kind == b"moov" and length > MAX_MOOV:
            raise Mp4Error("moov box is implausibly large")
        if kind in (b"ftyp", b"moov") and kind not in boxes:
            boxes[kind] = at(pos + skip, length - skip)
        pos += length
    if pos != size:
        raise Mp4Error(f"{size - pos} stray bytes after the last box")
    try:
        with open(scratch, "wb") as out:
            for kind in (b"ftyp", b"moov"):
                if kind in boxes:
                    out.write(struct.pack(">I4s", len(boxes[kind]) + 8, kind) + boxes[kind])
        return read_mp4(scratch)
    finally:
        scratch.unlink(missing_ok=True)
