"""``board.siblings`` on real Unix datagram sockets: what one worker's feed announces wakes the
waiters of the other's, a turn's worth of wake-ups travels as one datagram, and a dead worker's
socket is cleaned away."""

from __future__ import annotations

import asyncio
import socket

from board.notify import JobFeed
from board.siblings import Siblings, folder_for


async def _pair(folder):
    a, b = Siblings(folder, JobFeed(), name="a"), Siblings(folder, JobFeed(), name="b")
    a.start()
    b.start()
    return a, b


async def test_a_job_change_and_new_work_wake_the_other_worker(tmp_path):
    a, b = await _pair(tmp_path / "s")
    try:
        watching = asyncio.ensure_future(b.feed.wait_job("job-1", timeout=10))
        claimer = b.feed.work.arm()
        farm = b.feed.any_change.arm()
        await asyncio.sleep(0)
        a.feed.job_changed("job-1")
        a.feed.work_available(1)
        assert await watching is True
        await asyncio.wait_for(claimer.wait(), 5)
        await asyncio.wait_for(farm.wait(), 5)
        assert b.received == 1  # both wake-ups of that turn in one datagram
        # what b applied is not relayed back to a
        await asyncio.sleep(0.05)
        assert a.received == 0
    finally:
        a.close()
        b.close()
    assert not list((tmp_path / "s").iterdir())  # each closed worker took its socket away


async def test_a_resumed_farmhand_wakes_every_claimer_of_the_other_worker(tmp_path):
    a, b = await _pair(tmp_path / "s")
    try:
        waiters = [b.feed.work.arm() for _ in range(3)]
        a.feed.farm_changed(wake_all=True)
        for event in waiters:
            await asyncio.wait_for(event.wait(), 5)
    finally:
        a.close()
        b.close()


async def test_a_dead_workers_socket_is_removed_and_the_rest_still_hear(tmp_path):
    folder = tmp_path / "s"
    a, b = await _pair(folder)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(folder / "dead.sock"))
    dead.close()  # a killed worker: its socket file stays, nobody reads it
    try:
        watching = asyncio.ensure_future(b.feed.wait_job("job-2", timeout=10))
        await asyncio.sleep(0)
        a.feed.job_changed("job-2")
        assert await watching is True
        assert not (folder / "dead.sock").exists()
    finally:
        a.close()
        b.close()


async def test_many_changed_jobs_in_one_turn_all_arrive(tmp_path):
    a, b = await _pair(tmp_path / "s")
    ids = [f"job-{i:05d}-{'x' * 20}" for i in range(5000)]  # past one datagram's worth
    try:
        watching = [asyncio.ensure_future(b.feed.wait_job(i, timeout=10)) for i in ids[::997]]
        await asyncio.sleep(0)
        for job_id in ids:
            a.feed.job_changed(job_id)
        assert await asyncio.gather(*watching) == [True] * len(watching)
    finally:
        a.close()
        b.close()


def test_the_socket_folder_is_short_whatever_the_data_dir(tmp_path):
    deep = tmp_path.joinpath(*["a-long-folder-name"] * 12)
    assert len(str(folder_for(deep) / "4194304.sock")) < 100
    assert folder_for(deep) != folder_for(tmp_path)
