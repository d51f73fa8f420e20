"""The demo farm: a board and two farmhands on this machine, three real compilations submitted
with clipfarm-submit, followed, checked with ffprobe. Run it with ``scripts/demo``.

    scripts/demo                     run, then keep the farm up (dashboard) until Ctrl-C
    scripts/demo --exit-when-done    stop the farm and exit once the outputs are verified
                                     (also CLIPFARM_DEMO_EXIT_WHEN_DONE=1)

Everything lives in ``demo-out/`` (or ``--dir``), started afresh each run: ``media/`` (sample
media), ``board/`` (the board's SQLite database and files), ``outputs/`` (the videos),
``logs/`` (board and farmhand logs), ``manifest.json`` (what was submitted).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from demo_media import make_sample_media  # beside this file (scripts/ is not a package)

from board.spawn import BoardProcess, BoardStartError, board_env
from farmhand.config import beside_a_board_env
from wire import routes

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".clipfarm-demo"  # only a folder holding this is ever wiped
FARMHANDS = 2
WIDTH, HEIGHT = 640, 360


class DemoError(Exception):
    """The demo cannot go on; the message says why and where to look."""


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


class DemoFarm:
    """The board and farmhand processes, each in its own session so a Ctrl-C reaches only the
    demo, which then stops them in order: farmhands first (they release their jobs), then the
    board."""

    def __init__(self, root: Path, port: int | None) -> None:
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # the embedded SQLite default, in the demo's own folder
        self.board = BoardProcess(board_env(root / "board"), self.logs / "board.log", port=port)
        self.url = self.board.url
        self.farmhands: list[subprocess.Popen] = []

    def start_board(self) -> str:
        """Start ``board serve``; returns an admin token."""
        (self.root / "board").mkdir(parents=True, exist_ok=True)
        admin = self.board.create_admin("demo-admin")
        self.board.start()
        return admin

    def start_farmhand(self, name: str, token: str) -> None:
        state = self.root / "farmhands" / name
        env = beside_a_board_env(
            self.url, token, name, state, base=self.board.env, slots=1, wait_s=5
        )
        with open(self.logs / f"{name}.log", "ab") as log:
            self.farmhands.append(
                subprocess.Popen(
                    [sys.executable, "-m", "farmhand.cli", "run"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def dead(self) -> str | None:
        """Which process exited on its own, if any."""
        if self.board.exited() is not None:
            return f"the board exited ({self.board.exited()}); see {self.board.log_path}"
        for n, hand in enumerate(self.farmhands, 1):
            if hand.poll() is not None:
                return f"farmhand {n} exited ({hand.returncode}); see {self.logs}"
        return None

    def stop(self) -> None:
        for proc in self.farmhands:
            _terminate(proc, 40)
        self.board.stop(wait_s=20)


def _terminate(proc: subprocess.Popen, wait_s: float) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- what the demo renders


def demo_manifest(media: dict[str, Path], folder: Path) -> list[dict]:
    """Three compilations using every feature: intro/outro, trims, overlays, fits, xfades,
    stingers, random transitions, a watermark and music."""

    def src(name: str) -> str:
        return str(media[name].relative_to(folder))

    output = {"width": WIDTH, "height": HEIGHT, "fps": 30, "quality": "draft"}
    return [
        {
            "title": "Demo 1 - fades, overlays, a watermark",
            "output": output,
            "intro": {"path": src("intro")},
            "outro": {"path": src("outro")},
            "clips": [
                {"path": src("landscape"), "start": 0.5, "end": 2.5, "creator": "alice",
                 "title": "first light"},
                {"path": src("bars"), "end": "0:02", "creator": "bob", "title": "colour bars"},
                {"path": src("portrait"), "creator": "carol", "title": "portrait, blurred fill"},
            ],
            "transitions": {"effect": "fade", "duration": 0.5},
            "fit": "blur",
            "watermark": {"path": src("logo"), "position": "top-right", "opacity": 0.6},
        },
        {
            "title": "Demo 2 - stingers and music",
            "output": output,
            "clips": [
                {"path": src("bars"), "end": 2, "creator": "bob"},
                {"path": src("silent"), "creator": "dave", "title": "a clip without sound"},
                {"path": src("landscape"), "start": 1, "creator": "alice"},
            ],
            "transitions": {"effect": "wipeleft", "duration": 0.4,
                            "stingers": [{"path": src("stinger")}]},
            "music": {"path": src("music"), "volume": 0.3},
            "outro": {"path": src("outro")},
        },
        {
            "title": "Demo 3 - random transitions, cropped to fit",
            "output": output,
            "priority": 5,
            "intro": {"path": src("intro")},
            "clips": [
                {"path": src("portrait"), "end": 2, "title": "cropped portrait"},
                {"path": src("landscape"), "end": 2},
                {"path": src("silent")},
                {"path": src("bars"), "start": 1},
            ],
            "transitions": {"effects": ["circleopen", "slideleft", "dissolve", "pixelize"],
                            "duration": 0.4, "order": "random", "seed": 7},
            "fit": "cover",
        },
    ]  # fmt: skip


def verify(video: Path) -> str:
    """ffprobe the video: an h264 picture of the demo's size and an AAC track, and how long."""
    done = subprocess.run(
        [os.environ.get("FFPROBE_BINARY", "ffprobe"), "-v", "error", "-show_format",
         "-show_streams", "-of", "json", str(video)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoError(f"{video}: ffprobe cannot read it: {done.stderr.strip()[-500:]}")
    info = json.loads(done.stdout)
    streams = {s["codec_type"]: s for s in info.get("streams", [])}
    video_stream, audio = streams.get("video"), streams.get("audio")
    if video_stream is None or audio is None:
        raise DemoError(f"{video}: expected a video and an audio stream, found {list(streams)}")
    size = (video_stream.get("width"), video_stream.get("height"))
    if video_stream.get("codec_name") != "h264" or size != (WIDTH, HEIGHT):
        raise DemoError(f"{video}: expected h264 {WIDTH}x{HEIGHT}, got {video_stream}")
    seconds = float(info["format"]["duration"])
    if seconds < 1:
        raise DemoError(f"{video}: only {seconds:.2f} s long")
    return f"{seconds:.1f} s, {WIDTH}x{HEIGHT} h264 + {audio.get('codec_name')} audio"


# ---------------------------------------------------------------- the run


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def prepare_folder(root: Path) -> None:
    """Start from an empty demo folder; never wipe a folder the demo did not make."""
    if root.exists() and any(root.iterdir()):
        if not (root / MARKER).exists():
            raise DemoError(f"{root} exists and is not a demo folder; pick another with --dir")
        shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text("made by scripts/demo; deleted and remade by each run\n")


def wait_for_farmhands(farm: DemoFarm, admin: str, count: int, timeout_s: float = 120) -> list:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        problem = farm.dead()
        if problem:
            raise DemoError(problem)
        r = httpx.get(
            f"{farm.url}{routes.FARMHANDS}",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        online = [f for f in r.json() if f.get("online")] if r.status_code == 200 else []
        if len(online) >= count:
            return online
        time.sleep(0.5)
    raise DemoError(f"farmhands did not come online within {timeout_s:.0f} s; see {farm.logs}")


def run(args: argparse.Namespace) -> int:
    root = args.dir.absolute()
    prepare_folder(root)
    farm = DemoFarm(root, args.port)
    waiting = False
    try:
        say("making sample media with ffmpeg")
        media = make_sample_media(root / "media")
        say(f"starting a board (SQLite in {_shown(root / 'board')})")
        admin = farm.start_board()
        say(f"dashboard: {farm.url}/")
        say(f"admin token: {admin}")
        submitter = farm.board.issue_token("submitter", "demo")
        for n in range(1, FARMHANDS + 1):
            name = f"demo-pc-{n}"
            farm.start_farmhand(name, farm.board.issue_token("farmhand", name))
        say(f"starting {FARMHANDS} farmhands (each checks which encoders work here first)")
        for hand in wait_for_farmhands(farm, admin, FARMHANDS):
            encoders = ", ".join((hand.get("capabilities") or {}).get("encoders", [])) or "?"
            say(f"  {hand['name']} online: {encoders}")
        manifest = root / "manifest.json"
        manifest.write_text(json.dumps(demo_manifest(media, root), indent=2) + "\n")
        outputs = root / "outputs"
        say(f"submitting {_shown(manifest)} with clipfarm-submit --wait")
        submit = subprocess.run(
            [sys.executable, "-m", "submitter.cli", str(manifest), "--wait", "--out",
             str(outputs), "--timeout", str(args.timeout)],
            env=dict(os.environ, CLIPFARM_BOARD_URL=farm.url, CLIPFARM_TOKEN=submitter),
            cwd=ROOT,
        )  # fmt: skip
        if submit.returncode != 0:
            raise DemoError(f"clipfarm-submit exited {submit.returncode}; logs in {farm.logs}")
        videos = sorted(outputs.glob("*.mp4"))
        if len(videos) != 3:
            raise DemoError(f"expected 3 videos in {outputs}, found {len(videos)}")
        say("checked with ffprobe:")
        for video in videos:
            say(f"  ok  {video}  ({verify(video)})")
        print(
            f"\n  dashboard        {farm.url}/  (sign in with the admin token)\n"
            f"  admin token      {admin}\n"
            f"  submit more      CLIPFARM_BOARD_URL={farm.url} CLIPFARM_TOKEN={submitter} "
            f".venv/bin/clipfarm-submit {manifest}\n"
            f"  outputs          {outputs}/\n"
            f"  logs             {farm.logs}/\n",
            flush=True,
        )
        if args.exit_when_done:
            say("done (--exit-when-done): stopping the farm")
            return 0
        say("the farm keeps running; Ctrl-C stops it")
        waiting = True
        while True:
            problem = farm.dead()
            if problem:
                raise DemoError(problem)
            time.sleep(1)
    except KeyboardInterrupt:
        say("stopping the farm")
        return 0 if waiting else 130
    except (DemoError, BoardStartError, subprocess.CalledProcessError, httpx.HTTPError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        # a second Ctrl-C must not leave a board or farmhand behind half-stopped
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        farm.stop()
        say("farm stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "demo-out", help="default: demo-out/")
    parser.add_argument("--port", type=int, help="board port (default: a free one)")
    parser.add_argument(
        "--exit-when-done",
        action="store_true",
        default=os.environ.get("CLIPFARM_DEMO_EXIT_WHEN_DONE", "") not in ("", "0"),
        help="stop once the outputs are verified (also CLIPFARM_DEMO_EXIT_WHEN_DONE=1)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for renders")
    args = parser.parse_args(argv)

    def stop(signum, frame):  # SIGTERM stops the demo like Ctrl-C does
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    # Ctrl-C stops the demo even when it was started from a shell's background job, which
    # starts its commands with SIGINT ignored (Python keeps an ignored SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
