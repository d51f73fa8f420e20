"""Render speed against the floor and a naive baseline; peak memory of a long 1080p timeline.

    python scripts/bench/render.py [--sizes 720,1080] [--reps 5] [--media DIR]
    python scripts/bench/render.py --memory [--clips 60]

The floor (docs/architecture.md, "Rendering") is what any renderer must do: decode every input once, and
encode the output's own frames once with the same encoder settings. The encode part is measured
by re-encoding the rendered result and subtracting the time it takes to decode it:

    floor = decode(inputs) + [decode + re-encode(output) - decode(output)]

The naive baseline is what a simple script does: normalise each clip to an intermediate file
(fit, fps, overlays, audio; the same encoder settings), then join them with the transitions,
watermark and music in one more encode.

Render, floor and baseline run back to back, in rotating order, ``--reps`` times; the medians of
wall time (what users wait for) and of CPU time (user + sys of the ffmpeg children, much less
disturbed by other load on a shared machine) are printed, with their ratios.

``--memory`` renders a timeline of ``--clips`` short 1080p clips to 1080p and samples the summed
RSS of every process the render started (psutil, every 20 ms).

The media are generated once into ``--media`` (default /tmp/clipfarm-bench-media) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from tests.timeline.samples import PeakMemory, set_rotation  # noqa: E402
from timeline.encoders import software_encoder  # noqa: E402
from timeline.filtergraph import item_video, mix_audio_graph, part_audio_graph  # noqa: E402
from timeline.plan import RenderPlan, render_plan  # noqa: E402
from timeline.render import probe_sources, render  # noqa: E402
from timeline.segments import AUDIO_BITRATE, OUTPUT_COLOR  # noqa: E402
from timeline.spec import Compilation, parse_compilation  # noqa: E402
from timeline.text import find_font  # noqa: E402

FFMPEG = os.environ.get("FFMPEG_BINARY", "ffmpeg")
DEFAULT_MEDIA = Path(tempfile.gettempdir()) / "clipfarm-bench-media"

# ---------------------------------------------------------------- the mixed input set

# Content an encoder has to work for (a plain test pattern is nearly free to encode).
_BUSY = "testsrc2=size={w}x{h}:rate={r},noise=alls=3:allf=t"
_FRACTAL = "mandelbrot=size=640x360:rate={r},scale={w}:{h}"
_LIFE = ("life=size=320x180:rate={r}:mold=10:ratio=0.1:death_color=#C83232:"
         "life_color=#00ff00,scale={w}:{h},gblur=sigma=2")  # fmt: skip
_SPIN = "rgbtestsrc=size={w}x{h}:rate={r},hue=H=t,rotate=a=t/2:fillcolor=navy"


@dataclass(frozen=True)
class Input:
    """One generated input: what a compilation meets in the wild."""

    name: str
    content: str
    width: int
    height: int
    fps: str
    seconds: float
    video: tuple[str, ...]  # encoder arguments
    audio: str | None  # "stereo:48000", "mono:22050", "5.1:48000" or None
    vf: str = ""
    rotate: int = 0


_X264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "18")
# the 12 inputs of the founding measurement (BENCHMARKS.md, "Render"): sizes, rates, SAR, rotation, 10 bit, interlaced,
# HEVC, long GOPs (one keyframe per clip), audio of every layout or none
MIXED = (
    Input("intro", _SPIN, 1920, 1080, "30", 2.0, (*_X264, "-g", "60"), "stereo:48000"),
    Input(
        "c01-1080p30-longgop",
        _FRACTAL,
        1920,
        1080,
        "30",
        3.0,
        (*_X264, "-g", "600"),
        "stereo:48000",
    ),
    Input("c02-720p60", _BUSY, 1280, 720, "60", 3.0, (*_X264, "-g", "600"), "stereo:44100"),
    Input(
        "c03-portrait-hevc",
        _LIFE,
        1080,
        1920,
        "30",
        3.0,
        (
            "-c:v",
            "libx265",
            "-preset",
            "fast",
            "-crf",
            "22",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=error:keyint=600",
        ),
        "stereo:48000",
    ),
    Input(
        "c04-phone-rotated",
        _BUSY,
        1280,
        720,
        "30",
        3.0,
        (*_X264, "-g", "600"),
        "stereo:48000",
        rotate=90,
    ),
    Input(
        "c05-pal-interlaced",
        _SPIN,
        720,
        576,
        "25",
        3.0,
        (*_X264, "-flags", "+ildct+ilme", "-g", "50"),
        "mono:48000",
        vf="setsar=16/15,setfield=tff",
    ),
    Input("c06-480p24-silent", _LIFE, 640, 480, "24", 3.0, (*_X264, "-g", "600"), None),
    Input(
        "c07-1080p2997-10bit-51",
        _BUSY,
        1920,
        1080,
        "30000/1001",
        3.0,
        (*_X264, "-pix_fmt", "yuv420p10le", "-g", "600"),
        "5.1:48000",
    ),
    Input("c08-1080p50", _FRACTAL, 1920, 1080, "50", 3.0, (*_X264, "-g", "600"), "stereo:48000"),
    Input("c09-480p-mono22k", _BUSY, 854, 480, "30", 3.0, (*_X264, "-g", "90"), "mono:22050"),
    Input(
        "c10-square-23976",
        _SPIN,
        1080,
        1080,
        "24000/1001",
        3.0,
        (*_X264, "-g", "600"),
        "stereo:48000",
    ),
    Input("outro", _BUSY, 1280, 720, "30", 2.0, (*_X264, "-g", "60"), "stereo:48000"),
)
MEMORY_INPUTS = tuple(
    Input(
        f"m{k}-1080p", content, 1920, 1080, "30", 1.0 + k / 5, (*_X264, "-g", "600"), "stereo:48000"
    )
    for k, content in enumerate((_BUSY, _FRACTAL, _SPIN, _LIFE, _BUSY, _SPIN))
)


def _run(argv: list[str]) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *argv], check=True)


def make_input(spec: Input, folder: Path) -> Path:
    out = folder / f"{spec.name}.mp4"
    if out.exists():
        return out
    part = out.with_suffix(".part.mp4")
    content = spec.content.format(w=spec.width, h=spec.height, r=spec.fps) + ",setsar=1"
    if "-pix_fmt" not in spec.video:
        content += ",format=yuv420p"
    argv = ["-f", "lavfi", "-t", str(spec.seconds), "-i", content]
    if spec.audio:
        layout, rate = spec.audio.split(":")
        argv += ["-f", "lavfi", "-t", str(spec.seconds), "-i",
                 f"sine=frequency=330:sample_rate={rate}:beep_factor=4,"
                 f"aformat=channel_layouts={layout}"]  # fmt: skip
    if spec.vf:
        argv += ["-vf", spec.vf]
    argv += [*spec.video, *(["-c:a", "aac", "-b:a", "128k"] if spec.audio else [])]
    _run([*argv, "-shortest", str(part)])
    if spec.rotate:
        set_rotation(part, spec.rotate)
    part.rename(out)
    return out


def make_media(folder: Path, inputs: tuple[Input, ...]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for spec in inputs:
        make_input(spec, folder)
    logo, music = folder / "logo.png", folder / "music.m4a"
    if not logo.exists():
        _run(["-f", "lavfi", "-i", "color=c=white@0.0:size=400x120,format=rgba,"
              "drawbox=x=10:y=10:w=380:h=100:color=orange@0.9:t=fill",
              "-frames:v", "1", str(logo)])  # fmt: skip
    if not music.exists():
        _run(["-f", "lavfi", "-i", "sine=frequency=220:sample_rate=44100:duration=20",
              "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.05:duration=20",
              "-filter_complex", "amix=inputs=2", "-c:a", "aac", "-b:a", "128k",
              str(music)])  # fmt: skip


def mixed_compilation(height: int, *, extras: bool = True) -> dict:
    """The example job of docs/architecture.md over the mixed set: blur fill, 0.5 s xfades, overlays and,
    with ``extras``, a watermark and a music bed."""
    clips = [s for s in MIXED if s.name.startswith("c")]
    effects = ["fade", "wipeleft", "dissolve", "slideleft", "circleopen"]
    compilation = {
        "title": "bench",
        "output": {"width": height * 16 // 9, "height": height, "fps": 30, "codec": "h264",
                   "quality": "standard"},
        "intro": {"path": "intro.mp4"},
        "outro": {"path": "outro.mp4"},
        "clips": [{"path": f"{s.name}.mp4", "creator": f"@creator{n}",
                   **({"title": f"Play of the week #{n}"} if n % 2 else {})}
                  for n, s in enumerate(clips, start=1)],
        "transitions": {"effects": effects, "duration": 0.5},
        "fit": "blur",
    }  # fmt: skip
    if extras:
        compilation["watermark"] = {"path": "logo.png", "opacity": 0.6}
        compilation["music"] = {"path": "music.m4a", "volume": 0.25, "duck": True}
    return compilation


def memory_compilation(clips: int, height: int = 1080) -> dict:
    names = [s.name for s in MEMORY_INPUTS]
    return {
        "output": {"width": height * 16 // 9, "height": height, "fps": 30, "quality": "standard"},
        "clips": [
            {"path": f"{names[k % len(names)]}.mp4", "creator": f"@c{k}"} for k in range(clips)
        ],
        "transitions": {"effect": "fade", "duration": 0.3},
        "fit": "blur",
        "watermark": {"path": "logo.png"},
        "music": {"path": "music.m4a"},
    }


def load(raw: dict, media: Path) -> tuple[Compilation, dict[str, Path]]:
    compilation = parse_compilation(raw)
    return compilation, {s.key: media / s.path for s in compilation.sources()}


# ---------------------------------------------------------------- measuring


@dataclass
class Timing:
    wall: float
    cpu: float  # user + sys of the children that ended meanwhile


class Stopwatch:
    """Wall time, and CPU time of the child processes that ended while it ran."""

    def __enter__(self) -> Stopwatch:
        self._usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *_) -> None:
        end = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (usage.ru_utime - self._usage.ru_utime) + (usage.ru_stime - self._usage.ru_stime)
        self.timing = Timing(end - self._start, cpu)


def timed_ffmpeg(argv: list[str]) -> Timing:
    with Stopwatch() as watch:
        _run(argv)
    return watch.timing


def measure_render(compilation: Compilation, sources: dict[str, Path], out: Path) -> Timing:
    with Stopwatch() as watch:
        render(compilation, sources, out)
    return watch.timing


def measure_floor(
    compilation: Compilation, sources: dict[str, Path], rendered: Path
) -> tuple[Timing, Timing, Timing]:
    """(floor, decode of the inputs, encode of the output): see the module docstring."""
    used = {s.key for s in compilation.sources()} - {
        s.key for s in (compilation.watermark, compilation.music) if s is not None
    }
    decode = Timing(0.0, 0.0)
    for key in sorted(used):
        t = timed_ffmpeg(["-noautorotate", "-i", str(sources[key]), "-map", "0:v:0",
                          "-map", "0:a:0?", "-f", "null", "-"])  # fmt: skip
        decode = Timing(decode.wall + t.wall, decode.cpu + t.cpu)
    out = compilation.output
    encoder = software_encoder(out.codec)
    reencode = timed_ffmpeg([
        "-i", str(rendered), "-map", "0:v:0", "-map", "0:a:0",
        *encoder.output_args(out.quality, out.fps), *OUTPUT_COLOR,
        "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-f", "null", "-",
    ])  # fmt: skip
    decode_out = timed_ffmpeg(["-i", str(rendered), "-map", "0:v:0", "-map", "0:a:0",
                               "-f", "null", "-"])  # fmt: skip
    encode = Timing(reencode.wall - decode_out.wall, reencode.cpu - decode_out.cpu)
    return Timing(decode.wall + encode.wall, decode.cpu + encode.cpu), decode, encode


def naive_commands(plan: RenderPlan, sources: dict[str, Path], work: Path, out: Path):
    """Normalise each item to an mp4 with the render's encoder settings, then join them all
    with the transitions, watermark and music in one more encode."""
    encoder = software_encoder(plan.codec)
    codec = [*encoder.output_args(plan.quality, float(plan.fps)), *OUTPUT_COLOR,
             "-c:a", "aac", "-b:a", AUDIO_BITRATE]  # fmt: skip
    font = find_font()
    commands, normalised = [], []
    for k, item in enumerate(plan.items):
        path = sources[item.key]
        graph = item_video(item, plan, "0:v", "v", item.frames, font, "n")
        inputs = {k: 0} if item.info and item.info.has_audio else {}
        graph.append(part_audio_graph(plan, k, k, inputs))
        seek = ["-ss", f"{item.source_start_s:.6f}"] if item.source_start_s else []
        norm = work / f"norm-{k:03d}.mp4"
        normalised.append(norm)
        commands.append([*seek, "-t", f"{plan.seconds(item.frames) + 0.5:.6f}",
                         "-i", str(path), "-filter_complex", ";".join(graph),
                         "-map", "[v]", "-map", "[a]", *codec, str(norm)])  # fmt: skip
    join, video, audio = [], "0:v", "0:a"
    for n in range(1, len(normalised)):
        j = plan.joins[n - 1]
        offset = plan.seconds(plan.items[n].start_frame)
        if j.frames:
            join.append(
                f"[{video}][{n}:v]xfade=transition={j.effect}:"
                f"duration={plan.seconds(j.frames):.6f}:offset={offset:.6f}[v{n}]"
            )
            join.append(f"[{audio}][{n}:a]acrossfade=d={plan.seconds(j.frames):.6f}:"
                        f"c1=tri:c2=tri[a{n}]")  # fmt: skip
        else:
            join.append(f"[{video}][{audio}][{n}:v][{n}:a]concat=n=2:v=1:a=1[v{n}][a{n}]")
        video, audio = f"v{n}", f"a{n}"
    argv = [a for norm in normalised for a in ("-i", str(norm))]
    mark, music = plan.watermark, plan.music
    count = len(normalised)
    if mark is not None:
        argv += ["-i", str(sources[mark.key])]
        join.append(
            f"[{count}:v]scale={mark.width}:-2,format=rgba,"
            f"colorchannelmixer=aa={mark.opacity:.3f}[mark]"
        )
        join.append(f"[{video}][mark]overlay=x=main_w-overlay_w-{mark.margin}:"
                    f"y=main_h-overlay_h-{mark.margin},format=yuv420p[vout]")  # fmt: skip
        video, count = "vout", count + 1
    if music is not None:
        argv += ["-stream_loop", "-1", "-i", str(sources[music.key])]
        mix = mix_audio_graph(plan, [(0, len(plan.items) - 1)], count)
        join.append(mix.replace("[0:a]", f"[{audio}]").replace("[a]", "[aout]"))
        audio = "aout"
    argv += [
        "-filter_complex",
        ";".join(join),
        "-map",
        f"[{video}]",
        "-map",
        f"[{audio}]",
        *codec,
        "-t",
        f"{plan.planned_s:.6f}",
        "-movflags",
        "+faststart",
        str(out),
    ]
    return commands, argv


def measure_naive(compilation: Compilation, sources: dict[str, Path], work: Path) -> Timing:
    with Stopwatch() as watch:
        plan = render_plan(compilation, probe_sources(compilation, sources))
        commands, join = naive_commands(plan, sources, work, work / "naive.mp4")
        for argv in commands:
            _run(argv)
        _run(join)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return watch.timing


# ---------------------------------------------------------------- reporting


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run([FFMPEG, "-version"], capture_output=True, text=True).stdout
    return (f"{model}, {psutil.cpu_count()} cores, "
            f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM, "
            f"{version.splitlines()[0].split(' Copyright')[0]}, Python {platform.python_version()}, "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")  # fmt: skip


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def bench_size(height: int, args, media: Path, work: Path) -> dict:
    compilation, sources = load(mixed_compilation(height, extras=not args.plain), media)
    plan = render_plan(compilation, probe_sources(compilation, sources))
    rendered = work / f"render-{height}.mp4"
    runs: dict[str, list[Timing]] = {"render": [], "floor": [], "naive": []}
    parts: dict[str, list[Timing]] = {"decode": [], "encode": []}
    steps = ["render", "floor"] + ([] if args.skip_naive else ["naive"])
    for rep in range(args.reps):
        order = steps[rep % len(steps) :] + steps[: rep % len(steps)]
        for step in order:
            if step == "render":
                runs["render"].append(measure_render(compilation, sources, rendered))
            elif step == "floor":
                if not rendered.exists():
                    render(compilation, sources, rendered)
                floor, decode, encode = measure_floor(compilation, sources, rendered)
                runs["floor"].append(floor)
                parts["decode"].append(decode)
                parts["encode"].append(encode)
            else:
                naive_work = work / "naive"
                naive_work.mkdir(exist_ok=True)
                runs["naive"].append(measure_naive(compilation, sources, naive_work))
        r, f = runs["render"][-1], runs["floor"][-1] if runs["floor"] else None
        if f:
            print(f"  {height}p rep {rep + 1}: render {r.wall:.2f} s ({r.cpu:.2f} cpu)  "
                  f"floor {f.wall:.2f} s ({f.cpu:.2f} cpu)"
                  + (f"  naive {runs['naive'][-1].wall:.2f} s ({runs['naive'][-1].cpu:.2f} cpu)"
                     if runs["naive"] else ""), flush=True)  # fmt: skip
    result = {"height": height, "planned_s": plan.planned_s, "items": len(plan.items),
              "reps": args.reps}  # fmt: skip
    for name, timings in {**runs, **parts}.items():
        result[name] = {"wall": median([t.wall for t in timings]),
                        "cpu": median([t.cpu for t in timings])}  # fmt: skip
    for kind in ("wall", "cpu"):
        floor = result["floor"][kind]
        result[f"render/floor {kind}"] = result["render"][kind] / floor
        if runs["naive"]:
            result[f"naive/floor {kind}"] = result["naive"][kind] / floor
            result[f"render/naive {kind}"] = result["render"][kind] / result["naive"][kind]
    return result


def bench_memory(args, media: Path, work: Path) -> dict:
    compilation, sources = load(memory_compilation(args.clips), media)
    plan = render_plan(compilation, probe_sources(compilation, sources))
    with PeakMemory() as peak, Stopwatch() as watch:
        render(compilation, sources, work / "memory.mp4")
    return {"clips": args.clips, "planned_s": plan.planned_s, "wall": watch.timing.wall,
            "cpu": watch.timing.cpu, "peak_ffmpeg_mb": peak.peak_children / 2**20,
            "peak_python_mb": peak.peak_self / 2**20,
            "most_processes": peak.most_processes}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="720,1080", help="output heights, comma-separated")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--media", type=Path, default=DEFAULT_MEDIA)
    parser.add_argument("--plain", action="store_true", help="no watermark and no music")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--memory", action="store_true", help="peak memory of a long timeline")
    parser.add_argument("--clips", type=int, default=60)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"# {machine()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="clipfarm-bench-render-"))
    results = []
    try:
        if args.memory:
            make_media(args.media, MEMORY_INPUTS)
            r = bench_memory(args, args.media, work)
            results.append(r)
            print(f"{r['clips']} clips of 1080p -> {r['planned_s']:.1f} s of 1080p30: peak RSS "
                  f"{r['peak_ffmpeg_mb']:.0f} MB in ffmpeg ({r['most_processes']} processes at "
                  f"most) + {r['peak_python_mb']:.0f} MB Python; {r['wall']:.1f} s wall, "
                  f"{r['cpu']:.1f} s cpu")  # fmt: skip
        else:
            make_media(args.media, MIXED)
            for height in (int(h) for h in args.sizes.split(",")):
                r = bench_size(height, args, args.media, work)
                results.append(r)
                line = (
                    f"{height}p, {r['items']} items -> {r['planned_s']:.1f} s, median of "
                    f"{r['reps']}:"
                )
                for name in ("render", "floor", "decode", "encode", "naive"):
                    if name in r and r[name]["wall"] == r[name]["wall"]:
                        line += f"  {name} {r[name]['wall']:.2f} s ({r[name]['cpu']:.2f} cpu)"
                print(line)
                print("  ratios: " + "  ".join(f"{k} {v:.2f}" for k, v in r.items()
                                             if "/" in k))  # fmt: skip
        print(f"# load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if args.json:
            args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
