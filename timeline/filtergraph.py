"""The filter graphs: one per video segment, and those of the audio track (parts, then mix).

Video: every input is normalised to the output (constant fps, fit with aspect kept, square
pixels, yuv420p) and cut to an exact frame count; neighbours are blended with xfade; overlays and
the watermark are drawn in the same pass, so every frame is decoded once and encoded once.

Audio: every item's sound is resampled to 48 kHz stereo (silence for silent clips), padded or cut
to exactly its video length in samples, and chained with acrossfade (xfade joins) or concat
(cuts), a few dozen items per part; the parts are joined the same way, and the music is looped,
faded, ducked under the clips with sidechaincompress and mixed in.

Functions here only build strings; ``segments.py`` turns them into ffmpeg command lines.
"""

from __future__ import annotations

from fractions import Fraction

from timeline.plan import SAMPLE_RATE, PlanItem, PlanJoin, RenderPlan, Segment
from timeline.text import overlay_filters

PIX_FMT = "yuv420p"
AUDIO_FORMAT = f"aformat=sample_fmts=fltp:sample_rates={SAMPLE_RATE}:channel_layouts=stereo"


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _fps(fps: Fraction) -> str:
    return f"{fps.numerator}/{fps.denominator}"


def fit_size(aspect: float, width: int, height: int, fit: str) -> tuple[int, int]:
    """The size a picture of display ``aspect`` is scaled to: inside the output for ``contain``
    (and the sharp layer of ``blur``), covering it for ``cover``. Even, aspect kept."""
    if aspect <= 0:
        return width, height
    wider = aspect >= width / height
    if fit == "cover":
        return (_even(height * aspect), height) if wider else (width, _even(width / aspect))
    return (width, _even(width / aspect)) if wider else (_even(height * aspect), height)


# ffprobe's color_space names -> the scale filter's matrix names
_MATRICES = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc",
             "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}  # fmt: skip


def source_matrix(item: PlanItem) -> str:
    """The YCbCr matrix of ``item``'s picture: as declared, else what players assume for its
    size (HD is BT.709, SD BT.601)."""
    assert item.info is not None
    declared = _MATRICES.get(item.info.color_space)
    if declared:
        return declared
    return "bt709" if item.info.height >= 720 or item.info.width >= 1280 else "smpte170m"


def _scale(item: PlanItem, width: int, height: int, flags: str | None = None) -> str:
    """The first scale of a picture: sized, and converted to BT.709 limited range, the one
    colour space every output is tagged with. Shrinking uses swscale's bilinear filter (as
    wide as the shrink, so it averages every source pixel: no aliasing) at three quarters of
    bicubic's cost; enlarging keeps bicubic, which stays sharper."""
    assert item.info is not None
    if flags is None:
        shrinks = width <= item.info.width and height <= item.info.height
        flags = "bilinear" if shrinks else "bicubic"
    return (f"scale={width}:{height}:flags={flags}:in_color_matrix={source_matrix(item)}"
            ":out_color_matrix=bt709:out_range=tv")  # fmt: skip


def fit_filters(item: PlanItem, plan: RenderPlan, src: str, dst: str, tag: str) -> list[str]:
    """Graph statements scaling ``[src]`` into the output as ``plan.fit`` asks, to ``[dst]``.

    Frames arrive already turned upright (ffmpeg applies the display matrix), so the probe's
    display aspect (rotation and SAR applied) is the aspect to keep."""
    assert item.info is not None
    width, height = plan.width, plan.height
    aspect = item.info.display_aspect
    w, h = fit_size(aspect, width, height, "contain")
    if abs(w - width) <= 2 and abs(h - height) <= 2:
        return [f"[{src}]{_scale(item, width, height)},setsar=1[{dst}]"]  # same shape
    if plan.fit == "cover":
        cw, ch = fit_size(aspect, width, height, "cover")
        return [f"[{src}]{_scale(item, cw, ch)},setsar=1,crop={width}:{height}[{dst}]"]
    if plan.fit == "contain":
        return [
            f"[{src}]{_scale(item, w, h)},setsar=1,"
            f"pad={width}:{height}:{(width - w) // 2}:{(height - h) // 2}:color=black[{dst}]"
        ]
    # blur: the picture itself, sharp, over a blurred copy covering the frame. The copy is
    # blurred at a quarter of the size: same look, a sixteenth of the work; and scaled with
    # the cheapest filter both ways, as the blur hides any difference.
    qw, qh = _even(width / 4), _even(height / 4)
    bw, bh = fit_size(aspect, qw, qh, "cover")
    sigma = max(2.0, min(qw, qh) / 12)
    return [
        f"[{src}]split=2[{tag}bg][{tag}fg]",
        f"[{tag}bg]{_scale(item, bw, bh, 'fast_bilinear')},setsar=1,crop={qw}:{qh},"
        f"gblur=sigma={sigma:.1f},scale={width}:{height}:flags=fast_bilinear,setsar=1[{tag}bgb]",
        f"[{tag}fg]{_scale(item, w, h)},setsar=1[{tag}fgs]",
        f"[{tag}bgb][{tag}fgs]overlay={(width - w) // 2}:{(height - h) // 2}[{dst}]",
    ]


def item_video(
    item: PlanItem, plan: RenderPlan, src: str, dst: str, frames: int, font: str | None, tag: str
) -> list[str]:
    """Statements turning input ``[src]`` (already seeked to the first wanted frame) into
    exactly ``frames`` normalised frames of ``item`` at ``[dst]``, overlays drawn."""
    assert item.info is not None
    rate = f"fps={_fps(plan.fps)}"
    # resample the rate before scaling when it drops frames (less to scale), after when it adds
    rate_first = item.info.fps <= 0 or item.info.fps > float(plan.fps)
    head = ["bwdif=mode=send_frame:deint=interlaced"] if item.info.interlaced else []
    if rate_first:
        head.append(rate)
    head.append("setpts=PTS-STARTPTS")
    statements = [f"[{src}]{','.join(head)}[{tag}in]"]
    statements += fit_filters(item, plan, f"{tag}in", f"{tag}fit", tag)
    tail = [] if rate_first else [rate, "setpts=PTS-STARTPTS"]
    # a source a little shorter than its probe said repeats its last frame instead of ending
    tail += ["tpad=stop=-1:stop_mode=clone", f"trim=end_frame={frames}"]
    tail += overlay_filters(item.title, item.creator, plan.width, plan.height, font)
    tail.append(f"format={PIX_FMT}")
    statements.append(f"[{tag}fit]{','.join(tail)}[{dst}]")
    return statements


def segment_graph(
    plan: RenderPlan,
    segment: Segment,
    *,
    inputs: dict[int, int],
    watermark_input: int | None,
    upload: str,
    font: str | None,
) -> str:
    """The filter graph of one video segment. ``inputs`` maps each item of the segment, and
    the next item when the segment ends in an xfade, to its ffmpeg input number (the first
    item's input already seeked past ``segment.skip``); ``watermark_input`` is the watermark's.
    Output ``[v]``: exactly ``segment.frames`` frames, stamped one frame apart from 0."""
    statements: list[str] = []
    last = ""
    for k in segment.item_range:
        item = plan.items[k]
        frames = item.frames - (segment.skip if k == segment.item else 0)
        label = f"i{k}"
        statements += item_video(item, plan, f"{inputs[k]}:v", label, frames, font, f"t{k}")
        if last:
            offset = item.start_frame - segment.start_frame
            statements.append(_video_join(plan, last, label, plan.joins[k - 1], offset, f"j{k}"))
            label = f"j{k}"
        last = label
    if segment.head_frames:
        k = segment.last_item + 1
        head = plan.items[k]
        statements += item_video(head, plan, f"{inputs[k]}:v", "head", segment.head_frames,
                                 font, "h")  # fmt: skip
        offset = segment.frames - segment.head_frames
        statements.append(_video_join(plan, last, "head", plan.joins[k - 1], offset, "mixed",
                                      right_is_overlap=True))  # fmt: skip
        last = "mixed"
    mark = plan.watermark
    if mark is not None and watermark_input is not None:
        statements.append(
            f"[{watermark_input}:v]scale={mark.width}:-2,format=rgba,"
            f"colorchannelmixer=aa={mark.opacity:.3f}[mark]"
        )
        x, y = _corner(mark.position, mark.margin)
        eof = "" if mark.still else ":shortest=1"
        statements.append(f"[{last}][mark]overlay=x={x}:y={y}{eof}[marked]")
        last = "marked"
    final = f"format={PIX_FMT}" + (f",{upload}" if upload else "")
    statements.append(f"[{last}]{final}[v]")
    return ";\n".join(statements)


def _video_join(
    plan: RenderPlan,
    left: str,
    right: str,
    join: PlanJoin,
    offset: int,
    out: str,
    *,
    right_is_overlap: bool = False,
) -> str:
    """``[right]`` after ``[left]``, which holds ``offset`` frames before ``right`` begins:
    blended by the join's xfade, or cut. Either way the frames are restamped one output frame
    apart from 0 (concat counts in microseconds; xfade needs both inputs on one time base).

    Only the overlapping frames go through xfade. It works in 4:4:4 (ffmpeg converts what
    enters it from 4:2:0 and back), so a whole stream passed through it had every frame's
    chroma resampled twice: at 1080p that cost more CPU than the blending itself (BENCHMARKS.md).
    The frames before the overlap (``left``'s body) and after it (``right``'s, unless
    ``right_is_overlap``: a segment's head is the overlap alone) are cut out with trim and joined to
    the blend by concat, untouched."""
    restamp = f"settb={_fps(1 / plan.fps)},setpts=N"
    if not join.frames:
        return f"[{left}][{right}]concat=n=2:v=1:a=0,{restamp}[{out}]"
    n = join.frames
    statements = [
        f"[{left}]split=2[{out}l][{out}lt]",
        f"[{out}l]trim=end_frame={offset}[{out}lbody]",
        f"[{out}lt]trim=start_frame={offset},setpts=PTS-STARTPTS[{out}ltail]",
    ]
    parts = [f"[{out}lbody]", f"[{out}x]"]
    head = right
    if not right_is_overlap:
        statements += [
            f"[{right}]split=2[{out}r][{out}rb]",
            f"[{out}r]trim=end_frame={n}[{out}rhead]",
            f"[{out}rb]trim=start_frame={n},setpts=PTS-STARTPTS[{out}rbody]",
        ]
        head = f"{out}rhead"
        parts.append(f"[{out}rbody]")
    statements.append(
        f"[{out}ltail][{head}]xfade=transition={join.effect}"
        f":duration={plan.seconds(n):.6f}:offset=0,format={PIX_FMT}[{out}x]"
    )
    statements.append(f"{''.join(parts)}concat=n={len(parts)}:v=1:a=0,{restamp}[{out}]")
    return ";\n".join(statements)


def _corner(position: str, margin: int) -> tuple[str, str]:
    x = {"left": str(margin), "right": f"main_w-overlay_w-{margin}"}
    y = {"top": str(margin), "bottom": f"main_h-overlay_h-{margin}"}
    if position == "center":
        return "(main_w-overlay_w)/2", "(main_h-overlay_h)/2"
    vertical, horizontal = position.split("-")
    return x[horizontal], y[vertical]


def _overlap_samples(plan: RenderPlan, join: int) -> int:
    """Samples the xfade of join ``join`` overlaps (0 for cuts), from the shared frame grid."""
    start = plan.items[join + 1].start_frame
    frames = plan.joins[join].frames
    return plan.sample_at(start + frames) - plan.sample_at(start)


def _join(statements: list[str], left: str, right: str, join: int, out: str, plan: RenderPlan):
    overlap = _overlap_samples(plan, join)
    if overlap:
        statements.append(f"[{left}][{right}]acrossfade=ns={overlap}:c1=tri:c2=tri[{out}]")
    else:
        statements.append(f"[{left}][{right}]concat=n=2:v=0:a=1[{out}]")


def part_audio_graph(
    plan: RenderPlan, first: int, last: int, inputs: dict[int, int], out: str = "a"
) -> str:
    """The sound of items ``first``..``last`` (inclusive), crossfaded as their pictures are,
    output ``[out]``: exactly ``sample_at(last.end) - sample_at(first.start)`` samples.

    ``inputs`` maps an item's index to its ffmpeg input number; items without sound are absent
    and get silence."""
    statements = []
    for i in range(first, last + 1):
        item = plan.items[i]
        length = plan.sample_at(item.end_frame) - plan.sample_at(item.start_frame)
        if i in inputs:
            # first_pts=0: sound that starts after the picture is delayed, not pulled early
            source = (f"[{inputs[i]}:a]aresample={SAMPLE_RATE}:async=1:first_pts=0,"
                      f"{AUDIO_FORMAT},apad")  # fmt: skip
        else:
            source = f"anullsrc=r={SAMPLE_RATE}:cl=stereo,{AUDIO_FORMAT}"
        statements.append(f"{source},atrim=end_sample={length},asetpts=N/SR/TB[i{i}]")
    last_label = f"i{first}"
    for join in range(first, last):
        _join(statements, last_label, f"i{join + 1}", join, f"j{join}", plan)
        last_label = f"j{join}"
    statements.append(f"[{last_label}]anull[{out}]")
    return ";\n".join(statements)


def mix_audio_graph(
    plan: RenderPlan,
    parts: list[tuple[int, int]],
    music_input: int | None,
    part_labels: list[str] | None = None,
) -> str:
    """The whole audio track, output ``[a]``: the parts (input k, or the graph's pad
    ``part_labels[k]``, holds the items ``parts[k]``, as ``part_audio_graph`` made them) joined
    like their items, with the music looped, faded and ducked under them; ``music_input`` is
    the looped music's input number."""
    labels = part_labels or [f"{k}:a" for k in range(len(parts))]
    statements = [f"[{label}]{AUDIO_FORMAT},asetpts=N/SR/TB[p{k}]"
                  for k, label in enumerate(labels)]  # fmt: skip
    last = "p0"
    for k in range(1, len(parts)):
        _join(statements, last, f"p{k}", parts[k - 1][1], f"q{k}", plan)
        last = f"q{k}"
    music = plan.music
    if music is None or music_input is None:
        statements.append(f"[{last}]anull[a]")
        return ";\n".join(statements)

    start = plan.sample_at(music.start_frame)
    end = plan.sample_at(music.end_frame)
    fade = end - plan.sample_at(music.end_frame - music.fade_frames)
    fade_in = min(SAMPLE_RATE // 4, (end - start) // 4)  # a quarter second, so it never clicks
    bed = [
        f"aresample={SAMPLE_RATE}",
        AUDIO_FORMAT,
        f"atrim=end_sample={end - start}",
        "asetpts=N/SR/TB",
        f"volume={music.volume:.3f}",
        f"afade=t=in:ss=0:ns={fade_in}",
    ]
    if fade:
        bed.append(f"afade=t=out:ss={end - start - fade}:ns={fade}")
    statements.append(f"[{music_input}:a]{','.join(bed)}[bed]")
    if music.duck:
        # the clips' own sound, over the music's span, keys a compressor on the music
        statements.append(f"[{last}]asplit=2[main][keyfull]")
        statements.append(
            f"[keyfull]atrim=start_sample={start}:end_sample={end},asetpts=N/SR/TB[key]"
        )
        statements.append(
            "[bed][key]sidechaincompress=threshold=0.02:ratio=8:attack=10:release=350[ducked]"
        )
        bed_label, main_label = "ducked", "main"
    else:
        bed_label, main_label = "bed", last
    statements.append(f"[{bed_label}]adelay=delays={start}S:all=1[placed]")
    statements.append(
        f"[{main_label}][placed]amix=inputs=2:duration=first:dropout_transition=0:normalize=0[a]"
    )
    return ";\n".join(statements)
