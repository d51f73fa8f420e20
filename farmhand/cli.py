"""The ``farmhand`` command.

    farmhand run                 claim and render jobs until stopped (SIGTERM: finish or release)
    farmhand probe [--json]      what this PC can do: encoders verified by test encodes, GPUs...
    farmhand enroll --token -    store the farmhand token (read from stdin) in a 0600 file
    farmhand gate [--watch]      would the farmhand claim now, or why is it paused?
    farmhand service-hint        how to install the farmhand as a service here

Settings come from defaults < config file < environment < these flags (see farmhand.config).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import inspect
import logging
import sys
import time
from typing import Any

import msgspec

from farmhand import platform
from farmhand.config import ConfigError, FarmhandConfig, load_config, write_token_file
from farmhand.netguard import AddressPolicy, install_policy
from farmhand.probe import NOT_IN_TABLE, ProbeError, ProbeReport, probe

# flag -> FarmhandConfig field; every one is optional and overrides the environment.
_SETTING_FLAGS: dict[str, tuple[str, str]] = {
    "--config": ("config", "TOML config file (default: $FARMHAND_CONFIG)"),
    "--board-url": ("board_url", "board address, e.g. http://board:8000"),
    "--name": ("name", "farmhand name on the board (default: the hostname)"),
    "--token-file": ("token_file", "file holding the farmhand token (mode 0600)"),
    "--state-dir": ("state_dir", "folder for the token and probe results"),
    "--cache-dir": ("cache_dir", "folder for cached media"),
    "--cache-max-bytes": ("cache_max_bytes", "media cache bound, e.g. 20G"),
    "--max-download-bytes": ("max_download_bytes", "largest single download, e.g. 4G"),
    "--allow-networks": (
        "allow_networks",
        "comma list of networks clip URLs may reach besides the internet, e.g. 192.168.1.20 "
        "(default: none; the PC and its LAN are off limits)",
    ),
    "--slots": ("slots", "concurrent jobs (default: from the probe)"),
    "--tags": ("tags", "comma list of tags jobs can require"),
    "--wait-s": ("wait_s", "claim long-poll seconds (0-30)"),
    "--pause-processes": ("pause_processes", "comma list of programs that pause claiming"),
    "--cpu-pause-percent": ("cpu_pause_percent", "pause above this CPU use by others, or off"),
    "--gpu-pause-percent": ("gpu_pause_percent", "pause above this GPU use, or off"),
    "--schedule": ("schedule", 'allowed hours, e.g. "22:00-08:00,sat,sun"'),
    "--resume-delay-s": ("resume_delay_s", "wait after the owner is done before claiming"),
    "--ffmpeg": ("ffmpeg", "ffmpeg binary (default: $FFMPEG_BINARY or ffmpeg)"),
    "--ffprobe": ("ffprobe", "ffprobe binary"),
    "--log-level": ("log_level", "DEBUG, INFO, WARNING or ERROR"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``farmhand`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        print(f"farmhand: configuration error: {exc}", file=sys.stderr)
        return 2
    except ProbeError as exc:
        print(f"farmhand: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------- commands


def cmd_run(args: argparse.Namespace) -> int:
    """Run the claim loop (farmhand.loop) with the loaded configuration."""
    config = _config(args)
    config.require_token()
    _setup_logging(config)
    log = logging.getLogger("farmhand")
    for applied in platform.lower_priority():
        log.info("priority lowered: %s", applied)
    install_policy(AddressPolicy(config.allow_networks))
    if config.allow_networks:
        log.warning(
            "clip URLs may reach %s besides the internet (allow_networks): every submitter's "
            "jobs can read what answers there",
            ", ".join(str(n) for n in config.allow_networks),
        )
    from farmhand.loop import run_farmhand  # the claim loop; imported only when running

    result: Any = run_farmhand(config)
    if inspect.isawaitable(result):
        result = asyncio.run(result)
    return int(result or 0)


def cmd_probe(args: argparse.Namespace) -> int:
    """Print what this PC can do (``--json`` for scripts)."""
    config = _config(args)
    _setup_logging(config, default="WARNING")
    report = probe(config, use_cache=not args.fresh)
    if args.json:
        sys.stdout.write(probe_json(report) + "\n")
    else:
        sys.stdout.write(probe_table(report, config))
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    """Store the farmhand token in a file only its owner can read."""
    config = _config(args, read_token=False)
    token = args.token
    if token == "-":
        token = sys.stdin.readline()
    elif token is None:
        if not sys.stdin.isatty():
            token = sys.stdin.readline()
        else:
            token = getpass.getpass("farmhand token (from `board token create --role farmhand`): ")
    path = write_token_file(config.token_path, token)
    print(f"token stored in {path} (mode 0600)")
    if config.token_file is None:
        print("the farmhand reads it from there by default; set FARMHAND_TOKEN_FILE to move it")
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    """Show whether the owner gate is open, with what it measured."""
    from farmhand.owner import OwnerGate

    config = _config(args)
    gate = OwnerGate(config)
    while True:
        reason = gate.check()
        activity = gate.measure()
        cpu = activity.cpu_others_percent
        gpu = activity.gpu_percent
        print(
            f"{reason or 'free to claim'}  [cpu by others: "
            f"{'-' if cpu is None else f'{cpu:.0f}%'}, gpu: {'-' if gpu is None else f'{gpu:.0f}%'}"
            f", schedule: {config.schedule.text or 'always'}]",
            flush=True,
        )
        if not args.watch:
            return 0 if reason is None else 3
        time.sleep(1.0)


def cmd_service_hint(args: argparse.Namespace) -> int:
    """Print how to install the farmhand as a service on this platform."""
    print(platform.service_install_hint())
    return 0


# ---------------------------------------------------------------- output


def probe_json(report: ProbeReport) -> str:
    """The probe as JSON: the capabilities' fields at the top (what the board receives), plus
    ``checks`` (every listed encoder, verified or why not), ``nvidia_gpus``, ``slots_reason``,
    ``ffmpeg``, ``from_cache`` and ``probed_at``."""
    doc = msgspec.to_builtins(report.capabilities)
    doc.update(
        {
            "checks": msgspec.to_builtins(report.checks),
            "rejected": report.rejected,
            "nvidia_gpus": msgspec.to_builtins(report.nvidia_gpus),
            "slots_reason": report.slots_reason,
            "ffmpeg": report.ffmpeg,
            "from_cache": report.from_cache,
            "probed_at": report.probed_at,
        }
    )
    return msgspec.json.format(msgspec.json.encode(doc), indent=2).decode()


def probe_table(report: ProbeReport, config: FarmhandConfig) -> str:
    """The probe for a person: one line per encoder ffmpeg lists, then the machine."""
    caps = report.capabilities
    age = time.time() - report.probed_at
    when = "just now" if not report.from_cache else f"{_age(age)} ago, cached"
    lines = [f"ffmpeg {caps.ffmpeg_version}  ({report.ffmpeg}; probed {when})", ""]
    lines.append(f"{'encoder':<18} {'codec':<6} {'kind':<9} result")
    for check in report.checks:
        if check.reason == NOT_IN_TABLE:
            kind, result = "-", f"not used: {NOT_IN_TABLE}"
        else:
            kind = "hardware" if check.hardware else "software"
            result = f"verified ({check.seconds:.2f} s)" if check.ok else f"no: {check.reason}"
        lines.append(f"{check.name:<18} {check.codec:<6} {kind:<9} {result}")
    lines.append("")
    if report.nvidia_gpus:
        for gpu in report.nvidia_gpus:
            cap = gpu.nvenc_session_limit
            sessions = f"{cap} NVENC sessions per host" if cap else "no NVENC session cap"
            lines.append(
                f"gpu {gpu.index:<4} {gpu.name}, {gpu.memory_mb} MB, driver {gpu.driver_version}"
                f" ({sessions})"
            )
    else:
        lines.append("gpus     none reported by nvidia-smi")
    lines += [
        f"cores    {caps.cores}",
        f"memory   {caps.memory_mb} MB",
        f"disk     {caps.disk_free_mb} MB free for the cache ({config.cache_dir})",
        f"tags     {', '.join(caps.tags) or '-'}",
        f"slots    {report.slots_reason}",
        f"encoders {', '.join(caps.encoders) or 'none verified'}",
    ]
    return "\n".join(lines) + "\n"


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


# ---------------------------------------------------------------- plumbing


def _parser() -> argparse.ArgumentParser:
    settings = argparse.ArgumentParser(add_help=False)
    group = settings.add_argument_group("settings (override environment and config file)")
    for flag, (dest, help_text) in _SETTING_FLAGS.items():
        group.add_argument(flag, dest=dest, default=None, help=help_text, metavar="VALUE")

    parser = argparse.ArgumentParser(
        prog="farmhand",
        description="clipfarm farmhand: renders compilation jobs from a clipfarm board.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[settings], help="claim and render jobs until stopped")
    run.set_defaults(handler=cmd_run)

    probe_cmd = sub.add_parser("probe", parents=[settings], help="show what this PC can do")
    probe_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    probe_cmd.add_argument(
        "--fresh", action="store_true", help="ignore the cached probe and test every encoder now"
    )
    probe_cmd.set_defaults(handler=cmd_probe)

    enroll = sub.add_parser("enroll", parents=[settings], help="store the farmhand token (0600)")
    enroll.add_argument(
        "--token", help="the token, or - to read it from stdin (keeps it out of shell history)"
    )
    enroll.set_defaults(handler=cmd_enroll)

    gate = sub.add_parser("gate", parents=[settings], help="would the farmhand claim right now?")
    gate.add_argument("--watch", action="store_true", help="check every second until Ctrl-C")
    gate.set_defaults(handler=cmd_gate)

    hint = sub.add_parser("service-hint", help="how to install the farmhand as a service")
    hint.set_defaults(handler=cmd_service_hint)
    return parser


def _config(args: argparse.Namespace, *, read_token: bool = True) -> FarmhandConfig:
    overrides = {dest: getattr(args, dest, None) for dest, _ in _SETTING_FLAGS.values()}
    return load_config(overrides, read_token=read_token)


def _setup_logging(config: FarmhandConfig, default: str | None = None) -> None:
    level = config.log_level if default is None or config.log_level == "DEBUG" else default
    logging.basicConfig(
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # one line per HTTP request is noise at INFO: heartbeats alone make one every few seconds
    logging.getLogger("httpx").setLevel(logging.WARNING)


if __name__ == "__main__":
    sys.exit(main())
