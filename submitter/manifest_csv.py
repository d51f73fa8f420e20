"""The CSV manifest: one clip per row, rows grouped into compilations by the ``compilation`` column.

Columns (header row first; names are case-insensitive; order is free):

per clip (every row)
    ``compilation``   the compilation this clip belongs to, also its title. Required on the
                      first row; an empty cell continues the compilation of the row above.
    ``clip``          a local file (relative to the manifest's folder), an ``http(s)://`` URL
                      (fetched by the farmhand, through yt-dlp for video pages) or
                      ``media:<id>`` (media already on the board). Required.
    ``start``, ``end``  trim, in seconds (``12.5``) or ``mm:ss`` / ``hh:mm:ss`` (``1:02.5``).
    ``creator``, ``title``  the overlay texts drawn on this clip.

per compilation (read from any row of the group; rows that repeat one must agree)
    ``intro``, ``outro``, ``watermark``, ``music``   sources, written like ``clip``.
    ``stingers``      sources separated by ``|``, played between clips.
    ``transition``    an xfade effect (``fade``, ``dissolve``, ``wipeleft``...) or ``none``.
    ``transition_duration``  seconds (0 = hard cuts).
    ``width``, ``height``, ``fps``, ``codec`` (h264, hevc, av1),
    ``quality`` (draft, standard, high), ``fit`` (contain, cover, blur)
    ``priority``      higher renders first (-1000..1000).
    ``encoder``       gpu, cpu or any (the default: prefers a GPU farmhand).

Rows whose first cell starts with ``#`` are comments; blank rows are skipped.
"""

from __future__ import annotations

import csv
import difflib
import io
from pathlib import Path
from typing import Any

from submitter.manifest import ManifestItem, Problem, parse_time, resolve_path

CLIP_COLUMNS = ("compilation", "clip", "start", "end", "creator", "title")
SOURCE_COLUMNS = ("intro", "outro", "watermark", "music")
COMPILATION_COLUMNS = (
    *SOURCE_COLUMNS,
    "stingers",
    "transition",
    "transition_duration",
    "width",
    "height",
    "fps",
    "codec",
    "quality",
    "fit",
    "priority",
    "encoder",
)
KNOWN = (*CLIP_COLUMNS, *COMPILATION_COLUMNS)


class _Cell(ValueError):
    """A cell that cannot be read; the message names the column."""


def read_csv(text: str, path: Path, problems: list[Problem]) -> list[ManifestItem]:
    """The compilations of a CSV manifest, in the order they first appear."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    groups: dict[str, _Group] = {}
    current: _Group | None = None
    next_line = 1
    for row in reader:
        line, next_line = next_line, reader.line_num + 1  # a quoted cell may span lines
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [_column(cell) for cell in row]
            if not _header_ok(header, line, path, problems):
                return []
            continue
        cells = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(header)}
        if any(cell.strip() for cell in row[len(header) :]):
            problems.append(Problem(path, line, f"{len(row)} cells but {len(header)} columns"))
        name = cells.get("compilation", "")
        if name:
            current = groups.setdefault(name, _Group(name, line, path, problems))
        elif current is None:
            problems.append(Problem(path, line, "the first row needs a `compilation` name"))
            continue
        current.add(cells, line)
    return [group.item() for group in groups.values()]


def _column(cell: str) -> str:
    return cell.strip().lower().replace(" ", "_").replace("-", "_")


def _header_ok(header: list[str], line: int, path: Path, problems: list[Problem]) -> bool:
    ok = True
    for name in header:
        if name and name not in KNOWN:
            close = difflib.get_close_matches(name, KNOWN, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(
                Problem(path, line, f"unknown column {name!r}{hint}; known: {', '.join(KNOWN)}")
            )
            ok = False
    for needed in ("compilation", "clip"):
        if needed not in header:
            problems.append(Problem(path, line, f"the header has no `{needed}` column"))
            ok = False
    return ok


class _Group:
    """The rows of one compilation, turned into a manifest item by ``item()``."""

    def __init__(self, name: str, line: int, path: Path, problems: list[Problem]) -> None:
        self.name = name
        self.line = line
        self.path = path
        self.folder = path.parent
        self.problems = problems
        self.clips: list[dict[str, Any]] = []
        self.settings: dict[str, tuple[str, int]] = {}  # column -> (cell, line it came from)
        self.lines: dict[tuple, int] = {(): line, ("compilation",): line}

    def problem(self, line: int, message: str) -> None:
        self.problems.append(Problem(self.path, line, message))

    def add(self, cells: dict[str, str], line: int) -> None:
        label = f"compilation {self.name!r}, clip {len(self.clips) + 1}"
        for column in COMPILATION_COLUMNS:
            value = cells.get(column, "")
            if not value:
                continue
            if column not in self.settings:
                self.settings[column] = (value, line)
            elif self.settings[column][0] != value:
                first, first_line = self.settings[column]
                self.problem(
                    line,
                    f"compilation {self.name!r}: {column} is {value!r} here but {first!r} "
                    f"on line {first_line}; one value per compilation",
                )
        if not cells.get("clip"):
            self.problem(line, f"{label}: the `clip` cell is empty")
            return
        clip: dict[str, Any] = source(cells["clip"], self.folder)
        for key in ("start", "end"):
            if cells.get(key):
                try:
                    clip[key] = parse_time(cells[key])
                except ValueError as exc:
                    self.problem(line, f"{label}: {key}: {exc}")
        for key in ("creator", "title"):
            if cells.get(key):
                clip[key] = cells[key]
        self.lines[("compilation", "clips", len(self.clips))] = line
        self.clips.append(clip)

    def item(self) -> ManifestItem:
        compilation: dict[str, Any] = {"title": self.name, "clips": self.clips}
        submit: dict[str, Any] = {}
        output: dict[str, Any] = {}
        transitions: dict[str, Any] = {}
        for column, (value, line) in self.settings.items():
            self.lines[("compilation", *_FIELD_PATHS.get(column, (column,)))] = line
            try:
                if column in SOURCE_COLUMNS:
                    compilation[column] = source(value, self.folder)
                elif column == "stingers":
                    parts = [p for p in value.split("|") if p.strip()]
                    transitions["stingers"] = [source(p, self.folder) for p in parts]
                elif column == "transition" and value.lower() in ("none", "cut"):
                    transitions["duration"] = 0
                elif column == "transition":
                    transitions["effect"] = value
                elif column == "transition_duration":
                    transitions.setdefault("duration", _number(value, column, float))
                elif column in ("width", "height"):
                    output[column] = _number(value, column, int)
                elif column == "fps":
                    output[column] = _number(value, column, float)
                elif column in ("codec", "quality"):
                    output[column] = value.lower()
                elif column == "fit":
                    compilation["fit"] = value.lower()
                elif column == "priority":
                    self.lines[("priority",)] = line
                    submit["priority"] = _number(value, column, int)
                elif column == "encoder":
                    self.lines[("requirements",)] = line
                    submit["requirements"] = {"encoder": value.lower()}
            except _Cell as exc:
                self.problem(line, f"compilation {self.name!r}: {exc}")
        if output:
            compilation["output"] = output
        if transitions:
            compilation["transitions"] = transitions
        return ManifestItem(
            line=self.line,
            label=f"compilation {self.name!r}",
            compilation=compilation,
            submit=submit,
            lines=self.lines,
        )


_FIELD_PATHS = {
    "stingers": ("transitions", "stingers"),
    "transition": ("transitions", "effect"),
    "transition_duration": ("transitions", "duration"),
    "width": ("output", "width"),
    "height": ("output", "height"),
    "fps": ("output", "fps"),
    "codec": ("output", "codec"),
    "quality": ("output", "quality"),
}


def source(text: str, folder: Path) -> dict[str, str]:
    """A source from a cell: a URL, ``media:<id>`` or a local path."""
    text = text.strip()
    if text.lower().startswith(("http://", "https://")):
        return {"url": text}
    if text.lower().startswith("media:"):
        return {"media": text[6:].strip()}
    return {"path": str(resolve_path(text, folder))}


def _number(value: str, column: str, kind: type) -> Any:
    try:
        return kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise _Cell(f"{column}: {value!r} is not {what}") from None
