"""The farmhand's settings, from defaults, a TOML file, the environment and flags.

Precedence, lowest first: defaults < config file < environment < command-line flags. The
config file is ``--config PATH`` or ``$FARMHAND_CONFIG``; its keys are the field names of
:class:`FarmhandConfig` (``board_url = "http://board:8000"``, ``pause_processes = ["game.exe"]``),
an unknown key is an error so a typo never goes unnoticed. Every environment variable is listed
in :data:`ENV_VARS`.

The farmhand token comes from ``FARMHAND_TOKEN`` or, preferably, a token file
(``FARMHAND_TOKEN_FILE``, default ``<state_dir>/token``) that only its owner may read;
``farmhand enroll`` writes one with mode 0600.

Clip URLs are the submitters' choice, fetched from the owner's PC: the farmhand only connects to
public internet addresses for them, never to the PC itself or its home network (see
farmhand.netguard). ``allow_networks`` (``FARMHAND_ALLOW_NETWORKS``, ``--allow-networks``) is
the owner's exception, e.g. ``192.168.1.20`` for a NAS the owner's own jobs take clips from.
Board media is fetched from the board's address whatever this setting says.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from farmhand import platform
from farmhand.netguard import Network, parse_networks
from farmhand.schedule import Schedule, ScheduleError, parse_schedule

GiB = 1024**3
MiB = 1024**2

# Same rule as wire.Name, so a default derived from the hostname is accepted by the board.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,99}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the setting and where it came from."""


@dataclass(frozen=True)
class FarmhandConfig:
    """Every farmhand setting. Build it with :func:`load_config`, not by hand."""

    board_url: str = "http://127.0.0.1:8000"
    token: str | None = field(default=None, repr=False)
    name: str = ""  # "" until resolved: load_config fills in the hostname
    state_dir: Path = field(default_factory=platform.default_state_dir)
    cache_dir: Path = field(default_factory=platform.default_cache_dir)
    cache_max_bytes: int = 20 * GiB
    max_download_bytes: int = 4 * GiB  # per source; bigger files are refused, not truncated
    download_concurrency: int = 4
    # Networks clip URLs may reach besides the public internet (default: none). Anything listed
    # here is reachable by every submitter's job: list a media server, not a whole home LAN.
    allow_networks: tuple[Network, ...] = ()
    slots: int | None = None  # None: chosen by the probe from the hardware
    tags: tuple[str, ...] = ()
    wait_s: float = 25.0  # claim long-poll; the board caps it at 30
    # Owner first (see farmhand.owner): any of these pauses claiming.
    pause_processes: tuple[str, ...] = ()
    cpu_pause_percent: float | None = 60.0  # CPU used by other programs, % of the machine
    gpu_pause_percent: float | None = 40.0  # GPU (3D/compute engine) busy, %
    schedule: Schedule = field(default_factory=lambda: parse_schedule(""))
    resume_delay_s: float = 60.0  # after the owner is done, wait this long before claiming
    load_window_s: float = 10.0  # CPU load is averaged over this window, so spikes don't pause
    # Binaries.
    ffmpeg: str = "ffmpeg"
    ffprobe: str = "ffprobe"
    yt_dlp: str = "yt-dlp"  # for tools that shell out; media fetch uses yt-dlp as a library
    nvidia_smi: str = "nvidia-smi"
    probe_timeout_s: float = 20.0  # per test encode
    token_file: Path | None = None  # None: <state_dir>/token
    config_file: Path | None = None  # where file settings came from, for messages
    log_level: str = "INFO"

    @property
    def token_path(self) -> Path:
        """The token file in effect: ``token_file`` or ``<state_dir>/token``."""
        return self.token_file or self.state_dir / "token"

    def require_token(self) -> str:
        """The farmhand token, or a ConfigError saying how to provide one."""
        if not self.token:
            raise ConfigError(
                "no farmhand token: create one on the board (`board token create --role farmhand "
                f"--name {self.name or 'NAME'}`) and store it with `farmhand enroll --token -` "
                f"(writes {self.token_path}), or set FARMHAND_TOKEN / FARMHAND_TOKEN_FILE"
            )
        return self.token


# field name -> environment variable (docs/architecture.md names, plus the farmhand's own additions)
ENV_VARS: dict[str, str] = {
    "board_url": "FARMHAND_BOARD_URL",
    "token": "FARMHAND_TOKEN",
    "token_file": "FARMHAND_TOKEN_FILE",
    "name": "FARMHAND_NAME",
    "state_dir": "FARMHAND_STATE_DIR",
    "cache_dir": "FARMHAND_CACHE_DIR",
    "cache_max_bytes": "FARMHAND_CACHE_MAX_BYTES",
    "max_download_bytes": "FARMHAND_MAX_DOWNLOAD_BYTES",
    "download_concurrency": "FARMHAND_DOWNLOAD_CONCURRENCY",
    "allow_networks": "FARMHAND_ALLOW_NETWORKS",
    "slots": "FARMHAND_SLOTS",
    "tags": "FARMHAND_TAGS",
    "wait_s": "FARMHAND_WAIT_S",
    "pause_processes": "FARMHAND_PAUSE_PROCESSES",
    "cpu_pause_percent": "FARMHAND_CPU_PAUSE_PERCENT",
    "gpu_pause_percent": "FARMHAND_GPU_PAUSE_PERCENT",
    "schedule": "FARMHAND_SCHEDULE",
    "resume_delay_s": "FARMHAND_RESUME_DELAY_S",
    "load_window_s": "FARMHAND_LOAD_WINDOW_S",
    "ffmpeg": "FFMPEG_BINARY",
    "ffprobe": "FFPROBE_BINARY",
    "yt_dlp": "YT_DLP_BINARY",
    "nvidia_smi": "FARMHAND_NVIDIA_SMI",
    "probe_timeout_s": "FARMHAND_PROBE_TIMEOUT_S",
    "log_level": "FARMHAND_LOG_LEVEL",
}
CONFIG_ENV = "FARMHAND_CONFIG"


def beside_a_board_env(
    board_url: str, token: str, name: str, home: Path,
    base: Mapping[str, str] | None = None, **settings: object,
) -> dict[str, str]:  # fmt: skip
    """The environment of a farmhand run on the board's own machine (the demo, the tests, the
    benchmarks): ``base`` (default: this process's), the board, the token and the name, state
    and cache under ``home``, and no pausing for the machine's load (the board and the program
    that started it keep that machine busy). ``settings`` are more ``FarmhandConfig`` fields."""
    values = {
        "board_url": board_url, "token": token, "name": name,
        "state_dir": home / "state", "cache_dir": home / "cache",
        "cpu_pause_percent": "off", "gpu_pause_percent": "off", "resume_delay_s": 0,
        **settings,
    }  # fmt: skip
    env = dict(os.environ if base is None else base)
    env.update({ENV_VARS[field]: str(value) for field, value in values.items()})
    return env


_FIELDS = {f.name for f in fields(FarmhandConfig)}
_FILE_KEYS = _FIELDS - {"config_file"}


def load_config(
    argv_overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    read_token: bool = True,
) -> FarmhandConfig:
    """Build the configuration: defaults < config file < environment < ``argv_overrides``.

    ``argv_overrides`` maps field names to values from the command line; ``None`` values mean
    "flag not given". The key ``config`` names the config file. ``env`` defaults to
    ``os.environ``. ``read_token=False`` leaves the token file alone (``farmhand enroll``
    replaces it). Raises :class:`ConfigError` with a message naming the bad setting.
    """
    env = os.environ if env is None else env
    flags = {k: v for k, v in (argv_overrides or {}).items() if v is not None}
    config_path = flags.pop("config", None) or env.get(CONFIG_ENV) or None

    raw: dict[str, tuple[Any, str]] = {}  # field -> (value, where it came from)
    if config_path:
        path = Path(config_path).expanduser()
        for key, value in _read_config_file(path).items():
            raw[key] = (value, f"{path} ({key})")
        raw["config_file"] = (path, "--config")
    for name, var in ENV_VARS.items():
        if var in env and env[var].strip() != "":
            raw[name] = (env[var], var)
    for name, value in flags.items():
        if name not in _FIELDS:
            raise ConfigError(f"unknown setting {name!r} (known: {', '.join(sorted(_FIELDS))})")
        raw[name] = (value, f"--{name.replace('_', '-')}")

    values = {name: _convert(name, value, where) for name, (value, where) in raw.items()}
    config = FarmhandConfig(**values)
    if not config.name:
        config = replace(config, name=_default_name())
    if read_token and not config.token:
        token = _read_token_file(config.token_path, explicit=config.token_file is not None)
        if token:
            config = replace(config, token=token)
    return config


def write_token_file(path: Path, token: str) -> Path:
    """Store ``token`` in ``path`` readable by its owner only (0600), replacing it atomically.

    Parent folders are created 0700. The token is written to a temporary file that is 0600 from
    its creation, then renamed over ``path``, so no moment exists where it is readable by others.
    """
    token = token.strip()
    if not token or any(c.isspace() for c in token):
        raise ConfigError("the token must be one word with no spaces (paste it as printed)")
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # the umask may only narrow; an old tmp file may be wider
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def parse_size(text: str | int, setting: str = "size") -> int:
    """Read a byte count: ``20000000``, ``500M``, ``20G``, ``1.5GiB`` (K/M/G/T are powers of
    1024). Raises ConfigError naming ``setting``."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise ConfigError(f"{setting}: {text!r} is not a size (examples: 500M, 20G, 1048576)")
        number, unit = float(match.group(1)), match.group(2).lower()
        value = int(number * 1024 ** ("kmgt".index(unit) + 1 if unit else 0))
    if value <= 0:
        raise ConfigError(f"{setting}: must be more than 0 bytes (got {text!r})")
    return value


# ---------------------------------------------------------------- conversion of raw values


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    if isinstance(data.get("farmhand"), dict) and len(data) == 1:
        data = data["farmhand"]  # a [farmhand] table is accepted too
    if data.get("token") and not platform.token_file_is_private(path):
        raise ConfigError(
            f"config file {path} holds a token but is readable by other users; "
            f"chmod 600 {path}, or move the token to a token file (`farmhand enroll`)"
        )
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise ConfigError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_FILE_KEYS))}"
        )
    return data


def _convert(name: str, value: Any, where: str) -> Any:
    try:
        return _CONVERTERS.get(name, _to_str)(value, where)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _to_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty text, got {value!r}")
    return value.strip()


def _to_path(value: Any, where: str) -> Path:
    return Path(_to_str(str(value), where)).expanduser()


def _to_list(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value]
    else:
        raise ConfigError(f"{where}: expected a comma-separated list, got {value!r}")
    return tuple(dict.fromkeys(i.strip() for i in items if i.strip()))


def _to_number(value: Any, where: str, lo: float, hi: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{where}: {number:g} is out of range ({lo:g} to {hi:g})")
    return number


def _to_int(value: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{where}: {value!r} is not a whole number")
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a whole number") from None
    if not lo <= number <= hi:
        raise ConfigError(f"{where}: {number} is out of range ({lo} to {hi})")
    return number


def _to_percent_or_off(value: Any, where: str) -> float | None:
    if isinstance(value, str) and value.strip().lower() in ("off", "none", "no", "false"):
        return None
    if value is False:
        return None
    return _to_number(value, where, 1, 100)


def _to_board_url(value: Any, where: str) -> str:
    url = _to_str(value, where).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: {url!r} is not a board address like http://board:8000")
    return url


def _to_name(value: Any, where: str) -> str:
    name = _to_str(value, where)
    if not _NAME.match(name):
        raise ConfigError(
            f"{where}: {name!r} is not a valid farmhand name (letters, digits, '.', '_', '@', '-', "
            "starting with a letter or digit, at most 100 characters)"
        )
    return name


def _to_tags(value: Any, where: str) -> tuple[str, ...]:
    tags = _to_list(value, where)
    for tag in tags:
        if not _TAG.match(tag):
            raise ConfigError(f"{where}: tag {tag!r} may use letters, digits, '.', '_', ':', '-'")
    return tags


def _to_networks(value: Any, where: str) -> tuple[Network, ...]:
    if not isinstance(value, str | list | tuple):
        raise ConfigError(f"{where}: expected a comma-separated list of networks, got {value!r}")
    try:
        return parse_networks(value if isinstance(value, str) else [str(v) for v in value])
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _to_schedule(value: Any, where: str) -> Schedule:
    try:
        return parse_schedule(value if isinstance(value, str) else ",".join(value))
    except ScheduleError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _to_log_level(value: Any, where: str) -> str:
    level = _to_str(value, where).upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{where}: log level is one of DEBUG, INFO, WARNING, ERROR")
    return level


_CONVERTERS = {
    "board_url": _to_board_url,
    "token": lambda v, w: _to_str(v, w),
    "name": _to_name,
    "state_dir": _to_path,
    "cache_dir": _to_path,
    "token_file": _to_path,
    "config_file": lambda v, w: Path(v),
    "cache_max_bytes": lambda v, w: parse_size(v, w),
    "max_download_bytes": lambda v, w: parse_size(v, w),
    "download_concurrency": lambda v, w: _to_int(v, w, 1, 32),
    "allow_networks": _to_networks,
    "slots": lambda v, w: _to_int(v, w, 1, 64),
    "tags": _to_tags,
    "wait_s": lambda v, w: _to_number(v, w, 0, 30),
    "pause_processes": _to_list,
    "cpu_pause_percent": _to_percent_or_off,
    "gpu_pause_percent": _to_percent_or_off,
    "schedule": _to_schedule,
    "resume_delay_s": lambda v, w: _to_number(v, w, 0, 86_400),
    "load_window_s": lambda v, w: _to_number(v, w, 1, 600),
    "probe_timeout_s": lambda v, w: _to_number(v, w, 1, 600),
    "log_level": _to_log_level,
}


def _default_name() -> str:
    """The hostname, cut to what the board accepts as a farmhand name."""
    host = socket.gethostname().split(".")[0]
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", host).lstrip("._@-")[:100]
    return name or "farmhand"


def _read_token_file(path: Path, *, explicit: bool) -> str | None:
    """The token in ``path``; None when a default-located file does not exist."""
    try:
        private = platform.token_file_is_private(path)
    except FileNotFoundError:
        if explicit:
            raise ConfigError(
                f"token file {path} does not exist; write it with `farmhand enroll --token -`"
            ) from None
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}") from None
    if not private:
        mode = path.stat().st_mode & 0o777
        raise ConfigError(
            f"token file {path} is readable by other users (mode {mode:04o}); "
            f"anyone who reads it can act as this farmhand. Fix it with: chmod 600 {path}"
        )
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read token file {path}: {exc}") from None
    if not token:
        raise ConfigError(f"token file {path} is empty; write it with `farmhand enroll --token -`")
    return token
