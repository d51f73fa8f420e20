"""Farmhand settings: defaults < config file < environment < flags; the private token file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from farmhand.config import ConfigError, load_config, parse_size, write_token_file


def test_later_sources_override_earlier_ones(tmp_path):
    config_file = tmp_path / "farmhand.toml"
    config_file.write_text(
        'board_url = "http://from-file:8000"\n'
        'name = "file-name"\n'
        "slots = 2\n"
        'pause_processes = ["game.exe", "obs"]\n'
        'schedule = "22:00-08:00"\n'
    )
    env = {
        "FARMHAND_CONFIG": str(config_file),
        "FARMHAND_BOARD_URL": "http://from-env:8000/",
        "FARMHAND_SLOTS": "3",
        "FFMPEG_BINARY": "/opt/ffmpeg/bin/ffmpeg",
    }
    config = load_config({"slots": "4", "state_dir": str(tmp_path)}, env=env)

    assert config.board_url == "http://from-env:8000"  # env over file, trailing / dropped
    assert config.slots == 4  # flag over env over file
    assert config.name == "file-name"  # only the file set it
    assert config.pause_processes == ("game.exe", "obs")
    assert str(config.schedule) == "22:00-08:00"
    assert config.ffmpeg == "/opt/ffmpeg/bin/ffmpeg"
    assert config.config_file == config_file


def test_environment_names_from_the_design(tmp_path):
    env = {
        "FARMHAND_TOKEN": "t0k",
        "FARMHAND_NAME": "gaming-pc",
        "FARMHAND_CACHE_DIR": str(tmp_path / "cache"),
        "FARMHAND_CACHE_MAX_BYTES": "2G",
        "FARMHAND_PAUSE_PROCESSES": "game.exe, obs64.exe ,",
        "FARMHAND_CPU_PAUSE_PERCENT": "off",
        "FFPROBE_BINARY": "/usr/local/bin/ffprobe",
        "YT_DLP_BINARY": "/usr/local/bin/yt-dlp",
        "FARMHAND_TAGS": "gpu,fast-disk",
    }
    config = load_config({}, env=env)
    assert config.token == "t0k"
    assert config.name == "gaming-pc"
    assert config.cache_dir == tmp_path / "cache"
    assert config.cache_max_bytes == 2 * 1024**3
    assert config.pause_processes == ("game.exe", "obs64.exe")
    assert config.cpu_pause_percent is None
    assert config.ffprobe == "/usr/local/bin/ffprobe"
    assert config.yt_dlp == "/usr/local/bin/yt-dlp"
    assert config.tags == ("gpu", "fast-disk")
    assert config.wait_s == 25
    assert config.slots is None  # decided by the probe


def test_default_name_is_a_valid_farmhand_name():
    config = load_config({}, env={})
    assert config.name
    assert load_config({"name": config.name}, env={}).name == config.name


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"FARMHAND_SLOTS": "many"}, "FARMHAND_SLOTS"),
        ({"FARMHAND_SLOTS": "0"}, "FARMHAND_SLOTS"),
        ({"FARMHAND_BOARD_URL": "board:8000"}, "FARMHAND_BOARD_URL"),
        ({"FARMHAND_CACHE_MAX_BYTES": "lots"}, "FARMHAND_CACHE_MAX_BYTES"),
        ({"FARMHAND_NAME": "my pc"}, "FARMHAND_NAME"),
        ({"FARMHAND_WAIT_S": "90"}, "FARMHAND_WAIT_S"),
        ({"FARMHAND_SCHEDULE": "someday"}, "FARMHAND_SCHEDULE"),
        ({"FARMHAND_CONFIG": "/nonexistent/farmhand.toml"}, "does not exist"),
    ],
)
def test_bad_settings_name_the_variable(env, names):
    with pytest.raises(ConfigError, match=names):
        load_config({}, env=env)


def test_unknown_config_file_keys_are_refused(tmp_path):
    config_file = tmp_path / "farmhand.toml"
    config_file.write_text('bord_url = "http://typo:8000"\n')
    with pytest.raises(ConfigError, match="bord_url"):
        load_config({"config": str(config_file)}, env={})


def test_enrolled_token_file_is_private_and_read_back(tmp_path):
    path = write_token_file(tmp_path / "state" / "token", "  s3cret-token\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    config = load_config({"state_dir": str(tmp_path / "state")}, env={})
    assert config.token == "s3cret-token"
    assert config.require_token() == "s3cret-token"


def test_token_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("s3cret\n")
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError) as err:
        load_config({}, env={"FARMHAND_TOKEN_FILE": str(path)})
    assert "readable by other users" in str(err.value)
    assert f"chmod 600 {path}" in str(err.value)


def test_missing_token_says_how_to_get_one(tmp_path):
    config = load_config({"state_dir": str(tmp_path)}, env={})
    with pytest.raises(ConfigError, match="farmhand enroll"):
        config.require_token()
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({"token_file": str(tmp_path / "nope")}, env={})


def test_sizes():
    assert parse_size("1048576") == 1024**2
    assert parse_size("500M") == 500 * 1024**2
    assert parse_size("1.5GiB") == int(1.5 * 1024**3)
    assert parse_size("20gb") == 20 * 1024**3
    with pytest.raises(ConfigError):
        parse_size("-5")


def test_config_file_with_a_token_must_be_private(tmp_path):
    config_file = Path(tmp_path / "farmhand.toml")
    config_file.write_text('token = "s3cret"\n')
    os.chmod(config_file, 0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        load_config({"config": str(config_file)}, env={})
    os.chmod(config_file, 0o600)
    assert load_config({"config": str(config_file)}, env={}).token == "s3cret"
