"""ffmpeg command lines of a render: video segments, the audio track, the joins.

Why segments: one filter graph holding every input costs hundreds of MB per 1080p input and
queues frames; one ffmpeg per timeline item opens at most two video decoders (the item and the
head of the next one for its xfade), keeps memory bounded for any length, and lets segments run
in parallel. All segments use identical encoder settings and an mp4 timescale that is a multiple
of the frame rate, so the concat demuxer joins them by stream copy with exact timestamps.

The audio is one continuous track: its parts (a few dozen items each) are rendered losslessly,
then joined, mixed with the music and encoded to AAC once; the final join only copies packets
(``+faststart`` for playback before download completes). A render split across machines
(``timeline.split``) joins runs of segments into parts, and the parts into the output, the same
way.

Every media input is opened through ``timeline.inputs.media_input`` (local file only, real media
containers only, the caps of ``timeline.probe``); the renderer's own files through ``own_input``,
naming the demuxer it wrote them for.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

from timeline.encoders import Encoder
from timeline.filtergraph import mix_audio_graph, part_audio_graph, segment_graph
from timeline.inputs import file_url, media_input, own_input
from timeline.plan import SAMPLE_RATE, PlanItem, RenderPlan, Segment
from timeline.probe import MAX_PIXELS, MAX_STREAMS

AUDIO_BITRATE = "192k"
# Read a few source frames past what is needed (a trim filter makes it exact); every frame
# read is decoded, so no more than that.
READ_MARGIN_FRAMES = 3
READ_MARGIN_S = 0.1  # where the source's rate is unknown
# The memory model of a segment's ffmpeg (ffmpeg 5.1, libx264 "standard" with its lookahead at
# 20 pictures, one thread each), an upper bound of what BENCHMARKS.md ("Memory") measured: a base
# plus a cost per megapixel of output for the process and its encoder, and for each input a cost
# per megapixel of source (its decoder) and of output (its filters).
SEGMENT_BASE_MB = 60.0
ENCODER_MB_PER_MPX = 125.0
DECODER_MB_PER_MPX = 15.0
FILTERS_MB_PER_MPX = 10.0
# Items per audio pass: one ffmpeg with hundreds of inputs needs hundreds of file handles and
# threads and grows in memory and time faster than linearly; parts of a few dozen stay flat.
AUDIO_PART_ITEMS = 24
# Every picture is converted to BT.709 limited range (filtergraph._scale); say so in the stream,
# or players guess BT.601 for small outputs and shift the colours.
OUTPUT_COLOR = ["-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
                "-color_range", "tv"]  # fmt: skip


def segment_memory_mb(plan: RenderPlan) -> float:
    """About how much memory one segment's ffmpeg takes before its inputs: the process and
    its encoder (x264 keeps 20 pictures of lookahead, see timeline/encoders.py)."""
    return SEGMENT_BASE_MB + ENCODER_MB_PER_MPX * plan.width * plan.height / 1e6


def input_memory_mb(plan: RenderPlan, item: PlanItem) -> float:
    """About how much memory ``item`` adds to the ffmpeg of its segment: its decoder and its
    filters keep their frames until that ffmpeg ends."""
    source = item.info.width * item.info.height if item.info is not None else 0
    return (DECODER_MB_PER_MPX * source + FILTERS_MB_PER_MPX * plan.width * plan.height) / 1e6


def track_timescale(fps: Fraction) -> int:
    """An mp4 video timescale that holds every frame time exactly: a multiple of the frame
    rate's numerator (so 1/fps is whole ticks), at least 10 000."""
    scale = fps.numerator
    while scale < 10_000:
        scale *= 2
    return scale


def _media(path: Path) -> list[str]:
    """Input options and ``-i`` of a media file (a source of the compilation)."""
    return media_input(path, max_pixels=MAX_PIXELS, max_streams=MAX_STREAMS)


def _seek(seconds: float) -> list[str]:
    return ["-ss", f"{seconds:.6f}"] if seconds > 0 else []


def read_margin(item: PlanItem) -> float:
    """Seconds read past what ``item`` needs: a few of its source frames, so a rate change has
    the frame after the last one it shows (the trim filter makes the length exact)."""
    fps = item.info.fps if item.info is not None else 0.0
    return READ_MARGIN_FRAMES / fps if fps > 0 else READ_MARGIN_S


def _video_input(
    item: PlanItem, path: Path, skip_s: float, length_s: float, threads: list[str]
) -> list[str]:
    return [*_seek(item.source_start_s + skip_s), "-t", f"{length_s + read_margin(item):.6f}",
            *threads, "-an", "-sn", "-dn", *_media(path)]  # fmt: skip


def segment_command(
    plan: RenderPlan,
    segment: Segment,
    encoder: Encoder,
    out: Path,
    graph_file: Path,
    font: str | None,
    paths: dict[str, Path],
    threads: int | None = None,
) -> list[str]:
    """ffmpeg arguments (after the binary) rendering ``segment`` to the mp4 ``out``. The filter
    graph is written to ``graph_file`` (long graphs exceed Windows' command-line limit).

    ``threads`` is the CPU threads this ffmpeg should use (None: as many as ffmpeg likes).
    With 1, decoders, filters and encoder all run in one thread: when there are as many
    segments encoding at once as cores, that wastes the least on threads waiting for each
    other (about 7 % less CPU for the same frames than letting each take every core)."""
    args = list(encoder.global_args())
    single = ["-threads", "1"] if threads == 1 else []
    if single:
        args += ["-filter_complex_threads", "1"]
    inputs: dict[int, int] = {}
    for k in segment.item_range:
        item = plan.items[k]
        skip = plan.seconds(segment.skip) if k == segment.item else 0.0
        args += _video_input(item, paths[item.key], skip, plan.seconds(item.frames) - skip,
                             single)  # fmt: skip
        inputs[k] = len(inputs)
    if segment.head_item is not None:
        head = plan.items[segment.head_item]
        args += _video_input(head, paths[head.key], 0.0, plan.seconds(segment.head_frames),
                             single)  # fmt: skip
        inputs[segment.head_item] = len(inputs)
    watermark_input = None
    if plan.watermark is not None:
        loop = [] if plan.watermark.still else ["-stream_loop", "-1"]
        args += [*loop, "-an", "-sn", "-dn", *_media(paths[plan.watermark.key])]
        watermark_input = len(inputs)
    graph_file.write_text(
        segment_graph(plan, segment, inputs=inputs, watermark_input=watermark_input,
                      upload=encoder.upload_filter(), font=font),
        encoding="utf-8",
    )  # fmt: skip
    args += ["-filter_complex_script", str(graph_file), "-map", "[v]", "-an", "-sn", "-dn"]
    args += encoder.output_args(plan.quality, float(plan.fps))
    if threads:
        args += ["-threads", str(threads)]
    args += OUTPUT_COLOR
    args += ["-frames:v", str(segment.frames),
             "-video_track_timescale", str(track_timescale(plan.fps)),
             "-f", "mp4", "-y", str(out)]  # fmt: skip
    return args


def audio_parts(plan: RenderPlan, size: int | None = None) -> list[tuple[int, int]]:
    """The items split into runs of at most ``size`` (default ``AUDIO_PART_ITEMS``), each
    (first, last) inclusive, for the audio passes."""
    size = size or AUDIO_PART_ITEMS
    count = len(plan.items)
    return [(first, min(first + size, count) - 1) for first in range(0, count, size)]


def _audio_inputs(
    plan: RenderPlan, part: tuple[int, int], paths: dict[str, Path]
) -> tuple[list[str], dict[int, int]]:
    """Input arguments for the sound of the items ``part``, and each item's input number
    (items without sound have none)."""
    first, last = part
    args: list[str] = []
    inputs: dict[int, int] = {}
    for i in range(first, last + 1):
        item = plan.items[i]
        if item.info is None or not item.info.has_audio:
            continue
        length = plan.seconds(item.frames) + read_margin(item)
        args += [*_seek(item.source_start_s), "-t", f"{length:.6f}",
                 "-vn", "-sn", "-dn", *_media(paths[item.key])]  # fmt: skip
        inputs[i] = len(inputs)
    return args, inputs


def audio_part_command(
    plan: RenderPlan, part: tuple[int, int], out: Path, graph_file: Path, paths: dict[str, Path]
) -> list[str]:
    """ffmpeg arguments rendering the sound of the items ``part`` to ``out`` (lossless float
    PCM in Matroska: exact sample counts, no size limit, no second lossy encode)."""
    args, inputs = _audio_inputs(plan, part, paths)
    graph_file.write_text(part_audio_graph(plan, *part, inputs), encoding="utf-8")
    args += ["-filter_complex_script", str(graph_file), "-map", "[a]",
             "-c:a", "pcm_f32le", "-ar", str(SAMPLE_RATE), "-ac", "2",
             "-f", "matroska", "-y", str(out)]  # fmt: skip
    return args


def audio_track_command(
    plan: RenderPlan, out: Path, graph_file: Path, paths: dict[str, Path]
) -> list[str]:
    """ffmpeg arguments rendering the whole audio track in one pass (when ``audio_parts``
    finds one part): the items' sound, the music, the AAC encode."""
    part = (0, len(plan.items) - 1)
    args, inputs = _audio_inputs(plan, part, paths)
    music_input = _music_input(plan, args, len(inputs), paths)
    graph = part_audio_graph(plan, *part, inputs, out="items")
    graph += ";\n" + mix_audio_graph(plan, [part], music_input, part_labels=["items"])
    graph_file.write_text(graph, encoding="utf-8")
    return args + _aac_output(plan, graph_file, out)


def _music_input(plan: RenderPlan, args: list[str], count: int, paths: dict[str, Path]):
    """Add the looped music to ``args`` (holding ``count`` inputs); its input number."""
    if plan.music is None:
        return None
    args += ["-stream_loop", "-1", "-vn", "-sn", "-dn", *_media(paths[plan.music.key])]
    return count


def _aac_output(plan: RenderPlan, graph_file: Path, out: Path) -> list[str]:
    samples = plan.sample_at(plan.total_frames)
    return ["-filter_complex_script", str(graph_file), "-map", "[a]",
            "-c:a", "aac", "-b:a", AUDIO_BITRATE, "-ar", str(SAMPLE_RATE), "-ac", "2",
            # the graph ends on time already; this bounds a looped music input regardless
            "-t", f"{samples / SAMPLE_RATE:.6f}",
            "-f", "mp4", "-y", str(out)]  # fmt: skip


def audio_mix_command(
    plan: RenderPlan,
    parts: list[tuple[int, int]],
    part_files: list[Path],
    out: Path,
    graph_file: Path,
    paths: dict[str, Path],
) -> list[str]:
    """ffmpeg arguments joining the audio parts, mixing the music in, and encoding the whole
    track once to AAC 48 kHz stereo in ``out``."""
    args: list[str] = []
    for part_file in part_files:
        args += own_input(part_file, "matroska")
    music_input = _music_input(plan, args, len(part_files), paths)
    graph_file.write_text(mix_audio_graph(plan, parts, music_input), encoding="utf-8")
    return args + _aac_output(plan, graph_file, out)


def concat_list(
    fps: Fraction, files: Sequence[Path], starts: Sequence[int], end: int, list_file: Path
) -> None:
    """Write the concat demuxer's list: file k, which begins at output frame ``starts[k]`` and
    lasts until the next one begins (the last until frame ``end``), with its exact duration.

    The demuxer places file k at the sum of the earlier files' durations, counted in whole
    microseconds. Left to itself it takes them from each mp4's header, rounded to milliseconds,
    which shifts later files by a fraction of a frame at rates like 24 or 29.97. Durations
    given here are differences of the *rounded exact start times*, so the sum is always the
    true start within half a microsecond and no error accumulates. The files are video segments
    or whole parts (runs of segments); each is named by its absolute ``file:`` URL, quoted as
    the demuxer reads it, so no name can be taken for another protocol."""
    bounds = [_microseconds(frame, fps) for frame in (*starts, end)]
    lines = []
    for i, path in enumerate(files):
        name = file_url(Path(path).resolve()).replace("'", "'\\''")
        lines += [f"file '{name}'", f"duration {(bounds[i + 1] - bounds[i]) / 1e6:.6f}"]
    list_file.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _microseconds(frame: int, fps: Fraction) -> int:
    return round(Fraction(frame) * 1_000_000 / fps)


def join_command(
    fps: Fraction, codec: str, list_file: Path, out: Path, audio: Path | None = None
) -> list[str]:
    """ffmpeg arguments joining the video files of ``list_file`` (``concat_list``) by stream
    copy into the mp4 ``out``: with the audio track ``audio``, the finished output
    (``+faststart``, for playback before a download completes); without, a part of the picture
    to be joined again later."""
    tag = ["-tag:v", "hvc1"] if codec == "hevc" else []
    if audio is None:
        sound, finish = ["-an"], []
    else:
        sound, finish = ["-map", "1:a:0"], ["-movflags", "+faststart"]
    return ["-f", "concat", "-safe", "0", *own_input(list_file, "concat"),
            *(own_input(audio, "mov") if audio is not None else []),
            "-map", "0:v:0", *sound, "-c", "copy", *tag,
            "-video_track_timescale", str(track_timescale(fps)),
            *finish, "-f", "mp4", "-y", str(out)]  # fmt: skip


def thumbnail_command(video: Path, at_s: float, out: Path, max_height: int = 360) -> list[str]:
    """ffmpeg arguments writing one JPEG frame of ``video`` at ``at_s`` seconds to ``out``."""
    return [*_seek(at_s), *own_input(video, "mov"), "-frames:v", "1", "-an",
            "-vf", f"scale=-2:'min({max_height},ih)'", "-q:v", "3",
            "-update", "1", "-f", "image2",
            "-y", str(out)]  # fmt: skip
