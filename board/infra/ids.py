"""Public ids: a one-letter kind, then time-ordered hex, then randomness (``j18f3a…``).

Time-ordered so ids sort roughly by creation (handy in logs and for humans); random enough that
they cannot be guessed.
"""

from __future__ import annotations

import secrets
import time


def new_id(kind: str) -> str:
    return f"{kind}{int(time.time() * 1000):011x}{secrets.token_hex(5)}"
