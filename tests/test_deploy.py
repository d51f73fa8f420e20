"""The board's systemd unit is valid and serves from its state directory."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "board.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_board_unit_passes_systemd_analyze_verify(tmp_path):
    unit = tmp_path / "clipfarm-board.service"
    unit.write_text(UNIT.read_text().replace("/opt/clipfarm/.venv/bin/board", shutil.which("true")))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [ln for ln in result.stderr.splitlines() if "clipfarm-board.service" in ln] == []


def test_board_unit_keeps_its_data_in_the_state_directory():
    text = UNIT.read_text()
    assert "StateDirectory=clipfarm-board" in text
    assert "Environment=BOARD_DATA_DIR=/var/lib/clipfarm-board" in text
    assert "Restart=on-failure" in text
