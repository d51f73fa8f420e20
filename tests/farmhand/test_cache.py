"""The media cache: keys, LRU eviction under the byte bound, pins, sharing between processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from farmhand.cache import MediaCache, key_for_sha256, key_for_url, normalize_url
from farmhand.fetch import fetch_media
from tests.farmhand.media_server import board_client, serve_media

ROOT = Path(__file__).resolve().parents[2]


def test_same_video_under_different_spellings_has_one_key():
    assert key_for_url("https://youtu.be/abc123?si=XYZ") == key_for_url(
        "https://m.youtube.com/watch?v=abc123&feature=share&t=42"
    )
    assert normalize_url("https://www.youtube.com/shorts/abc123") == (
        "https://www.youtube.com/watch?v=abc123"
    )
    assert normalize_url("HTTPS://Example.COM:443/a/b.mp4?z=1&a=2&utm_source=x#frag") == (
        "https://example.com/a/b.mp4?a=2&z=1"
    )
    # Different files stay different.
    assert key_for_url("https://example.com/a.mp4") != key_for_url("https://example.com/A.mp4")
    assert key_for_url("https://example.com/v?id=1") != key_for_url("https://example.com/v?id=2")


def test_board_media_key_is_its_sha256():
    digest = "AB" * 32
    assert key_for_sha256(digest) == "sha256:" + "ab" * 32
    with pytest.raises(ValueError):
        key_for_sha256("not-a-hash")


def _entry(cache: MediaCache, key: str, size: int, tmp_path: Path):
    """A create() that writes ``size`` bytes into the cache's partial folder."""

    async def create() -> Path:
        part = cache.partial_path(key)
        part.write_bytes(os.urandom(size))
        return part

    return create


async def test_least_recently_used_entry_is_evicted_under_the_bound(tmp_path):
    cache = MediaCache(tmp_path / "c", max_bytes=2500)
    a, b, c = (key_for_sha256(ch * 64) for ch in "abc")
    path_a = await cache.get_or_create(a, _entry(cache, a, 1000, tmp_path), name="a.mp4")
    path_b = await cache.get_or_create(b, _entry(cache, b, 1000, tmp_path), name="b.mp4")
    # a is used again, so b is now the least recently used.
    os.utime(path_b, (time.time() - 100, time.time() - 100))
    os.utime(path_a, (time.time() - 50, time.time() - 50))
    assert await cache.get_or_create(a, _entry(cache, a, 1, tmp_path)) == path_a  # a hit
    path_c = await cache.get_or_create(c, _entry(cache, c, 1000, tmp_path), name="c.mp4")

    assert path_a.exists() and path_c.exists()
    assert not path_b.exists()
    assert cache.total_bytes() <= 2500
    assert path_a.suffix == ".mp4"


async def test_pinned_entries_are_never_evicted(tmp_path):
    cache = MediaCache(tmp_path / "c", max_bytes=1500)
    a, b = key_for_sha256("a" * 64), key_for_sha256("b" * 64)
    with cache.pin_set() as pins:
        path_a = await cache.get_or_create(a, _entry(cache, a, 1000, tmp_path), pins=pins)
        os.utime(path_a, (time.time() - 100, time.time() - 100))  # oldest, but in use
        path_b = await cache.get_or_create(b, _entry(cache, b, 1000, tmp_path))
        assert path_a.exists() and path_b.exists()  # over the bound while a job needs both
        assert cache.is_pinned(a)
    # The job ended: the next eviction may take a.
    cache.make_room(0)
    assert not path_a.exists()
    assert path_b.exists()


async def test_concurrent_requests_for_one_key_create_it_once(tmp_path):
    import asyncio

    cache = MediaCache(tmp_path / "c", max_bytes=10_000)
    key = key_for_sha256("d" * 64)
    calls = 0

    async def create() -> Path:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.2)
        part = cache.partial_path(key)
        part.write_bytes(b"x" * 100)
        return part

    paths = await asyncio.gather(*(cache.get_or_create(key, create) for _ in range(5)))
    assert calls == 1
    assert len(set(paths)) == 1


def _start_peer(cache_dir: Path, server, ref, *, hold: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tests.farmhand.cache_peer", str(cache_dir), server.url,
           msgspec.json.encode(ref).decode()]  # fmt: skip
    if hold:
        cmd.append("--hold")
    return subprocess.Popen(
        cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def _wait_until(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


async def test_two_processes_sharing_a_cache_download_once(tmp_path, media_dir, server):
    ref = serve_media(server, "m1", media_dir / "a.mp4", delay_s=1.0)
    cache_dir = tmp_path / "shared"
    peer = _start_peer(cache_dir, server, ref, hold=False)
    try:
        # The other process is downloading (and holds the key's lock) once its GET arrives.
        _wait_until(lambda: len(server.gets(ref.url)) == 1)
        cache = MediaCache(cache_dir, max_bytes=1024**3)
        async with board_client(server) as client:
            path = await fetch_media(client, ref, {}, cache=cache)
        out, err = peer.communicate(timeout=30)
    finally:
        peer.kill()
    assert peer.returncode == 0, err
    assert f"fetched {path}" in out
    assert len(server.gets(ref.url)) == 1
    assert path.read_bytes() == (media_dir / "a.mp4").read_bytes()


async def test_entry_pinned_by_another_process_survives_eviction(tmp_path, media_dir, server):
    ref = serve_media(server, "m2", media_dir / "b.mp4")
    cache_dir = tmp_path / "shared"
    peer = _start_peer(cache_dir, server, ref, hold=True)
    try:
        line = peer.stdout.readline()
        assert line.startswith("fetched "), peer.stderr.read()
        path = Path(line.split(" ", 1)[1].strip())
        tiny = MediaCache(cache_dir, max_bytes=1)
        tiny.make_room(0)
        assert path.exists()  # the other process's job still uses it
        peer.stdin.write("done\n")
        peer.stdin.flush()
        assert peer.stdout.readline().strip() == "released"
        peer.wait(timeout=10)
        tiny.make_room(0)
        assert not path.exists()
    finally:
        peer.kill()
