"""A plain-text progress bar on stderr, no dependency.

On a terminal it redraws one line in place; anywhere else (CI logs, pipes) it prints a line now
and then instead — at every tenth of the way, and at most every few seconds when only the detail
changes — so logs stay readable. ``note()`` prints a line above the bar.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from typing import TextIO

REDRAW_S = 0.1
LINE_EVERY_S = 5.0


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class ProgressBar:
    """Progress of ``total`` units (bytes when ``in_bytes``), labelled ``label``."""

    def __init__(
        self,
        label: str,
        total: float,
        *,
        in_bytes: bool = False,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label = label
        self.total = max(total, 0)
        self.in_bytes = in_bytes
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        if os.environ.get("TERM") == "dumb":
            self.tty = False
        self.done = 0.0
        self.detail = ""
        self._drawn_at = 0.0
        self._printed_tenth = -1
        self._printed_detail: str | None = None
        self._line_at = time.monotonic()
        self._visible = False

    def advance(self, amount: float) -> None:
        self.update(self.done + amount)

    def update(self, done: float, detail: str | None = None) -> None:
        self.done = min(max(done, 0), self.total) if self.total else done
        if detail is not None:
            self.detail = detail
        self._draw()

    def note(self, text: str) -> None:
        """A line of its own (a job finished, a warning), above the bar."""
        self._clear()
        print(text, file=self.stream, flush=True)
        if self.tty:
            self._draw(force=True)

    def close(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        if self.tty:
            self._draw(force=True)
            if self._visible:
                self.stream.write("\n")
                self.stream.flush()
            self._visible = False
        else:
            self._print_line()

    # ------------------------------------------------------------ drawing

    def _fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    def _counts(self) -> str:
        if self.in_bytes:
            return f"{human_bytes(self.done)}/{human_bytes(self.total)}"
        done = f"{self.done:.0f}" if float(self.done).is_integer() else f"{self.done:.1f}"
        return f"{done}/{self.total:g}"

    def _text(self, width: int | None = None) -> str:
        fraction = self._fraction()
        head = f"{self.label} "
        tail = f" {fraction * 100:3.0f}% {self._counts()}" + (
            f"  {self.detail}" if self.detail else ""
        )
        if width is None:
            return f"{self.label}: {fraction * 100:.0f}% ({self._counts()})" + (
                f" {self.detail}" if self.detail else ""
            )
        cells = max(10, min(30, width - len(head) - len(tail) - 2))
        filled = round(cells * fraction)
        line = f"{head}[{'#' * filled}{'.' * (cells - filled)}]{tail}"
        return line[: width - 1]

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if not force and now - self._drawn_at < REDRAW_S and self._fraction() < 1:
                return
            self._drawn_at = now
            width = shutil.get_terminal_size((100, 20)).columns
            self.stream.write("\r\x1b[K" + self._text(width))
            self.stream.flush()
            self._visible = True
            return
        # Lines only for something slow enough to be worth one; close() prints the last one.
        since = now - self._line_at
        tenth = int(self._fraction() * 10)
        if tenth >= 10 or since < 1.0:
            return
        if tenth > self._printed_tenth or (
            self.detail != self._printed_detail and since >= LINE_EVERY_S
        ):
            self._print_line()

    def _print_line(self) -> None:
        self._printed_tenth = int(self._fraction() * 10)
        self._printed_detail = self.detail
        self._line_at = time.monotonic()
        print(self._text(), file=self.stream, flush=True)

    def _clear(self) -> None:
        if self.tty and self._visible:
            self.stream.write("\r\x1b[K")
            self._visible = False
