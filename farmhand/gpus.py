"""What the machine's GPUs are and how busy they are, from ``nvidia-smi`` when it is present.

Only NVIDIA cards report through a portable tool; Intel and AMD encoders (QSV, VAAPI, AMF) are
found by the probe's test encodes instead, and their render nodes are listed here so a change
of hardware re-probes.
"""

from __future__ import annotations

import glob
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NvidiaGpu:
    """One NVIDIA GPU as nvidia-smi reports it."""

    index: int
    name: str
    memory_mb: int
    driver_version: str
    uuid: str

    @property
    def consumer(self) -> bool:
        """GeForce/TITAN cards: the driver caps concurrent NVENC sessions per host."""
        return bool(re.search(r"geforce|titan", self.name, re.IGNORECASE))


def nvidia_gpus(nvidia_smi: str = "nvidia-smi", *, timeout_s: float = 5.0) -> list[NvidiaGpu]:
    """The NVIDIA GPUs in this machine; empty when nvidia-smi is absent or fails (no driver)."""
    out = _query(nvidia_smi, "index,name,memory.total,driver_version,uuid", timeout_s)
    gpus = []
    for line in out:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        try:
            gpus.append(
                NvidiaGpu(
                    index=int(parts[0]),
                    name=",".join(parts[1:-3]).strip(),
                    memory_mb=_int_or_zero(parts[-3]),
                    driver_version=parts[-2],
                    uuid=parts[-1],
                )
            )
        except ValueError:
            log.debug("ignoring nvidia-smi line %r", line)
    return gpus


def nvidia_utilization(nvidia_smi: str = "nvidia-smi", *, timeout_s: float = 5.0) -> float | None:
    """How busy the busiest NVIDIA GPU's 3D/compute engine is, in percent; None without one.

    This is ``utilization.gpu``: the share of time a kernel or game frame ran. NVENC and NVDEC
    are separate engines that do not count here, so the farmhand's own hardware encodes barely
    move it, while a game does.
    """
    values = []
    for line in _query(nvidia_smi, "utilization.gpu", timeout_s):
        try:
            values.append(float(line.strip()))
        except ValueError:
            continue  # "[N/A]" on some cards
    return max(values) if values else None


def nvenc_session_limit(gpus: list[NvidiaGpu]) -> int | None:
    """How many NVENC sessions this host may run at once; None when the cards set no cap.

    GeForce/TITAN drivers cap concurrent encode sessions *per host*, all consumer cards
    together (NVIDIA "Video Encode and Decode GPU Support Matrix", "max # of concurrent
    sessions"): 3 until driver 530 (March 2023), 5 from driver 530, 8 from driver 551 (January
    2024). Professional and data-centre cards have no such cap. An unreadable driver version
    counts as the oldest (3) — a too-low slot count only costs throughput, a too-high one fails
    encodes.
    """
    consumer = [g for g in gpus if g.consumer]
    if not consumer:
        return None
    major = min(_driver_major(g.driver_version) for g in consumer)
    if major >= 551:
        return 8
    if major >= 530:
        return 5
    return 3


def render_nodes() -> list[str]:
    """Linux DRM render nodes (``/dev/dri/renderD128``...), used by VAAPI and QSV."""
    return sorted(glob.glob("/dev/dri/renderD*"))


def _driver_major(version: str) -> int:
    match = re.match(r"\s*(\d+)", version)
    return int(match.group(1)) if match else 0


def _int_or_zero(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


def _query(nvidia_smi: str, fields: str, timeout_s: float) -> list[str]:
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return []
    try:
        result = subprocess.run(
            [exe, f"--query-gpu={fields}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi did not answer: %s", exc)
        return []
    if result.returncode != 0:
        # Installed but no driver loaded / no GPU: the normal case on a CPU-only box.
        log.debug("nvidia-smi failed (%s): %s", result.returncode, result.stderr.strip()[:200])
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]
