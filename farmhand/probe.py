"""What this farmhand can really do: the capability probe.

ffmpeg lists encoders it was built with, not encoders that work here — Debian's ffmpeg lists
``h264_nvenc`` on machines without an NVIDIA GPU. So for every listed encoder that clipfarm's
encoder table knows (:mod:`timeline.encoders`), the probe runs a real tiny encode (256×256, a few
frames, hardware device set up as the table says) with a timeout; only encoders whose test exits
cleanly are reported to the board. The encodes run in parallel, so a probe takes about as long
as the slowest one.

The verified list is cached in the state folder, keyed by the ffmpeg binary (path, mtime, size),
the GPUs (nvidia-smi: name, memory, driver, uuid), the render nodes and the encoder table, so a
new driver, GPU or ffmpeg re-probes. :func:`invalidate` drops the cache; the job runner calls it
after a hardware encode fails at run time. Cores, memory, free disk, tags and slots are measured
fresh on every call (cheap).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import msgspec
import psutil

from farmhand import gpus as gpu_info
from farmhand.config import FarmhandConfig
from timeline.encoders import ENCODERS, Encoder, test_encode_command
from timeline.spec import CODECS
from wire import Capabilities, Gpu

log = logging.getLogger(__name__)

CACHE_FILE = "probe.json"
CACHE_FORMAT = 1  # bump when what is cached or how it is decided changes
CACHE_MAX_AGE_S = 7 * 24 * 3600  # re-probe weekly anyway (driver updates nvidia-smi can't see)
NOT_IN_TABLE = "not in clipfarm's encoder table"
# Slots (concurrent jobs) when a hardware encoder does the work; see default_slots().
NVENC_SESSIONS_PER_JOB = 2  # the runner may encode two segments of one job at once
MEMORY_PER_SLOT_MB = 2048  # decoding inputs + filter graphs of one job, with room to spare
CORES_PER_SLOT = 4  # decoding and filtering still run on the CPU


class ProbeError(RuntimeError):
    """The probe cannot run at all (no ffmpeg); the message says what to install or set."""


class EncoderCheck(msgspec.Struct, frozen=True):
    """The verdict on one encoder ffmpeg lists."""

    name: str
    codec: str
    hardware: bool
    ok: bool
    reason: str = ""  # why not, in ffmpeg's words; "" when ok
    seconds: float = 0.0  # how long its test encode took


class GpuView(msgspec.Struct, frozen=True):
    """An NVIDIA GPU as the probe shows it."""

    index: int
    name: str
    memory_mb: int
    driver_version: str
    nvenc_session_limit: int | None  # None: no per-host cap (professional card)


class ProbeReport(msgspec.Struct):
    """Everything the probe found: the capabilities for the board, and why encoders failed."""

    capabilities: Capabilities
    checks: list[EncoderCheck]
    ffmpeg: str  # the binary probed
    nvidia_gpus: list[GpuView]
    slots_reason: str
    from_cache: bool
    probed_at: float  # epoch seconds of the test encodes

    @property
    def rejected(self) -> dict[str, str]:
        """Listed encoders that did not pass, with the reason."""
        return {c.name: c.reason for c in self.checks if not c.ok}


class _Cached(msgspec.Struct):
    key: str
    ffmpeg_version: str
    checks: list[EncoderCheck]
    probed_at: float


def probe(config: FarmhandConfig, *, use_cache: bool = True) -> ProbeReport:
    """Probe this machine (or reuse a cached probe of the same ffmpeg and hardware)."""
    ffmpeg = resolve_binary(config.ffmpeg, "ffmpeg", "FFMPEG_BINARY")
    nvidia = gpu_info.nvidia_gpus(config.nvidia_smi)
    key = _cache_key(ffmpeg, nvidia)
    cache_path = config.state_dir / CACHE_FILE
    cached = _read_cache(cache_path, key) if use_cache else None
    if cached is None:
        version = ffmpeg_version(ffmpeg)
        checks = check_encoders(ffmpeg, timeout_s=config.probe_timeout_s)
        cached = _Cached(key=key, ffmpeg_version=version, checks=checks, probed_at=time.time())
        _write_cache(cache_path, cached)
        from_cache = False
    else:
        from_cache = True

    verified = [ENCODERS[c.name] for c in cached.checks if c.ok and c.name in ENCODERS]
    cores = psutil.cpu_count(logical=True) or 1
    memory_mb = psutil.virtual_memory().total // 1024**2
    slots, why = default_slots(cores, memory_mb, verified, nvidia)
    if config.slots is not None:
        slots, why = config.slots, f"{config.slots}: set by FARMHAND_SLOTS (probe suggests {why})"
    capabilities = Capabilities(
        encoders=[e.name for e in sorted(verified, key=lambda e: (e.rank, e.name))],
        gpus=[Gpu(name=g.name, memory_mb=g.memory_mb) for g in nvidia],
        cores=min(cores, 4096),
        memory_mb=memory_mb,
        disk_free_mb=_disk_free_mb(config.cache_dir),
        ffmpeg_version=cached.ffmpeg_version[:200],
        tags=list(config.tags),
        slots=max(1, min(slots, 64)),
    )
    return ProbeReport(
        capabilities=capabilities,
        checks=cached.checks,
        ffmpeg=ffmpeg,
        nvidia_gpus=[_gpu_view(g) for g in nvidia],
        slots_reason=why,
        from_cache=from_cache,
        probed_at=cached.probed_at,
    )


def probe_capabilities(config: FarmhandConfig, *, use_cache: bool = True) -> Capabilities:
    """The verified capabilities to send with every claim (see :func:`probe`)."""
    return probe(config, use_cache=use_cache).capabilities


def invalidate(config: FarmhandConfig) -> None:
    """Forget the cached probe, so the next :func:`probe` runs the test encodes again.

    Call it when a hardware encode that the probe verified fails at run time (a driver update,
    a GPU taken by something else): the next claim then advertises only what works now.
    """
    with contextlib.suppress(FileNotFoundError):
        (config.state_dir / CACHE_FILE).unlink()


# ---------------------------------------------------------------- the parts


def resolve_binary(name: str, what: str, env_var: str) -> str:
    """The full path of a binary, or ProbeError saying how to point at it."""
    found = shutil.which(name)
    if found is None:
        raise ProbeError(
            f"{what} not found ({name!r}); install it or set {env_var} to its full path"
        )
    return os.path.realpath(found)


def ffmpeg_version(ffmpeg: str) -> str:
    """The version ffmpeg reports, e.g. ``5.1.6-0+deb12u1``."""
    try:
        out = subprocess.run(
            [ffmpeg, "-hide_banner", "-version"], capture_output=True, text=True, timeout=15
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"{ffmpeg} does not run: {exc}") from None
    match = re.search(r"version\s+(\S+)", out)
    return match.group(1) if match else (out.splitlines() or ["unknown"])[0][:200]


def listed_encoders(ffmpeg: str) -> dict[str, str]:
    """Video encoders ffmpeg was built with: ``{name: codec}`` (for the codecs clipfarm uses)."""
    try:
        out = subprocess.run(
            [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=15
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"{ffmpeg} does not run: {exc}") from None
    found = {}
    for line in out.splitlines():
        # " V....D libx264   libx264 H.264 / AVC ... (codec h264)"
        match = re.match(r"^\s*V\S{5}\s+(\S+)\s.*\(codec (\w+)\)\s*$", line)
        if match:
            found[match.group(1)] = match.group(2)
    return {name: codec for name, codec in found.items() if codec in CODECS}


def check_encoder(encoder: Encoder, ffmpeg: str, *, timeout_s: float) -> EncoderCheck:
    """Run the encoder's real test encode; ok only when ffmpeg exits 0 within the timeout."""
    cmd = test_encode_command(encoder, ffmpeg=ffmpeg)
    started = time.perf_counter()
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        return _check(encoder, False, f"test encode did not finish within {timeout_s:g} s", started)
    except OSError as exc:
        return _check(encoder, False, f"ffmpeg did not start: {exc}", started)
    if result.returncode == 0:
        return _check(encoder, True, "", started)
    reason = failure_reason(result.stderr, result.returncode)
    return _check(encoder, False, _hint(encoder, reason), started)


def check_encoders(ffmpeg: str, *, timeout_s: float) -> list[EncoderCheck]:
    """Verify every listed encoder of a known family, in parallel.

    Listed encoders that clipfarm's table does not know (libaom-av1, h264_v4l2m2m...) are
    reported as not used, without a test.
    """
    listed = listed_encoders(ffmpeg)
    known = [ENCODERS[name] for name in listed if name in ENCODERS]
    checks = [
        EncoderCheck(name=n, codec=c, hardware=False, ok=False, reason=NOT_IN_TABLE)
        for n, c in listed.items()
        if n not in ENCODERS
    ]
    if known:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, len(known))) as pool:
            checks += pool.map(lambda e: check_encoder(e, ffmpeg, timeout_s=timeout_s), known)
    for check in checks:
        if check.name in ENCODERS:
            log.info(
                "encoder %s: %s", check.name, "verified" if check.ok else f"no ({check.reason})"
            )
    return sorted(checks, key=lambda c: (not c.ok, c.codec, c.name))


_GENERIC = re.compile(
    r"^(Error initializing output stream|Error while opening encoder|Error parsing global options"
    r"|Error splitting the argument list|Conversion failed|Device creation failed"
    r"|Error opening output files|Svt\[)",
)


def failure_reason(stderr: str, returncode: int) -> str:
    """The line of ffmpeg's error output that says why, without ffmpeg's object addresses."""
    lines = [
        re.sub(r"\[(\w+) @ 0x[0-9a-f]+\]\s*", r"\1: ", ln).strip() for ln in stderr.splitlines()
    ]
    lines = [ln for ln in lines if ln]
    specific = [ln for ln in lines if not _GENERIC.match(ln)]
    reason = (specific or lines or [f"ffmpeg exited with status {returncode}"])[0]
    return reason[:300]


def _hint(encoder: Encoder, reason: str) -> str:
    """Say in plain words what a hardware failure usually means, keeping ffmpeg's line."""
    if encoder.family == "nvenc" and re.search(r"libcuda|libnvidia-encode", reason):
        return f"no NVIDIA driver ({reason})"
    if encoder.family == "nvenc" and re.search(r"No capable devices|unsupported device", reason):
        return f"no NVENC-capable NVIDIA GPU ({reason})"
    if encoder.family in ("vaapi", "qsv") and not gpu_info.render_nodes():
        return f"no GPU render node in /dev/dri ({reason})"
    return reason


def default_slots(
    cores: int,
    memory_mb: int,
    verified: list[Encoder],
    nvidia: list[gpu_info.NvidiaGpu],
) -> tuple[int, str]:
    """How many jobs to run at once, and why (for ``farmhand probe``).

    - Software encoders only: 1. x264/x265/SVT-AV1 already use every core, and the PC belongs
      to someone who may come back at any moment.
    - Intel/AMD hardware (QSV, VAAPI, AMF): 1; one media engine, shared with the desktop.
    - NVENC verified: min(cores // 4, memory / 2 GiB, NVENC sessions // 2). Decoding and
      filtering still need about 4 cores per job; the runner may encode two segments of a job
      at once (two NVENC sessions); GeForce drivers allow 3, 5 or 8 sessions per host
      (:func:`farmhand.gpus.nvenc_session_limit`), professional cards have no cap.
    """
    if not any(e.family == "nvenc" for e in verified):
        if any(e.hardware for e in verified):
            return 1, "1: one shared hardware encoder (QSV/VAAPI/AMF)"
        return 1, "1: software encoding uses every core already"
    by_cores = max(1, cores // CORES_PER_SLOT)
    by_memory = max(1, memory_mb // MEMORY_PER_SLOT_MB)
    sessions = gpu_info.nvenc_session_limit(nvidia)
    by_sessions = max(1, sessions // NVENC_SESSIONS_PER_JOB) if sessions else by_cores
    slots = min(by_cores, by_memory, by_sessions)
    limit = f"{sessions} NVENC sessions per host" if sessions else "no NVENC session cap"
    return slots, (
        f"{slots}: NVENC verified; {cores} cores / {CORES_PER_SLOT} = {by_cores}, "
        f"{memory_mb} MB / {MEMORY_PER_SLOT_MB} MB = {by_memory}, {limit} / "
        f"{NVENC_SESSIONS_PER_JOB} per job = {by_sessions}"
    )


# ---------------------------------------------------------------- cache


def _cache_key(ffmpeg: str, nvidia: list[gpu_info.NvidiaGpu]) -> str:
    st = os.stat(ffmpeg)
    parts = {
        "format": CACHE_FORMAT,
        "ffmpeg": [ffmpeg, st.st_mtime_ns, st.st_size],
        "nvidia": [[g.name, g.memory_mb, g.driver_version, g.uuid] for g in nvidia],
        "render_nodes": gpu_info.render_nodes(),
        "vaapi_device": os.environ.get("FFMPEG_VAAPI_DEVICE", ""),
        "table": sorted([e.name, e.family, e.rank] for e in ENCODERS.values()),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path, key: str) -> _Cached | None:
    try:
        cached = msgspec.json.decode(path.read_bytes(), type=_Cached)
    except (OSError, msgspec.DecodeError):
        return None
    if cached.key != key:
        log.info("hardware or ffmpeg changed since the last probe: probing again")
        return None
    if time.time() - cached.probed_at > CACHE_MAX_AGE_S:
        return None
    return cached


def _write_cache(path: Path, cached: _Cached) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(msgspec.json.encode(cached))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("cannot cache the probe result in %s: %s", path, exc)


def _gpu_view(gpu: gpu_info.NvidiaGpu) -> GpuView:
    return GpuView(
        index=gpu.index,
        name=gpu.name,
        memory_mb=gpu.memory_mb,
        driver_version=gpu.driver_version,
        nvenc_session_limit=gpu_info.nvenc_session_limit([gpu]),
    )


def _check(encoder: Encoder, ok: bool, reason: str, started: float) -> EncoderCheck:
    return EncoderCheck(
        name=encoder.name,
        codec=encoder.codec,
        hardware=encoder.hardware,
        ok=ok,
        reason=reason,
        seconds=round(time.perf_counter() - started, 3),
    )


def _disk_free_mb(folder: Path) -> int:
    """Free space where media is cached (the nearest existing parent of the cache folder)."""
    path = Path(folder).absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    try:
        return psutil.disk_usage(str(path)).free // 1024**2
    except OSError:
        return 0
