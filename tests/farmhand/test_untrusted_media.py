"""Web media that is not what it says: a clip URL whose body is a playlist of the farmhand's own
files, an HLS stream whose segments are local files or on the owner's network, a tiny picture
declaring a huge size. The farmhand fails such a job for good, before any ffmpeg opens what the
file names and before any decoder allocates it; nothing of it reaches the cache or a render."""

from __future__ import annotations

import asyncio
import shutil

import pytest

from farmhand.fetch import AddressRefused, FetchPermanentError, fetch_all, fetch_url
from farmhand.netguard import AddressPolicy
from tests.farmhand.media_server import Served, board_client
from tests.media import (
    make_local_file_playlist,
    make_png_declaring,
    make_solid_clip,
    make_stream,
)
from timeline.probe import probe
from timeline.render import render
from timeline.spec import parse_compilation

MB = 1024**2
LAN = AddressPolicy.allowing("127.0.0.1")  # the test server plays a LAN source the owner allows
PUBLIC_STAND_IN = AddressPolicy.allowing("127.0.0.2")
HLS = "application/vnd.apple.mpegurl"
STREAM_TYPES = {".m3u8": HLS, ".mpd": "application/dash+xml", ".ts": "video/mp2t",
                ".m4s": "video/iso.segment"}  # fmt: skip


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """A private video on the farmhand's disk (solid magenta, MPEG-TS like an HLS segment)."""
    return make_solid_clip(tmp_path_factory.mktemp("private") / "holiday.ts")


async def test_playlist_at_a_clip_url_is_refused_and_never_rendered(
    secret, server, cache, tmp_path
):
    playlist = make_local_file_playlist(tmp_path / "evil.mp4", secret).read_bytes()
    server.files["/clips/evil.mp4"] = Served(body=playlist, content_type="video/mp4")
    url = f"{server.url}/clips/evil.mp4"
    compilation = parse_compilation({
        "output": {"width": 320, "height": 180, "fps": 30, "quality": "draft"},
        "clips": [{"url": url}],
    })  # fmt: skip
    out = tmp_path / "out" / "video.mp4"

    with pytest.raises(FetchPermanentError) as refused:
        async with board_client(server) as client:
            paths = await fetch_all(compilation.sources(), client=client, cache=cache, media={},
                                    headers={}, max_bytes=10 * MB, policy=LAN)  # fmt: skip
        await asyncio.to_thread(render, compilation, paths, out)  # what the runner does next

    message = str(refused.value)
    assert message.startswith(f"{url}: is an HLS playlist") and "not a media file" in message
    assert not refused.value.retryable
    assert not out.exists()
    assert cache.entries() == []


async def test_hls_stream_whose_segments_are_local_files_is_refused(secret, server, cache):
    playlist = make_local_file_playlist(cache.root.parent / "index.m3u8", secret).read_bytes()
    server.files["/live/index.m3u8"] = Served(body=playlist, content_type=HLS)
    url = f"{server.url}/live/index.m3u8"
    with pytest.raises(FetchPermanentError) as refused:
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=LAN, attempts=1)
    assert url in str(refused.value)
    assert cache.entries() == []
    secret_bytes = secret.read_bytes()[:4096]
    for leftover in cache.root.rglob("*"):  # not even a partial copy of it
        assert not leftover.is_file() or secret_bytes not in leftover.read_bytes()


async def test_hls_segment_on_the_owners_network_is_refused(media_dir, server, public_site, cache):
    server.files["/seg0.ts"] = Served(body=(media_dir / "a.mp4").read_bytes())
    playlist = ("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                f"#EXTINF:2.0,\n{server.url}/seg0.ts\n#EXT-X-ENDLIST\n")  # fmt: skip
    public_site.files["/vod/index.m3u8"] = Served(body=playlist.encode(), content_type=HLS)
    url = f"{public_site.url}/vod/index.m3u8"
    with pytest.raises(AddressRefused, match=r"it leads to 127\.0\.0\.1"):
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=PUBLIC_STAND_IN)
    assert public_site.gets("/vod/index.m3u8")
    assert server.requests == []


async def test_picture_over_the_pixel_cap_at_a_url_is_refused(server, cache, tmp_path):
    poster = make_png_declaring(tmp_path / "poster.png", 16000, 16000)
    server.files["/poster.png"] = Served(body=poster.read_bytes(), content_type="image/png")
    url = f"{server.url}/poster.png"
    with pytest.raises(FetchPermanentError) as refused:
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=LAN)
    assert str(refused.value).startswith(f"{url}: its picture is 16000x16000, over the limit")
    assert cache.entries() == []


@pytest.mark.parametrize("kind", ["hls", "dash"])
async def test_real_streams_still_download_through_the_guard(kind, server, cache, tmp_path):
    index = make_stream(tmp_path / kind, kind)
    for file in index.parent.iterdir():
        server.files[f"/{kind}/{file.name}"] = Served(body=file.read_bytes(),
                                                      content_type=STREAM_TYPES[file.suffix])  # fmt: skip
    path = await fetch_url(f"{server.url}/{kind}/{index.name}", cache=cache, max_bytes=10 * MB,
                           policy=LAN)  # fmt: skip
    info = probe(path)
    assert info.has_video and info.has_audio  # DASH: the two streams merged, under the allow-lists
    assert info.duration_s == pytest.approx(3.0, abs=0.2)


async def test_stream_that_only_ffmpeg_could_download_is_refused(secret, server, cache):
    # SAMPLE-AES is beyond yt-dlp's own HLS downloader, which would hand the playlist to ffmpeg:
    # ffmpeg would fetch it past the guard and follow the file:// segment.
    playlist = ("#EXTM3U\n#EXT-X-VERSION:5\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"
                '#EXT-X-KEY:METHOD=SAMPLE-AES,URI="key.bin",KEYFORMAT="identity"\n'
                f"#EXTINF:2.0,\n{secret.as_uri()}\n#EXTINF:2.0,\nseg.ts\n#EXT-X-ENDLIST\n")  # fmt: skip
    server.files["/v/index.m3u8"] = Served(body=playlist.encode(), content_type=HLS)
    server.files["/v/seg.ts"] = Served(body=secret.read_bytes(), content_type="video/mp2t")
    server.files["/v/key.bin"] = Served(body=b"0" * 16)
    url = f"{server.url}/v/index.m3u8"
    ffmpeg = shutil.which("ffmpeg") or "ffmpeg"  # a path, as FFMPEG_BINARY=/usr/bin/ffmpeg gives
    with pytest.raises(FetchPermanentError, match="ffmpeg's own downloader"):
        await fetch_url(url, cache=cache, max_bytes=10 * MB, policy=LAN, ffmpeg=ffmpeg)
    assert {r.path for r in server.requests} == {"/v/index.m3u8"}  # yt-dlp's reads, no ffmpeg's
    assert cache.entries() == []
