"""Media helpers only the timeline tests need (tests/media.py stays shared and append-only)."""

from __future__ import annotations

import struct
import subprocess
import threading
from pathlib import Path

import psutil

from tests.media import FFMPEG


def set_rotation(path: Path, degrees: int) -> Path:
    """Write a display matrix turning the video ``degrees`` clockwise into an mp4's track header,
    as phones do. (ffmpeg 5.1 ignores ``-metadata rotate=``, so the box is patched in place.)"""
    data = bytearray(Path(path).read_bytes())
    for start, end in _children(data, 0, len(data), b"moov"):
        for tstart, tend in _children(data, start, end, b"trak"):
            for hstart, _ in _children(data, tstart, tend, b"tkhd"):
                version = data[hstart]
                matrix = hstart + 4 + (32 if version == 1 else 20) + 16
                width, height = struct.unpack(">II", data[matrix + 36 : matrix + 44])
                if width == 0:  # the audio track
                    continue
                w, h, one = width >> 16 << 16, height >> 16 << 16, 1 << 16
                a, b, c, d, tx, ty = {
                    0: (one, 0, 0, one, 0, 0),
                    90: (0, one, -one, 0, h, 0),
                    180: (-one, 0, 0, -one, w, h),
                    270: (0, -one, one, 0, 0, w),
                }[degrees % 360]
                data[matrix : matrix + 36] = struct.pack(">9i", a, b, 0, c, d, 0, tx, ty, 1 << 30)
                Path(path).write_bytes(bytes(data))
                return Path(path)
    raise ValueError(f"{path}: no video track header found")


def _children(data: bytearray, start: int, end: int, kind: bytes):
    """(payload start, end) of each box of ``kind`` directly inside ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, name = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[pos + 8 : pos + 16])[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        if name == kind:
            yield pos + header, pos + size
        pos += size


def make_interlaced(path: Path, *, duration: float = 1.0) -> Path:
    """A 25 fps top-field-first interlaced clip with sound, as broadcast cameras record."""
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=25:duration={duration}",
         "-f", "lavfi", "-i", f"sine=frequency=600:duration={duration}",
         "-vf", "setfield=tff", "-c:v", "libx264", "-preset", "ultrafast",
         "-flags", "+ildct+ilme", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip
    return path


class PeakMemory:
    """Samples, in a thread, the summed RSS of the descendants this process starts while it
    measures (the ffmpeg tree: not the servers a test session already runs, a board or the S3
    server), the most of them alive at once, and this process's own RSS. Used by the memory test and
    ``scripts/bench/render.py --memory``."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_children = 0
        self.peak_self = 0
        self.most_processes = 0
        self._before: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._before = {child.pid for child in psutil.Process().children(recursive=True)}
        self._thread.start()
        return self

    def __exit__(self, *_) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total, count = 0, 0
            for child in me.children(recursive=True):
                if child.pid in self._before:
                    continue
                try:
                    total += child.memory_info().rss
                    count += 1
                except psutil.Error:
                    pass
            self.peak_children = max(self.peak_children, total)
            self.most_processes = max(self.most_processes, count)
            self.peak_self = max(self.peak_self, me.memory_info().rss)
            self._stop.wait(self.interval_s)
