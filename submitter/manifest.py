"""A bulk-submit manifest: many compilations in one file, CSV, JSON or JSONL.

``read_manifest`` turns the file into :class:`ManifestItem` s (one per compilation, each knowing
the line of every field it came from) and checks them all locally (``submitter.manifest_check``),
so every problem is reported as ``file:line: message`` before anything is uploaded.

JSON: a list of items, or one item. JSONL: one item per line (blank lines and lines starting
with ``#`` are skipped). An item is a compilation object as in the submit body (docs/architecture.md, "The
compilation"), optionally with ``priority``, ``requirements``, ``idempotency_key`` and
``max_attempts`` next to its fields, or a whole submit body ``{"compilation": {...},
"priority": ...}``. A source may be ``{"path": "clips/a.mp4"}`` (relative to the manifest's
folder; uploaded by the submit script), ``{"url": "https://..."}`` or ``{"media": "<id>"}``.
Clip ``start``/``end`` may be seconds or ``"mm:ss.ff"`` / ``"hh:mm:ss"`` text.

CSV: see ``submitter.manifest_csv``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from submitter.json_lines import JsonPath, JsonSyntaxError, line_of, parse_with_lines

# Fields of a submit body that are not the compilation (wire.SubmitJob).
SUBMIT_FIELDS = ("priority", "requirements", "idempotency_key", "max_attempts")
_TIME = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")


@dataclass(frozen=True)
class Problem:
    """Something wrong in the manifest, at a line of it."""

    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ManifestItem:
    """One compilation to submit, as the manifest wrote it.

    ``compilation`` is the JSON-able compilation; its ``path`` sources are absolute. ``lines``
    maps paths inside the item (``("compilation", "clips", 2, "start")``, ``("priority",)``) to
    the manifest line they came from.
    """

    line: int
    label: str
    compilation: Any
    submit: dict[str, Any] = field(default_factory=dict)  # priority, requirements, ...
    lines: dict[JsonPath, int] = field(default_factory=dict)

    def line_of(self, path: JsonPath) -> int:
        return line_of(self.lines, path, self.line)

    def local_files(self) -> list[Path]:
        """Every local file this item reads, each once, in timeline order."""
        found = {src["path"]: None for _, _, src in sources_of(self.compilation) if "path" in src}
        return [Path(p) for p in found]


@dataclass
class Manifest:
    path: Path
    items: list[ManifestItem]
    problems: list[Problem]


def read_manifest(path: Path, *, format: str | None = None) -> Manifest:
    """Read and check a manifest; ``format`` is csv, json or jsonl (default: from the suffix).
    Never raises for a bad manifest: everything wrong is in ``problems``."""
    from submitter.manifest_check import check_item
    from submitter.manifest_csv import read_csv

    path = Path(path)
    kind = (format or path.suffix.lstrip(".")).lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        return Manifest(path, [], [Problem(path, 1, f"cannot read the manifest: {exc}")])
    problems: list[Problem] = []
    if kind == "csv":
        items = read_csv(text, path, problems)
    elif kind == "json":
        items = _read_json(text, path, problems)
    elif kind in ("jsonl", "ndjson"):
        items = _read_jsonl(text, path, problems)
    else:
        problem = f"unknown manifest format {kind!r}: name it .csv, .json or .jsonl (or --format)"
        return Manifest(path, [], [Problem(path, 1, problem)])
    if not items and not problems:
        problems.append(Problem(path, 1, "the manifest holds no compilations"))
    for item in items:
        problems.extend(check_item(item, path))
    problems.sort(key=lambda p: p.line)
    return Manifest(path, items, problems)


# ---------------------------------------------------------------- JSON and JSONL


def _read_json(text: str, path: Path, problems: list[Problem]) -> list[ManifestItem]:
    try:
        doc, lines = parse_with_lines(text)
    except JsonSyntaxError as exc:
        problems.append(Problem(path, exc.line, f"not valid JSON: {exc.message}"))
        return []
    if isinstance(doc, list):
        raw = [
            (doc[i], {k[1:]: v for k, v in lines.items() if k[:1] == (i,)}) for i in range(len(doc))
        ]
    else:
        raw = [(doc, lines)]
    items = [_item(obj, at, n, path, problems) for n, (obj, at) in enumerate(raw, 1)]
    return [item for item in items if item is not None]


def _read_jsonl(text: str, path: Path, problems: list[Problem]) -> list[ManifestItem]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(path, number, f"not valid JSON: {exc.msg}"))
            continue
        items.append(_item(obj, {(): number}, len(items) + 1, path, problems))
    return [item for item in items if item is not None]


def _item(
    obj: Any, lines: dict[JsonPath, int], number: int, path: Path, problems: list[Problem]
) -> ManifestItem | None:
    """A JSON item: a compilation with submit fields beside it, or a whole submit body."""
    line = lines.get((), 1)
    if not isinstance(obj, dict):
        problems.append(Problem(path, line, f"item {number}: expected an object, got {obj!r:.60}"))
        return None
    if isinstance(obj.get("compilation"), dict):
        compilation = obj["compilation"]
        submit = {k: v for k, v in obj.items() if k != "compilation"}
        item_lines = dict(lines)
    else:
        compilation = {k: v for k, v in obj.items() if k not in SUBMIT_FIELDS}
        submit = {k: v for k, v in obj.items() if k in SUBMIT_FIELDS}
        item_lines = {
            (p if p[:1] and p[0] in SUBMIT_FIELDS else ("compilation", *p)): n
            for p, n in lines.items()
        }
        item_lines[()] = line
    item = ManifestItem(
        line=line, label=f"item {number}", compilation=compilation, submit=submit, lines=item_lines
    )
    _normalize_sources(item, path.parent, problems, path)
    return item


def _normalize_sources(item: ManifestItem, folder: Path, problems: list[Problem], path: Path):
    """Make ``path`` sources absolute and turn ``"1:02.5"`` clip times into seconds."""
    for where, label, source in sources_of(item.compilation):
        if isinstance(source.get("path"), str) and source["path"].strip():
            source["path"] = str(resolve_path(source["path"], folder))
        if where[:1] != ("clips",):
            continue
        for key in ("start", "end"):
            if isinstance(source.get(key), str):
                try:
                    source[key] = parse_time(source[key])
                except ValueError as exc:
                    at = item.line_of(("compilation", *where, key))
                    problems.append(Problem(path, at, f"{item.label}, {label}: {key}: {exc}"))
                    del source[key]


# ---------------------------------------------------------------- shared by every format


def resolve_path(text: str, folder: Path) -> Path:
    """A manifest's local path: ``~`` expanded, relative to the manifest's folder."""
    return (folder / Path(text.strip()).expanduser()).absolute()


def parse_time(text: str) -> float:
    """Seconds from ``"12.5"``, ``"1:02.5"`` or ``"1:02:03"``; ValueError says what is wrong."""
    value = text.strip()
    match = _TIME.match(value)
    if match:
        hours, minutes, secs = match.groups()
        if (hours is not None and int(minutes) >= 60) or float(secs) >= 60:
            raise ValueError(f"{text!r} is not a time (minutes and seconds go up to 59)")
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
    try:
        seconds = float(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time; write seconds (12.5) or mm:ss (1:02.5)"
        ) from None
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is not a time")
    if seconds < 0:
        raise ValueError(f"{text!r} is negative")
    return seconds


def sources_of(compilation: Any) -> Iterator[tuple[JsonPath, str, dict]]:
    """Every source dict in a (possibly malformed) compilation: (its path, a label, the dict)."""
    if not isinstance(compilation, dict):
        return
    for key in ("intro", "outro", "watermark", "music"):
        if isinstance(compilation.get(key), dict):
            yield (key,), key, compilation[key]
    clips = compilation.get("clips")
    if isinstance(clips, list):
        for i, clip in enumerate(clips):
            if isinstance(clip, dict):
                yield ("clips", i), f"clip {i + 1}", clip
    transitions = compilation.get("transitions")
    stingers = transitions.get("stingers") if isinstance(transitions, dict) else None
    if isinstance(stingers, list):
        for i, stinger in enumerate(stingers):
            if isinstance(stinger, dict):
                yield ("transitions", "stingers", i), f"stinger {i + 1}", stinger
