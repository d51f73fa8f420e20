"""The board's probes of uploads (``board.infra.probing``): child processes, a few at a time,
each limited in memory and killed when it runs too long. Driven here with a stand-in ffprobe
(``FFPROBE_BINARY``) that records what it was given and can be held at a gate."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from board.infra.probing import Prober
from tests.board.actors import wait_until
from tests.board.ffprobe_stand_in import ended, gated_ffprobe, log_lines, most_at_once
from tests.media import make_png_declaring
from timeline.probe import InputTooLarge, ProbeError


@pytest.fixture
def stand_in(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """(log, gate) of a stand-in ffprobe this test's probes run."""
    log, gate = tmp_path / "probes.log", tmp_path / "gate"
    monkeypatch.setenv("FFPROBE_BINARY", str(gated_ffprobe(tmp_path)))
    monkeypatch.setenv("PROBE_LOG", str(log))
    monkeypatch.setenv("PROBE_GATE", str(gate))
    return log, gate


async def test_a_probe_runs_with_its_address_space_capped(stand_in, media_dir):
    log, _ = stand_in
    prober = Prober(concurrency=2, memory_bytes=700 * 1024**2, timeout_s=30)
    info = await prober.probe(media_dir / "a.mp4", label="a.mp4")
    assert info.has_video and info.has_audio and 1.9 < info.duration_s < 2.1
    (start, _pid, limit_kib), _end = log_lines(log)
    assert start == "start" and int(limit_kib) == 700 * 1024


async def test_no_more_than_the_pool_s_size_probe_at_once(stand_in, tmp_path):
    log, gate = stand_in
    gate.touch()
    pictures = [make_png_declaring(tmp_path / f"p{i}.png", 16 + i, 16) for i in range(6)]
    prober = Prober(concurrency=2, memory_bytes=1024**3, timeout_s=30)
    probes = [asyncio.ensure_future(prober.probe(p, label=p.name)) for p in pictures]
    await asyncio.to_thread(
        wait_until, lambda: len(log_lines(log)) >= 2, timeout=20, what="two probes started"
    )
    await asyncio.sleep(0.5)  # time for a third to start, were the pool not holding it back
    assert len(log_lines(log)) == 2 and prober.running == 2
    gate.unlink()
    found = await asyncio.gather(*probes)
    assert [(i.width, i.height) for i in found] == [(16 + i, 16) for i in range(6)]
    assert most_at_once(log) == 2


async def test_a_probe_past_its_time_is_killed_with_its_ffprobe(stand_in, media_dir):
    log, gate = stand_in
    gate.touch()  # never opened: the stand-in waits forever
    prober = Prober(concurrency=1, memory_bytes=1024**3, timeout_s=1.5)
    with pytest.raises(ProbeError, match=r"a\.mp4: reading it took longer than 1\.5 s"):
        await prober.probe(media_dir / "a.mp4", label="a.mp4")
    (_, pid, _), *_ = log_lines(log)
    wait_until(lambda: ended(int(pid)), timeout=5, what="the stand-in ffprobe to be killed")
    assert prober.running == 0


async def test_a_picture_over_the_pixel_cap_is_refused_as_too_large(tmp_path):
    poster = make_png_declaring(tmp_path / "poster.png", 16000, 16000)
    prober = Prober(concurrency=1, memory_bytes=1024**3, timeout_s=30)
    with pytest.raises(InputTooLarge, match=r"poster\.png: its picture is 16000x16000"):
        await prober.probe(poster, label="poster.png")
