"""LocalStorage on a real disk: two appends to one upload never interleave their bytes."""

from __future__ import annotations

import asyncio

from board.infra.storage import LocalStorage


async def test_a_second_append_to_an_upload_waits_for_the_first(tmp_path):
    storage = LocalStorage(tmp_path)
    first_started, let_first_finish = asyncio.Event(), asyncio.Event()

    async def slow():
        yield b"A" * 1000
        first_started.set()
        await let_first_finish.wait()  # a body still arriving
        yield b"B" * 1000

    async def retry():
        yield b"C" * 1000

    first = asyncio.ensure_future(storage.append("uploads/j.part", slow(), max_total=10_000))
    await first_started.wait()
    second = asyncio.ensure_future(storage.append("uploads/j.part", retry(), max_total=10_000))
    await asyncio.sleep(0.1)
    assert not second.done()  # the file is held
    let_first_finish.set()
    assert await first == 2000
    assert await second == 3000
    data = (tmp_path / "uploads/j.part").read_bytes()
    assert data == b"A" * 1000 + b"B" * 1000 + b"C" * 1000


async def test_truncate_starts_over_only_once_the_file_is_free(tmp_path):
    storage = LocalStorage(tmp_path)

    async def body(data: bytes):
        yield data

    await storage.append("uploads/k.part", body(b"old bytes"), max_total=100)
    size = await storage.append("uploads/k.part", body(b"new"), max_total=100, truncate=True)
    assert size == 3
    assert (tmp_path / "uploads/k.part").read_bytes() == b"new"
