"""The capability probe and the farmhand command line."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from farmhand import probe as probe_mod
from farmhand.config import load_config
from farmhand.gpus import NvidiaGpu, nvenc_session_limit
from timeline.encoders import ENCODERS

ROOT = Path(__file__).resolve().parents[2]


def farmhand(*args: str, env: dict[str, str], stdin: str | None = None):
    """Run the farmhand command the way an operator does."""
    return subprocess.run(
        [sys.executable, "-m", "farmhand.cli", *args],
        cwd=ROOT, env={**os.environ, **env}, input=stdin, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def probed(tmp_path_factory):
    """`farmhand probe --json` run once for the module (it test-encodes every listed encoder)."""
    state = tmp_path_factory.mktemp("state")
    env = {"FARMHAND_STATE_DIR": str(state), "FARMHAND_TAGS": "ci,tiny"}
    result = farmhand("probe", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout), state, env


def test_probe_lists_libx264_and_not_the_nvenc_ffmpeg_lists_without_a_gpu(probed):
    doc, _, _ = probed
    assert "libx264" in doc["encoders"]
    assert "h264_nvenc" not in doc["encoders"]  # listed by this ffmpeg, but there is no GPU
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["libx264"]["ok"] is True
    listed = subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                            text=True).stdout  # fmt: skip
    if " h264_nvenc " in listed and shutil.which("nvidia-smi") is None:
        assert checks["h264_nvenc"]["ok"] is False
        assert checks["h264_nvenc"]["reason"]  # says why, in ffmpeg's words
        assert doc["rejected"]["h264_nvenc"] == checks["h264_nvenc"]["reason"]


def test_probe_reports_the_machine_in_the_capabilities_shape(probed):
    doc, _, _ = probed
    for field in ("encoders", "gpus", "cores", "memory_mb", "disk_free_mb", "ffmpeg_version",
                  "tags", "slots"):  # fmt: skip
        assert field in doc
    assert doc["cores"] >= 1 and doc["memory_mb"] > 0 and doc["disk_free_mb"] > 0
    assert doc["ffmpeg_version"]
    assert doc["tags"] == ["ci", "tiny"]
    if not any(ENCODERS[name].family == "nvenc" for name in doc["encoders"]):
        assert doc["slots"] == 1  # software only: one job at a time
    assert all(name in ENCODERS for name in doc["encoders"])


def test_probe_result_is_cached_and_invalidated(probed):
    doc, state, env = probed
    assert doc["from_cache"] is False
    again = json.loads(farmhand("probe", "--json", env=env).stdout)
    assert again["from_cache"] is True
    assert again["encoders"] == doc["encoders"]

    config = load_config({"state_dir": str(state)}, env={})
    probe_mod.invalidate(config)  # what the runner does after a hardware encode fails
    assert not (state / probe_mod.CACHE_FILE).exists()
    table = farmhand("probe", env=env)
    assert table.returncode == 0, table.stderr
    assert "probed just now" in table.stdout
    assert "libx264" in table.stdout and "verified" in table.stdout


def test_a_broken_hardware_encoder_is_rejected_with_ffmpegs_reason(tmp_path, monkeypatch):
    # A VAAPI device path that cannot exist makes the real device set-up fail.
    monkeypatch.setenv("FFMPEG_VAAPI_DEVICE", str(tmp_path / "no-such-render-node"))
    check = probe_mod.check_encoder(ENCODERS["h264_vaapi"], shutil.which("ffmpeg"), timeout_s=20)
    assert check.ok is False
    assert check.reason
    assert "@ 0x" not in check.reason  # ffmpeg's object addresses are noise on a dashboard


def test_nvenc_slots_follow_the_consumer_session_limit():
    def geforce(driver: str) -> NvidiaGpu:
        return NvidiaGpu(0, "NVIDIA GeForce RTX 3080", 10240, driver, "GPU-1")

    assert nvenc_session_limit([geforce("528.49")]) == 3
    assert nvenc_session_limit([geforce("535.104.05")]) == 5
    assert nvenc_session_limit([geforce("551.23")]) == 8
    assert nvenc_session_limit([NvidiaGpu(0, "NVIDIA RTX A4000", 16376, "535.1", "x")]) is None
    nvenc = [ENCODERS["h264_nvenc"], ENCODERS["libx264"]]
    slots, why = probe_mod.default_slots(16, 32768, nvenc, [geforce("528.49")])
    assert slots == 1  # 3 sessions, 2 per job
    assert "3 NVENC sessions" in why
    slots, _ = probe_mod.default_slots(16, 32768, nvenc, [geforce("551.23")])
    assert slots == 4  # min(16 cores / 4, 32 GB / 2 GB, 8 sessions / 2)
    assert probe_mod.default_slots(16, 32768, [ENCODERS["libx264"]], [])[0] == 1


def test_missing_ffmpeg_is_a_clear_error(tmp_path):
    result = farmhand("probe", env={"FFMPEG_BINARY": str(tmp_path / "ffmpeg"),
                                    "FARMHAND_STATE_DIR": str(tmp_path)})  # fmt: skip
    assert result.returncode == 1
    assert "FFMPEG_BINARY" in result.stderr


def test_enroll_writes_a_private_token_file_the_farmhand_then_uses(tmp_path):
    token_file = tmp_path / "etc" / "token"
    env = {"FARMHAND_TOKEN_FILE": str(token_file), "FARMHAND_STATE_DIR": str(tmp_path)}
    result = farmhand("enroll", "--token", "-", env=env, stdin="fh_s3cret\n")
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == "fh_s3cret"
    assert load_config({}, env=env).token == "fh_s3cret"


def test_flags_override_the_environment_and_bad_values_exit_2(tmp_path):
    env = {"FARMHAND_STATE_DIR": str(tmp_path), "FARMHAND_SLOTS": "3"}
    doc = json.loads(farmhand("probe", "--json", "--slots", "2", env=env).stdout)
    assert doc["slots"] == 2
    bad = farmhand("probe", "--slots", "lots", env=env)
    assert bad.returncode == 2
    assert "--slots" in bad.stderr and "whole number" in bad.stderr
