"""Check a manifest item locally, the way the board would, before anything is uploaded.

The compilation is checked with the same ``timeline.spec`` structs the board uses, plus what only
this machine can know: that every local file exists. msgspec stops at the first error of a value,
so each clip is checked on its own and the rest of the compilation with the clips stood in for,
which finds every bad clip and every bad setting in one pass.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

import msgspec

from submitter.json_lines import JsonPath
from submitter.manifest import ManifestItem, Problem, sources_of
from timeline.spec import XFADE_EFFECTS, Clip, Compilation
from wire import SubmitJob

# Stands in for the clips while the rest of a compilation is checked (never submitted).
_STAND_IN_CLIP = {"url": "https://stand-in.invalid/clip.mp4"}
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def check_item(item: ManifestItem, manifest: Path) -> list[Problem]:
    """Every problem of one item: missing files, bad times, unknown transitions, bad fields."""
    problems: list[Problem] = []

    def report(path: JsonPath, message: str, what: str = "") -> None:
        label = f"{item.label}, {what}" if what else item.label
        problems.append(Problem(manifest, item.line_of(path), f"{label}: {message}"))

    compilation = item.compilation
    if not isinstance(compilation, dict):
        report(("compilation",), "the compilation must be an object")
        return problems
    for where, label, source in sources_of(compilation):
        if "path" in source and isinstance(source["path"], str):
            trouble = _file_trouble(Path(source["path"]), manifest.parent)
            if trouble:
                report(("compilation", *where, "path"), trouble, label)
    clips = compilation.get("clips")
    if isinstance(clips, list):
        for i, clip in enumerate(clips):
            where = ("compilation", "clips", i)
            for message, path in _validation_errors(clip, Clip):
                report((*where, *path), f"{_name(path)}{message}", f"clip {i + 1}")
    rest = dict(compilation)
    if isinstance(clips, list) and clips:
        rest["clips"] = [_STAND_IN_CLIP] * len(clips)
    rest = _with_known_transitions(rest, report)
    for message, path in _validation_errors(rest, Compilation):
        report(("compilation", *path), f"{_name(path)}{message}")
    for message, path in _validation_errors(_submit_fields(item.submit), SubmitJob):
        report(path, f"{_name(path)}{message}")
    return problems


def _file_trouble(path: Path, folder: Path) -> str | None:
    shown = _shown(path, folder)
    try:
        if not path.exists():
            return f"file not found: {shown}"
        if not path.is_file():
            return f"not a file: {shown}"
        if path.stat().st_size == 0:
            return f"file is empty: {shown}"
        with path.open("rb"):
            pass
    except OSError as exc:
        return f"cannot read {shown}: {exc.strerror}"
    return None


def _shown(path: Path, folder: Path) -> str:
    """``path`` as the manifest most likely wrote it."""
    try:
        return str(path.relative_to(folder.absolute()))
    except ValueError:
        return str(path)


def _with_known_transitions(compilation: dict, report) -> dict:
    """Report unknown xfade effects with a suggestion, and stand in ``fade`` for them so the
    struct check below does not report them a second time."""
    transitions = compilation.get("transitions")
    if not isinstance(transitions, dict):
        return compilation
    fixed = dict(transitions)
    named = [("effect", transitions.get("effect"))]
    if isinstance(transitions.get("effects"), list):
        named += [(f"effects[{i}]", e) for i, e in enumerate(transitions["effects"])]
    for name, effect in named:
        if not isinstance(effect, str) or effect in XFADE_EFFECTS:
            continue
        close = difflib.get_close_matches(effect, sorted(XFADE_EFFECTS), n=3)
        if close:
            hint = f"did you mean {' or '.join(close)}?"
        else:
            hint = f"known: {', '.join(sorted(XFADE_EFFECTS))}"
        path: JsonPath = ("compilation", "transitions", "effect")
        if name != "effect":
            path = ("compilation", "transitions", "effects", int(name[8:-1]))
            fixed["effects"] = [e if e in XFADE_EFFECTS else "fade" for e in fixed["effects"]]
        else:
            fixed["effect"] = "fade"
        report(path, f"unknown transition {effect!r}; {hint}")
    return {**compilation, "transitions": fixed}


def _submit_fields(submit: dict[str, Any]) -> dict[str, Any]:
    """The submit fields with a stand-in compilation (checked separately above)."""
    return {**submit, "compilation": {"clips": [_STAND_IN_CLIP]}}


def _validation_errors(value: Any, type_: type) -> list[tuple[str, JsonPath]]:
    """The error msgspec finds converting ``value`` (at most one), as (message, path)."""
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        match = _AT.match(str(exc))
        message = match.group("message")
        path = tuple(
            name if name is not None else int(index)
            for name, index in _STEP.findall(match.group("path") or "")
        )
        return [(message, path)]
    return []


def _name(path: JsonPath) -> str:
    """``output.width: `` for a path, nothing for the root."""
    if not path:
        return ""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
    return f"{text}: "
