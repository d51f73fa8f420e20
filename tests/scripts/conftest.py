"""Fixtures of the tests of ``scripts/`` (the demo)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
