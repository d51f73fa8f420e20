"""Render a compilation locally, without a farm: ``python -m timeline render SPEC -o OUT``.

SPEC is a JSON file holding one compilation (or a submit body with a ``compilation`` key). Its
sources are local files, ``{"path": "clips/a.mp4"}``, relative to the spec's folder. A failed
render exits non-zero with one line naming the file and the reason, and leaves nothing behind.

``python -m timeline probe FILE...`` prints what ffprobe found in each file, as JSON lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import threading
from pathlib import Path

from timeline.errors import RenderError
from timeline.plan import source_labels
from timeline.probe import probe
from timeline.progress import Progress
from timeline.render import RenderResult, render
from timeline.spec import Compilation, SpecError, parse_compilation


class CliError(Exception):
    """A problem reported as one line on stderr."""


def load_spec(path: Path) -> tuple[Compilation, dict[str, Path]]:
    """The compilation in ``path`` and the local file of each of its sources."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CliError(f"{path}: cannot read it ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CliError(f"{path}: not valid JSON ({exc})") from None
    if isinstance(raw, dict) and isinstance(raw.get("compilation"), dict):
        raw = raw["compilation"]
    try:
        compilation = parse_compilation(raw if isinstance(raw, dict) else {"clips": raw})
    except SpecError as exc:
        raise CliError(f"{path}: {exc}") from None
    labels = source_labels(compilation)
    sources: dict[str, Path] = {}
    for source in compilation.sources():
        if source.path is None:
            raise CliError(f"{path}: {labels[source.key]} is not a local file; local renders "
                           'take sources like {"path": "clips/a.mp4"}')  # fmt: skip
        sources[source.key] = (path.parent / source.path).resolve()
    return compilation, sources


def _show_progress(progress: Progress) -> None:
    parts = [f"{progress.fraction * 100:5.1f}%"]
    if progress.fps:
        parts.append(f"{progress.fps:.0f} fps")
    if progress.speed:
        parts.append(f"{progress.speed:.2f}x")
    if progress.eta_s is not None:
        parts.append(f"eta {progress.eta_s:.0f} s")
    sys.stderr.write("\r" + "  ".join(parts) + "   ")
    sys.stderr.flush()


def run_render(args: argparse.Namespace) -> int:
    compilation, sources = load_spec(Path(args.spec))
    cancel = threading.Event()
    outcome: dict[str, object] = {}
    show = None if args.quiet or not sys.stderr.isatty() else _show_progress

    def work() -> None:
        try:
            outcome["result"] = render(
                compilation, sources, Path(args.output), encoder=args.encoder, progress=show,
                cancel=cancel, workdir=Path(args.workdir) if args.workdir else None,
                parallel=args.parallel, thumbnail=Path(args.thumbnail) if args.thumbnail else None,
                nice=args.nice,
            )  # fmt: skip
        except BaseException as exc:
            outcome["error"] = exc

    # the render runs in a thread so Ctrl-C or SIGTERM can cancel it (killing every ffmpeg)
    worker = threading.Thread(target=work, name="render")
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: cancel.set())
    worker.start()
    try:
        while worker.is_alive():
            worker.join(timeout=0.2)
    except KeyboardInterrupt:
        cancel.set()
        worker.join()
    if show:
        sys.stderr.write("\n")
    error = outcome.get("error")
    if isinstance(error, RenderError):
        raise CliError(error.message)
    if isinstance(error, ValueError):
        raise CliError(str(error))
    if isinstance(error, BaseException):
        raise error
    result = outcome["result"]
    assert isinstance(result, RenderResult)
    if not args.quiet:
        print(f"{result.path}: {result.duration_s:.2f} s, {result.width}x{result.height} "
              f"@ {result.fps:g} fps, {result.size_bytes} bytes, {result.encoder}, "
              f"rendered in {result.render_s:.1f} s")  # fmt: skip
    return 0


def run_probe(args: argparse.Namespace) -> int:
    for name in args.files:
        try:
            info = probe(Path(name))
        except RenderError as exc:
            raise CliError(exc.message) from None
        fields = dataclasses.asdict(info)
        fields["path"] = str(info.path)
        print(json.dumps(fields))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m timeline", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("render", help="render a compilation spec to an mp4")
    one.add_argument("spec", help="JSON file holding one compilation")
    one.add_argument("-o", "--output", required=True, help="the mp4 to write")
    one.add_argument("--encoder", help="encoder name, e.g. libx264 or h264_nvenc "
                     "(default: the software encoder of the output codec)")  # fmt: skip
    one.add_argument("--parallel", type=int, default=2, help="segments encoded at once")
    one.add_argument("--thumbnail", help="also write a JPEG thumbnail here")
    one.add_argument("--workdir", help="folder for intermediate files (default: beside -o)")
    one.add_argument("--nice", action="store_true", help="run ffmpeg at the lowest priority")
    one.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    one.set_defaults(run=run_render)
    two = commands.add_parser("probe", help="print what ffprobe finds in media files")
    two.add_argument("files", nargs="+")
    two.set_defaults(run=run_probe)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except CliError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
