"""Fetching media: board downloads with resume and checksum, web media through yt-dlp."""

from __future__ import annotations

import asyncio

import httpx
import msgspec
import pytest

from farmhand.cache import MediaCache
from farmhand.fetch import (
    FetchLeaseLost,
    FetchPermanentError,
    FetchTransientError,
    board_headers,
    fetch_all,
    fetch_media,
    fetch_url,
)
from farmhand.netguard import AddressPolicy
from tests.farmhand.media_server import Served, board_client, serve_media
from timeline.spec import Source
from wire import LEASE_HEADER, MediaRef

# The test web server is on 127.0.0.1: allowed here as an owner allows a LAN source (the guard
# itself is tested in test_netguard.py).
LAN = AddressPolicy.allowing("127.0.0.1")


async def test_board_media_is_downloaded_with_both_tokens_and_reused(media_dir, server, cache):
    ref = serve_media(server, "m1", media_dir / "a.mp4")
    async with board_client(server) as client:
        path = await fetch_media(client, ref, board_headers("tok", "lease-1"), cache=cache)
        again = await fetch_media(client, ref, board_headers("tok", "lease-2"), cache=cache)

    assert path == again
    assert path.read_bytes() == (media_dir / "a.mp4").read_bytes()
    assert path.suffix == ".mp4"
    [request] = server.gets(ref.url)  # the second job found it in the cache
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.headers[LEASE_HEADER] == "lease-1"


async def test_download_resumes_after_the_connection_is_cut(media_dir, server, cache):
    body = (media_dir / "b.mp4").read_bytes()
    cut = len(body) // 2
    ref = serve_media(server, "m1", media_dir / "b.mp4", cut_at=cut)
    async with board_client(server) as client:
        path = await fetch_media(client, ref, {}, cache=cache)

    assert path.read_bytes() == body
    first, second = server.gets(ref.url)
    assert "Range" not in first.headers
    assert second.headers["Range"] == f"bytes={cut}-"  # only the missing half again
    assert not cache.partial_path(f"sha256:{ref.sha256}").exists()


async def test_wrong_sha256_is_retried_once_then_refused(media_dir, server, cache):
    good = serve_media(server, "m1", media_dir / "a.mp4")
    ref = MediaRef(id="m1", url=good.url, size=good.size, sha256="0" * 64, filename="a.mp4")
    async with board_client(server) as client:
        with pytest.raises(FetchPermanentError) as err:
            await fetch_media(client, ref, {}, cache=cache)

    assert "m1 (a.mp4)" in str(err.value)
    assert "upload it again" in str(err.value)
    assert len(server.gets(ref.url)) == 2  # a damaged transfer gets one more chance
    assert cache.entries() == []
    assert not cache.partial_path(f"sha256:{ref.sha256}").exists()


async def test_board_answers_map_to_typed_errors(media_dir, server, cache):
    ref = serve_media(server, "m1", media_dir / "a.mp4")
    async with board_client(server) as client:
        server.files[ref.url].status = 409
        with pytest.raises(FetchLeaseLost):
            await fetch_media(client, ref, {}, cache=cache)
        server.files[ref.url].status = 404
        with pytest.raises(FetchPermanentError, match="not on the board"):
            await fetch_media(client, ref, {}, cache=cache)
        server.files[ref.url].status = 503
        with pytest.raises(FetchTransientError, match="503"):
            await fetch_media(client, ref, {}, cache=cache, attempts=2)
    assert len(server.gets(ref.url)) == 1 + 1 + 2  # only the 503 was retried


async def test_media_over_the_download_limit_is_refused_unfetched(media_dir, server, cache):
    ref = serve_media(server, "m1", media_dir / "a.mp4")
    async with board_client(server) as client:
        with pytest.raises(FetchPermanentError, match="download limit"):
            await fetch_media(client, ref, {}, cache=cache, max_bytes=ref.size - 1)
    assert server.gets(ref.url) == []


async def test_two_jobs_fetching_the_same_media_download_it_once(media_dir, server, cache):
    ref = serve_media(server, "m1", media_dir / "a.mp4", delay_s=0.3)
    async with board_client(server) as client:
        with cache.pin_set() as job1, cache.pin_set() as job2:
            p1, p2 = await asyncio.gather(
                fetch_media(client, ref, {}, cache=cache, pins=job1),
                fetch_media(client, ref, {}, cache=cache, pins=job2),
            )
            assert len(job1) == len(job2) == 1
    assert p1 == p2
    assert len(server.gets(ref.url)) == 1


async def test_lru_eviction_keeps_fetched_media_under_the_bound(media_dir, server, tmp_path):
    names = ["a.mp4", "b.mp4", "intro.mp4"]
    refs = [serve_media(server, f"m{i}", media_dir / n) for i, n in enumerate(names)]
    bound = refs[0].size + refs[1].size + refs[2].size - 1  # all three never fit
    cache = MediaCache(tmp_path / "c", max_bytes=bound)
    async with board_client(server) as client:
        first = await fetch_media(client, refs[0], {}, cache=cache)
        await asyncio.sleep(0.05)  # distinct last-use times
        second = await fetch_media(client, refs[1], {}, cache=cache)
        await asyncio.sleep(0.05)
        await fetch_media(client, refs[0], {}, cache=cache)  # used again: now the newest
        await asyncio.sleep(0.05)
        third = await fetch_media(client, refs[2], {}, cache=cache)

    assert first.exists() and third.exists()
    assert not second.exists()  # least recently used
    assert cache.total_bytes() <= bound


# ---------------------------------------------------------------- web media through yt-dlp


async def test_plain_mp4_url_is_fetched_through_ytdlp(media_dir, server, cache):
    body = (media_dir / "b.mp4").read_bytes()
    server.files["/clips/b.mp4"] = Served(body=body, content_type="video/mp4")
    url = f"{server.url}/clips/b.mp4?utm_source=newsletter"

    path = await fetch_url(url, cache=cache, max_bytes=10 * 1024**2, policy=LAN)
    again = await fetch_url(
        f"{server.url}/clips/b.mp4", cache=cache, max_bytes=10 * 1024**2, policy=LAN
    )

    assert path == again  # one cache entry for both spellings
    assert path.read_bytes() == body
    downloads = len(server.gets("/clips/b.mp4"))
    await fetch_url(url, cache=cache, max_bytes=10 * 1024**2, policy=LAN)
    assert len(server.gets("/clips/b.mp4")) == downloads  # the cache answered


async def test_url_that_does_not_exist_is_a_permanent_error_naming_it(server, cache):
    url = f"{server.url}/clips/missing.mp4"
    with pytest.raises(FetchPermanentError) as err:
        await fetch_url(url, cache=cache, max_bytes=10 * 1024**2, policy=LAN)
    assert url in str(err.value)
    assert "404" in str(err.value)
    assert cache.entries() == []


async def test_html_page_without_video_is_a_permanent_error_naming_it(server, cache):
    html = b"<html><head><title>Blog</title></head><body><p>No video here.</p></body></html>"
    server.files["/blog/post"] = Served(body=html, content_type="text/html; charset=utf-8")
    url = f"{server.url}/blog/post"
    with pytest.raises(FetchPermanentError) as err:
        await fetch_url(url, cache=cache, max_bytes=10 * 1024**2, policy=LAN)
    assert url in str(err.value)
    assert "not a video" in str(err.value)


async def test_page_with_one_embedded_video_gives_that_video(media_dir, server, cache):
    body = (media_dir / "a.mp4").read_bytes()
    server.files["/v/a.mp4"] = Served(body=body, content_type="video/mp4")
    page = b'<html><body><h1>Ace</h1><video src="/v/a.mp4"></video></body></html>'
    server.files["/watch/ace"] = Served(body=page, content_type="text/html")
    path = await fetch_url(
        f"{server.url}/watch/ace", cache=cache, max_bytes=10 * 1024**2, policy=LAN
    )
    assert path.read_bytes() == body


async def test_playlist_is_refused_without_downloading_its_videos(media_dir, server, cache):
    body = (media_dir / "a.mp4").read_bytes()
    server.files["/v/a.mp4"] = Served(body=body, content_type="video/mp4")
    server.files["/v/b.mp4"] = Served(body=body, content_type="video/mp4")
    page = b'<html><body><video src="/v/a.mp4"></video><video src="/v/b.mp4"></video></body></html>'
    server.files["/playlist"] = Served(body=page, content_type="text/html")
    url = f"{server.url}/playlist"
    with pytest.raises(FetchPermanentError, match="playlist") as err:
        await fetch_url(url, cache=cache, max_bytes=10 * 1024**2, policy=LAN)
    assert url in str(err.value)
    assert server.gets("/v/a.mp4") == server.gets("/v/b.mp4") == []


async def test_unreachable_site_is_a_transient_error(server, cache):
    url = "http://127.0.0.1:9/clip.mp4"  # discard port: connection refused
    with pytest.raises(FetchTransientError) as err:
        await fetch_url(url, cache=cache, max_bytes=10 * 1024**2, attempts=1, policy=LAN)
    assert url in str(err.value)


async def test_url_over_the_size_limit_is_refused(media_dir, server, cache):
    body = (media_dir / "a.mp4").read_bytes()
    server.files["/clips/a.mp4"] = Served(body=body, content_type="video/mp4")
    with pytest.raises(FetchPermanentError, match="download limit"):
        await fetch_url(
            f"{server.url}/clips/a.mp4", cache=cache, max_bytes=len(body) // 2, policy=LAN
        )
    assert cache.entries() == []


# ---------------------------------------------------------------- a whole job


async def test_fetch_all_gets_every_source_of_a_job_once(media_dir, server, cache):
    refs = {
        "m1": serve_media(server, "m1", media_dir / "a.mp4", delay_s=0.2),
        "m2": serve_media(server, "m2", media_dir / "logo.png", delay_s=0.2),
    }
    server.files["/web/b.mp4"] = Served(body=(media_dir / "b.mp4").read_bytes(),
                                        content_type="video/mp4")  # fmt: skip
    sources = [
        Source(media="m1"),
        Source(url=f"{server.url}/web/b.mp4"),
        Source(media="m1"),  # used twice in the timeline, fetched once
        Source(media="m2"),
    ]
    progress: list[float] = []
    async with board_client(server) as client:
        with cache.pin_set() as pins:
            paths = await fetch_all(
                sources, client=client, cache=cache, media=refs, headers={}, pins=pins,
                max_bytes=10 * 1024**2, concurrency=3, on_progress=progress.append, policy=LAN,
            )  # fmt: skip
            assert len(pins) == 3

    assert set(paths) == {"media:m1", "media:m2", f"url:{server.url}/web/b.mp4"}
    assert paths["media:m2"].suffix == ".png"
    assert paths["media:m1"].read_bytes() == (media_dir / "a.mp4").read_bytes()
    assert progress[-1] == 1.0
    assert len(server.gets(refs["m1"].url)) == 1


async def test_fetch_all_fails_on_the_first_permanent_error(media_dir, server, cache):
    refs = {"m1": serve_media(server, "m1", media_dir / "a.mp4")}
    sources = [Source(media="m1"), Source(media="ghost")]
    async with board_client(server) as client:
        with pytest.raises(FetchPermanentError, match="ghost"):
            await fetch_all(sources, client=client, cache=cache, media=refs, headers={},
                            max_bytes=10 * 1024**2)  # fmt: skip


async def test_media_at_a_url_off_the_board_is_fetched_without_the_farmhand_token(
    media_dir, server, cache
):
    """A context may point media at another host (object storage's presigned URLs): the
    farmhand's token is for the board only."""
    ref = serve_media(server, "m-off", media_dir / "b.mp4")
    elsewhere = msgspec.structs.replace(ref, url=f"{server.url}{ref.url}")
    # the client's board is another origin than the server holding the bytes
    async with httpx.AsyncClient(base_url="http://board.invalid:9", timeout=10) as client:
        path = await fetch_media(client, elsewhere, board_headers("tok", "lease-9"), cache=cache)
    assert path.read_bytes() == (media_dir / "b.mp4").read_bytes()
    [request] = server.gets(ref.url)
    assert "Authorization" not in request.headers
