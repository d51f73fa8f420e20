"""Creator and title overlays: drawtext filters sized from the output, any text escaped safely.

A drawtext option inside a filter graph passes two parsers: the graph parser (which treats
``\\ ' [ ] , ;`` specially) and the filter's option parser (``\\ ' :``). The text is quoted for
the second and escaped for the first, and ``expansion=none`` keeps ``%`` literal, so quotes,
colons, backslashes, percent signs, newlines and emoji all arrive as typed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

# Bold sans fonts in the places Debian/Fedora/Arch, macOS and Windows keep them.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/TTF/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",
    "/System/Library/Fonts/Supplemental/Arial Bold.ttf",
    "/Library/Fonts/Arial Bold.ttf",
    "C:/Windows/Fonts/arialbd.ttf",
    "C:/Windows/Fonts/segoeuib.ttf",
)
MAX_LINES = 3
_GRAPH_SPECIAL = re.compile(r"([\\'\[\],;])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CHAR_WIDTH = 0.62  # average advance of a bold sans glyph, in font sizes
_LINE_HEIGHT = 1.25


@dataclass(frozen=True)
class TextBox:
    """One overlay laid out: its lines, font size and border, in output pixels."""

    text: str
    fontsize: int
    border: int


def quote_option(value: str) -> str:
    """Quote ``value`` for a filter's option parser: everything literal inside single quotes;
    a single quote itself is closed, escaped and reopened."""
    return "'" + value.replace("'", "'\\''") + "'"


def escape_graph(value: str) -> str:
    """Escape ``value`` for the filter-graph parser (``\\ ' [ ] , ;`` get a backslash)."""
    return _GRAPH_SPECIAL.sub(r"\\\1", value)


def filter_value(value: str) -> str:
    """``value`` as a drawtext option value inside a filter graph, taken literally."""
    return escape_graph(quote_option(value))


def clean_text(text: str) -> str:
    """Overlay text as it will be drawn: newlines normalised, control characters and
    trailing spaces removed, at most ``MAX_LINES`` lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " ")
    text = _CONTROL.sub("", text)
    lines = [line.rstrip() for line in text.strip().split("\n")]
    if len(lines) > MAX_LINES:
        lines = [*lines[: MAX_LINES - 1], lines[MAX_LINES - 1] + " …"]
    return "\n".join(lines)


def layout_text(text: str, width: int, height: int, *, scale: float) -> TextBox | None:
    """Fit ``text`` into a fifth of a ``width`` x ``height`` picture: font size ``scale`` x
    height, shrunk for long or many lines, lines cut with … when still too long. None when
    there is nothing to draw."""
    text = clean_text(text)
    if not text:
        return None
    lines = text.split("\n")
    room = 0.2 * height * 0.85  # the fifth, less a margin from the edge
    size = scale * height
    size = min(size, room / (_LINE_HEIGHT * len(lines) + 0.6))
    longest = max(len(line) for line in lines)
    size = min(size, 0.92 * width / (_CHAR_WIDTH * longest))
    size = max(size, 8.0, 0.025 * height)
    fits = max(1, int(0.92 * width / (_CHAR_WIDTH * size)))
    lines = [line if len(line) <= fits else line[: max(1, fits - 1)] + "…" for line in lines]
    return TextBox(text="\n".join(lines), fontsize=round(size), border=max(2, round(size * 0.3)))


def overlay_filters(
    title: str | None, creator: str | None, width: int, height: int, font: str | None
) -> list[str]:
    """drawtext filters for a clip's ``title`` (top fifth) and ``creator`` (bottom fifth),
    white on a translucent box so they read on any background."""
    margin_x = round(width * 0.04)
    margin_y = round(height * 0.03)
    found = []
    for text, scale, top in ((title, 0.065, True), (creator, 0.05, False)):
        box = layout_text(text or "", width, height, scale=scale)
        if box is None:
            continue
        y = f"{margin_y + box.border}" if top else f"h-text_h-{margin_y + box.border}"
        options = [
            f"fontfile={filter_value(font)}" if font else "font=Sans",
            f"text={filter_value(box.text)}",
            "expansion=none",
            f"fontsize={box.fontsize}",
            "fontcolor=white",
            "box=1",
            "boxcolor=black@0.55",
            f"boxborderw={box.border}",
            f"x={margin_x + box.border}",
            f"y={y}",
            "fix_bounds=1",
        ]
        found.append("drawtext=" + ":".join(options))
    return found


@functools.cache
def find_font() -> str | None:
    """A bold sans font file: ``TIMELINE_FONT``, a known path, or fontconfig's pick. None lets
    ffmpeg's own fontconfig choose at render time."""
    chosen = os.environ.get("TIMELINE_FONT")
    if chosen and os.path.isfile(chosen):
        return chosen
    for path in FONT_CANDIDATES:
        if os.path.isfile(path):
            return path
    if shutil.which("fc-match"):
        try:
            done = subprocess.run(["fc-match", "-f", "%{file}", "sans:bold"], capture_output=True,
                                  text=True, timeout=10, check=False)  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0 and os.path.isfile(done.stdout.strip()):
            return done.stdout.strip()
    return None
