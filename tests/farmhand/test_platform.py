"""What differs by platform, proven on Linux: process trees, priority, process names."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from farmhand import platform


def test_kill_tree_stops_the_process_and_everything_it_started():
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"])
    deadline = time.monotonic() + 5
    while len(psutil.Process(parent.pid).children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    tree = [parent.pid] + [c.pid for c in psutil.Process(parent.pid).children(recursive=True)]
    assert len(tree) == 3

    platform.kill_tree(parent.pid, timeout_s=5)

    for pid in tree:
        try:
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # exited, not yet reaped
        except psutil.NoSuchProcess:
            pass
    assert parent.poll() is not None
    platform.kill_tree(parent.pid)  # already gone: nothing to do, no error


def test_lower_priority_gives_lowest_cpu_and_io_priority():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        applied = platform.lower_priority(child.pid)
        proc = psutil.Process(child.pid)
        assert proc.nice() == 19
        assert proc.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
        assert applied == ["cpu: nice 19", "io: idle class"]
    finally:
        child.kill()
        child.wait()


def test_running_process_names_see_other_programs_and_skip_excluded_ones():
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert "sleep" in platform.running_process_names()
        everything_but = {p.pid for p in psutil.process_iter(["name"]) if p.info["name"] == "sleep"}
        assert "sleep" not in platform.running_process_names(exclude_pids=everything_but)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert platform.normalize_process_name(" Game.EXE ") == "game"
    assert os.getpid() in {p.pid for p in platform.own_process_tree()}


def test_service_hint_explains_the_systemd_unit():
    hint = platform.service_install_hint("/opt/clipfarm/.venv/bin/farmhand")
    assert "deploy/farmhand.service" in hint
    assert "systemctl enable --now farmhand" in hint
