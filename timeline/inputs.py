"""How ffmpeg and ffprobe open a file: media from strangers is opened as media and nothing more.

A submitter's upload or clip URL is a file on the render machine by the time ffmpeg opens it, and
ffmpeg picks its demuxer by *content*, whatever the file is called. A "video" whose bytes are an
HLS playlist (``#EXTM3U``), a DASH manifest, a concat list or an SDP description makes ffmpeg
open what that text names: files on the farmhand's own disk (``file:///home/…``), addresses on
the owner's network. Rendered into the video, that is a private file handed to a stranger.

So every media input is opened with two allow-lists (ffmpeg's own ``-protocol_whitelist`` and
``-format_whitelist`` input options, which also bind every file a demuxer would open for it):

- protocols: ``file`` only. The input itself is named ``file:<path>`` so a path can never be
  read as another protocol (``http:…``, ``subfile,…``, ``concat:…``).
- demuxers: ``MEDIA_FORMATS``, containers and streams of real media, none of which can name
  another file. A playlist, manifest or concat list fails to open, naming its demuxer; see
  :func:`refusal`.

The renderer's own files (the list its segments are joined from, its audio parts) are opened
with :func:`own_input`, naming the one demuxer the renderer wrote them for: the concat demuxer
is allowed there and only there. Inputs the renderer generates itself (``-f lavfi``) are not
files and take none of this.
"""

from __future__ import annotations

import re
from pathlib import Path

# Demuxers a media input may use (ffmpeg matches each name against the demuxer's names, so
# "mov" is the "mov,mp4,m4a,3gp,3g2,mj2" demuxer and "matroska" the "matroska,webm" one).
MEDIA_FORMATS = (
    # video containers
    "mov", "matroska", "avi", "flv", "mpegts", "mpeg", "asf", "ogg", "mxf", "nut", "dv",
    "ivf", "obu",
    # bare video streams
    "h264", "hevc", "m4v", "mpegvideo", "av1",
    # audio
    "mp3", "aac", "ac3", "eac3", "wav", "w64", "flac", "aiff", "caf", "wv", "dts",
    # still pictures, recognised by content (not image2: it reads file-name patterns and globs)
    "png_pipe", "jpeg_pipe", "webp_pipe", "bmp_pipe", "tiff_pipe", "gif", "apng",
)  # fmt: skip

# Demuxers whose input is a list of other things to open: what the allow-list is for.
PLAYLIST_FORMATS = {
    "hls": "an HLS playlist (#EXTM3U)",
    "dash": "a DASH manifest",
    "concat": "an ffmpeg concat list",
    "sdp": "an SDP session description",
    "webm_dash_manifest": "a WebM DASH manifest",
    "imf": "an IMF composition playlist",
}

_NOT_ON_WHITELIST = re.compile(r"\[([\w,]+) @ [^\]]*\] Format not on whitelist")
_PROTOCOL_REFUSED = re.compile(r"Protocol '(\w+)' not on whitelist")


def media_input(path: Path | str, *, max_pixels: int, max_streams: int) -> list[str]:
    """The input options and ``-i`` of ffmpeg (or ffprobe) reading the media file ``path``:
    only the local file, only real media containers, no picture over ``max_pixels`` decoded,
    no more than ``max_streams`` streams. Put other input options (``-ss``, ``-t``) before."""
    return [*media_input_options(max_pixels=max_pixels, max_streams=max_streams),
            "-i", file_url(path)]  # fmt: skip


def media_input_options(*, max_pixels: int, max_streams: int) -> list[str]:
    """The options of :func:`media_input` without the ``-i``: for a tool that names the file
    itself (yt-dlp merging downloaded streams, as ``file:<path>``)."""
    return [
        "-protocol_whitelist", "file",
        "-format_whitelist", ",".join(MEDIA_FORMATS),
        "-max_streams", str(max_streams),
        "-max_pixels", str(max_pixels),
    ]  # fmt: skip


def own_input(path: Path | str, demuxer: str) -> list[str]:
    """The input options and ``-i`` of ffmpeg reading a file the renderer wrote itself for
    ``demuxer`` (``concat`` for its list of segments, whose entries are opened under the same
    allow-lists; ``mov`` or ``matroska`` for its own parts)."""
    allowed = f"{demuxer},mov" if demuxer == "concat" else demuxer
    return ["-protocol_whitelist", "file", "-format_whitelist", allowed, "-i", file_url(path)]


def file_url(path: Path | str) -> str:
    """``path`` as an input name ffmpeg can only read as a local file (``file:`` prefixed; a
    Windows drive path ``C:\\…`` stays a path after it)."""
    return f"file:{path}"


def refusal(stderr: str) -> str | None:
    """Why ffmpeg or ffprobe refused to open a file under the allow-lists of :func:`media_input`,
    in words for the dashboard ("is an HLS playlist (#EXTM3U), not a media file…"), or None when
    it failed for another reason (a damaged file, a cap: see ``timeline.probe``)."""
    found = _NOT_ON_WHITELIST.search(stderr)
    if found is not None:
        demuxer = found.group(1)
        kind = next((what for name, what in PLAYLIST_FORMATS.items()
                     if name in demuxer.split(",")), None)  # fmt: skip
        if kind is not None:
            return (f"is {kind}, not a media file; playlists and lists of other files are "
                    "refused, because they make ffmpeg read whatever they name")  # fmt: skip
        return (f"is in a format renders do not open ({demuxer}); use a common video, audio "
                "or picture format")  # fmt: skip
    found = _PROTOCOL_REFUSED.search(stderr)
    if found is not None:
        return f"refers to another file or address ({found.group(1)}:), which renders never open"
    return None
