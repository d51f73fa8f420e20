"""Templates and HTML answers: one Jinja environment (autoescaped: every user-supplied string is
escaped), the filters the templates share, and the security headers every page carries."""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Response

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
STATIC_URL = "/static/dashboard"

# Scripts and styles only from the board itself; nothing inline but style attributes (progress bar
# widths); media only from the board; the page cannot be framed (clickjacking).
CSP = (
    "default-src 'self'; script-src 'self'; style-src-elem 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self'; connect-src 'self'; font-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages carry the CSRF token and live data
}


def duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``3m 05s``, ``2h 10m``, ``3d 4h``."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


def size(n: float | None) -> str:
    """Bytes as KB/MB/GB (powers of 1024)."""
    if n is None:
        return "—"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def epoch(value: datetime | float | None) -> str:
    """A time as epoch seconds for ``data-*`` attributes the page's script ticks from."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.timestamp()
    return f"{value:.3f}"


def clock(value: datetime | None) -> str:
    """A UTC time for tables: ``2026-11-21 14:03:07Z``."""
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def percent(fraction: float | None) -> int:
    return max(0, min(100, round((fraction or 0.0) * 100)))


@cache
def asset_version(name: str) -> str:
    """A content hash for cache busting: a new release never runs with yesterday's script."""
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


def static(name: str) -> str:
    return f"{STATIC_URL}/{name}?v={asset_version(name)}"


@cache
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(duration=duration, size=size, epoch=epoch, clock=clock, percent=percent)
    env.globals.update(static=static)
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def macro(template: str, name: str):
    """A macro of a template, to render one fragment (a row, a panel) for a live update."""
    return getattr(environment().get_template(template).module, name)


def html_page(body: str, *, status_code: int = 200, headers: dict | None = None) -> Response:
    return Response(
        body,
        status_code=status_code,
        media_type="text/html; charset=utf-8",
        headers={**PAGE_HEADERS, **(headers or {})},
    )
