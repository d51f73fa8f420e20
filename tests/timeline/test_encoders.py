"""The encoder table: one row per encoder, knobs per quality, a real test encode."""

from __future__ import annotations

import subprocess

import pytest

from timeline.encoders import (
    ENCODERS,
    QUALITIES,
    encoders_for,
    get_encoder,
    software_encoder,
    test_encode_command,
)
from timeline.ffmpeg import ffmpeg_binary

ISSUE_ENCODERS = [
    "libx264", "libx265", "libsvtav1", "h264_nvenc", "hevc_nvenc", "av1_nvenc", "h264_qsv",
    "hevc_qsv", "h264_vaapi", "hevc_vaapi", "h264_amf", "hevc_amf", "h264_videotoolbox",
    "hevc_videotoolbox",
]  # fmt: skip


def test_table_covers_every_encoder_the_farm_can_meet():
    assert set(ISSUE_ENCODERS) <= set(ENCODERS)
    for encoder in ENCODERS.values():
        assert encoder.codec in ("h264", "hevc", "av1")
        assert encoder.hardware == (encoder.family != "software")


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_quality_has_its_own_knobs(name):
    encoder = ENCODERS[name]
    args = {q: encoder.output_args(q, 30) for q in QUALITIES}
    assert len({tuple(a) for a in args.values()}) == 3, "draft/standard/high must differ"
    for quality_args in args.values():
        assert quality_args[:2] == ["-c:v", name]
        assert "-g" in quality_args


def test_unknown_quality_is_refused():
    with pytest.raises(ValueError, match="unknown quality"):
        ENCODERS["libx264"].output_args("ultra", 30)


def test_hardware_is_preferred_and_software_is_last():
    h264 = encoders_for("h264")
    assert h264[0].hardware and h264[-1].name == "libx264"
    assert [e.name for e in encoders_for("hevc", hardware=False)] == ["libx265"]
    assert all(e.hardware for e in encoders_for("av1", hardware=True))
    assert software_encoder("av1").name == "libsvtav1"


def test_vaapi_uploads_frames_to_its_device():
    vaapi = get_encoder("h264_vaapi")
    assert vaapi.global_args()[0] == "-vaapi_device"
    assert vaapi.upload_filter().endswith("hwupload")
    assert get_encoder("libx264").upload_filter() == ""


def test_hevc_gets_the_tag_apple_players_need():
    assert "hvc1" in get_encoder("libx265").output_args("standard", 30)
    assert "hvc1" in get_encoder("hevc_nvenc").output_args("standard", 30)


def test_unknown_encoder_names_the_known_ones():
    with pytest.raises(ValueError, match="libx264"):
        get_encoder("h264_magic")


@pytest.mark.parametrize("name", ["libx264", "libx265", "libsvtav1"])
def test_software_test_encode_really_encodes(name):
    cmd = test_encode_command(ENCODERS[name], ffmpeg=ffmpeg_binary())
    assert "null" in cmd
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-500:]


def test_a_listed_but_missing_gpu_encoder_fails_its_test_encode():
    # Debian's ffmpeg lists h264_nvenc on machines without an NVIDIA GPU: listed is not working.
    listed = subprocess.run([ffmpeg_binary(), "-hide_banner", "-encoders"], capture_output=True,
                            text=True, check=False).stdout  # fmt: skip
    if " h264_nvenc " not in listed:
        pytest.skip("this ffmpeg does not list h264_nvenc")
    has_gpu = subprocess.run(["sh", "-c", "command -v nvidia-smi && nvidia-smi -L"],
                             capture_output=True, check=False).returncode == 0  # fmt: skip
    if has_gpu:
        pytest.skip("an NVIDIA GPU is present here")
    cmd = test_encode_command(ENCODERS["h264_nvenc"], ffmpeg=ffmpeg_binary())
    assert subprocess.run(cmd, capture_output=True, timeout=60, check=False).returncode != 0
