"""Tiny real media for tests, generated with ffmpeg's lavfi sources (no fixtures on disk)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

FFMPEG = os.environ.get("FFMPEG_BINARY", "ffmpeg")


def make_clip(
    path: Path,
    *,
    width: int = 320,
    height: int = 180,
    fps: float = 30,
    duration: float = 2.0,
    audio: str | None = "stereo",  # "stereo", "mono", "5.1" or None for no audio
    sample_rate: int = 48_000,
    tone_hz: int = 440,
    pattern: str = "testsrc2",
    sar: str | None = None,
    rotate: int | None = None,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
) -> Path:
    """Write a short clip: a moving test pattern plus a sine tone. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"{pattern}=size={width}x{height}:rate={fps}:duration={duration}",
    ]
    if audio:
        layout = {"stereo": "stereo", "mono": "mono", "5.1": "5.1"}[audio]
        cmd += [
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate={sample_rate}:duration={duration},"
            f"aformat=channel_layouts={layout}",
        ]
    vf = []
    if sar:
        vf.append(f"setsar={sar}")
    if vf:
        cmd += ["-vf", ",".join(vf)]
    cmd += ["-c:v", codec, "-pix_fmt", pix_fmt]
    if codec == "libx264":
        cmd += ["-preset", "ultrafast", "-g", str(int(fps))]
    if audio:
        cmd += [
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            {"stereo": "2", "mono": "1", "5.1": "6"}[audio],
        ]
    if rotate is not None:
        cmd += ["-metadata:s:v:0", f"rotate={rotate}"]
    cmd += ["-shortest", str(path)]
    subprocess.run(cmd, check=True)
    return path


def make_image(path: Path, *, width: int = 64, height: int = 64, color: str = "red") -> Path:
    """Write a solid-colour PNG (for watermarks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c={color}:size={width}x{height}",
            "-frames:v",
            "1",
            str(path),
        ],
        check=True,
    )
    return path


def make_audio(path: Path, *, duration: float = 3.0, tone_hz: int = 220) -> Path:
    """Write a short AAC music track (m4a)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone_hz}:sample_rate=44100:duration={duration}",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            str(path),
        ],
        check=True,
    )
    return path


def make_local_file_playlist(path: Path, segment: Path, *, duration: float = 2.0) -> Path:
    """Write an HLS playlist (``#EXTM3U``) whose one segment is the local file ``segment`` as a
    ``file://`` URL: what an attacker uploads, or serves at a clip URL, to make ffmpeg read a
    farmhand's own disk into the video. ffmpeg finds it is HLS by its content, whatever the
    file is called."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#EXTM3U\n#EXT-X-VERSION:3\n"
        f"#EXT-X-TARGETDURATION:{int(duration) + 1}\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:{duration:.3f},\n{segment.resolve().as_uri()}\n#EXT-X-ENDLIST\n"
    )
    return path


def make_png_declaring(path: Path, width: int, height: int) -> Path:
    """Write a valid all-black RGB PNG of ``width`` x ``height``, crafted with zlib: 16000 x
    16000 is a 0.7 MB file that a decoder expands to 768 MB of pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    row = b"\x00" * (width * 3 + 1)  # filter byte 0, then black pixels
    rows_per_block = max(1, (16 << 20) // len(row))
    packer = zlib.compressobj(9)
    idat = []
    for first in range(0, height, rows_per_block):
        idat.append(packer.compress(row * min(rows_per_block, height - first)))
    idat.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(idat))
                     + chunk(b"IEND", b""))  # fmt: skip
    return path


def make_solid_clip(path: Path, *, color: str = "magenta", duration: float = 2.0) -> Path:
    """Write a clip of one flat colour with a 1 kHz tone (format from the extension; ``.ts``
    for an HLS segment): a picture easy to look for in a render that must not contain it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"color=c={color}:s=320x180:r=30:d={duration}",
         "-f", "lavfi", "-i", f"sine=frequency=1000:duration={duration}",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
         str(path)],
        check=True,
    )  # fmt: skip
    return path


def make_stream(folder: Path, kind: str, *, duration: float = 3.0) -> Path:
    """Write a short streaming rendition into ``folder``: ``hls`` (``index.m3u8`` and MPEG-TS
    segments) or ``dash`` (``manifest.mpd``, separate video and audio segments, which a
    downloader must merge). Returns the playlist or manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    muxer = {
        "hls": ["-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod", "index.m3u8"],
        "dash": ["-f", "dash", "-seg_duration", "1", "-use_template", "1", "-use_timeline", "0",
                 "manifest.mpd"],
    }[kind]  # fmt: skip
    subprocess.run(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", f"testsrc2=size=320x180:rate=30:duration={duration}",
         "-f", "lavfi", "-i", f"sine=frequency=440:duration={duration}",
         "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30",
         "-c:a", "aac", *muxer],
        cwd=folder, check=True,
    )  # fmt: skip
    return folder / muxer[-1]
