"""Parse JSON and remember the line every value starts on, so a problem found in a manifest can
be reported as ``manifest.json:14`` rather than "somewhere in item 3".

The standard library's decoder keeps no positions; this walks objects and arrays itself and lets
``json`` decode the scalars, so it accepts exactly what ``json.loads`` accepts.
"""

from __future__ import annotations

import bisect
import json
import re
from json.decoder import scanstring
from typing import Any

JsonPath = tuple[str | int, ...]

_WHITESPACE = re.compile(r"[ \t\n\r]*")
_SCALARS = json.JSONDecoder()


class JsonSyntaxError(ValueError):
    """Not valid JSON; ``line`` is where the parser stopped."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


def parse_with_lines(text: str) -> tuple[Any, dict[JsonPath, int]]:
    """Decode ``text``; return the value and the line (1-based) of every value by its path,
    e.g. ``{("clips", 2, "start"): 14}``. The root's path is ``()``."""
    newlines = [i for i, ch in enumerate(text) if ch == "\n"]
    lines: dict[JsonPath, int] = {}

    def line_at(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    def fail(message: str, pos: int) -> JsonSyntaxError:
        return JsonSyntaxError(message, line_at(pos))

    def skip(pos: int) -> int:
        return _WHITESPACE.match(text, pos).end()

    def value(pos: int, path: JsonPath) -> tuple[Any, int]:
        pos = skip(pos)
        lines[path] = line_at(pos)
        char = text[pos : pos + 1]
        if char == "{":
            return members(pos + 1, path)
        if char == "[":
            return elements(pos + 1, path)
        if not char:
            raise fail("the JSON ends where a value was expected", pos)
        try:
            return _SCALARS.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise JsonSyntaxError(exc.msg, exc.lineno) from None

    def members(pos: int, path: JsonPath) -> tuple[dict, int]:
        found: dict[str, Any] = {}
        pos = skip(pos)
        if text[pos : pos + 1] == "}":
            return found, pos + 1
        while True:
            pos = skip(pos)
            if text[pos : pos + 1] != '"':
                raise fail("expected a field name in double quotes", pos)
            try:
                key, pos = scanstring(text, pos + 1)
            except json.JSONDecodeError as exc:
                raise JsonSyntaxError(exc.msg, exc.lineno) from None
            pos = skip(pos)
            if text[pos : pos + 1] != ":":
                raise fail(f"expected ':' after the field name {key!r}", pos)
            found[key], pos = value(pos + 1, (*path, key))
            pos = skip(pos)
            char = text[pos : pos + 1]
            if char == ",":
                pos += 1
            elif char == "}":
                return found, pos + 1
            else:
                raise fail("expected ',' or '}' after a field (a missing comma?)", pos)

    def elements(pos: int, path: JsonPath) -> tuple[list, int]:
        found: list[Any] = []
        pos = skip(pos)
        if text[pos : pos + 1] == "]":
            return found, pos + 1
        while True:
            item, pos = value(pos, (*path, len(found)))
            found.append(item)
            pos = skip(pos)
            char = text[pos : pos + 1]
            if char == ",":
                pos += 1
            elif char == "]":
                return found, pos + 1
            else:
                raise fail("expected ',' or ']' after a list item (a missing comma?)", pos)

    result, end = value(0, ())
    end = skip(end)
    if end != len(text):
        raise fail("unexpected text after the JSON value", end)
    return result, lines


def line_of(lines: dict[JsonPath, int], path: JsonPath, default: int = 1) -> int:
    """The line of ``path``, or of its nearest ancestor that has one."""
    for cut in range(len(path), -1, -1):
        if path[:cut] in lines:
            return lines[path[:cut]]
    return default
