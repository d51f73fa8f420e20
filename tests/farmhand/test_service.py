"""The systemd unit that runs a farmhand as a service."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "farmhand.service"
ENV_EXAMPLE = UNIT.with_name("farmhand.env.example")


def _settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    # verify checks that ExecStart exists; point it at a binary this machine has.
    text = UNIT.read_text().replace("/opt/clipfarm/.venv/bin/farmhand", shutil.which("true"))
    unit = tmp_path / "farmhand.service"
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    problems = [
        ln for ln in (result.stdout + result.stderr).splitlines() if "farmhand.service" in ln
    ]
    assert result.returncode == 0, result.stderr
    assert problems == []  # unknown keys and bad values only warn; none allowed


def test_unit_runs_the_farmhand_politely_and_restarts_it():
    settings = _settings(UNIT.read_text())
    assert settings["ExecStart"] == ["/opt/clipfarm/.venv/bin/farmhand run"]
    assert settings["EnvironmentFile"] == ["/etc/clipfarm/farmhand.env"]
    assert settings["Restart"] == ["on-failure"]
    assert settings["Nice"] == ["19"]
    assert settings["IOSchedulingClass"] == ["idle"]
    assert settings["KillSignal"] == ["SIGTERM"]
    assert settings["KillMode"] == ["mixed"]  # ffmpeg is stopped by the farmhand, not systemd
    assert int(settings["TimeoutStopSec"][0]) >= 30
    assert "video render" in settings["SupplementaryGroups"][0]
    for hardening in ("NoNewPrivileges", "PrivateTmp"):
        assert settings[hardening] == ["yes"]
    assert settings["ProtectSystem"] == ["strict"]
    assert "ProtectProc" not in settings  # it would hide the owner's games from the farmhand


def test_env_example_uses_the_design_names():
    settings = _settings(ENV_EXAMPLE.read_text())
    for name in ("FARMHAND_BOARD_URL", "FARMHAND_TOKEN", "FARMHAND_PAUSE_PROCESSES",
                 "FARMHAND_CACHE_MAX_BYTES"):  # fmt: skip
        assert name in settings
