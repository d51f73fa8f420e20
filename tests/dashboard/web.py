"""A browser's view over plain HTTP: sign in through the form, keep the cookie, read what a page
embeds (its CSRF token, its live stream)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import msgspec

from tests.harness import RunningBoard


@contextmanager
def signed_in(board: RunningBoard, token: str) -> Iterator[httpx.Client]:
    """A client holding the session cookie the sign-in form sets."""
    with httpx.Client(base_url=board.url, timeout=30) as client:
        r = client.post("/signin", data={"token": token, "next": "/"})
        assert r.status_code == 303, r.text
        session = client.cookies.get("clipfarm_session")
        assert session and token not in session  # a session id of the board's, not the token
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'<meta name="csrf-token" content="([0-9a-f]+)">', html)
    assert found, "the page carries no CSRF token"
    return found.group(1)


def page_csrf(client: httpx.Client, path: str = "/") -> str:
    r = client.get(path)
    assert r.status_code == 200, r.text
    return csrf_of(r.text)


def first_snapshots(client: httpx.Client, query: str, count: int = 1, after=None) -> list[dict]:
    """Read ``count`` snapshots from the page's live stream; ``after()`` runs once the first has
    arrived (to change something the next snapshot must show)."""
    found: list[dict] = []
    event = None
    with client.stream("GET", f"/dashboard/events?{query}", timeout=15) as stream:
        assert stream.status_code == 200, stream.read()
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "snapshot":
                found.append(msgspec.json.decode(line[6:]))
                if len(found) == count:
                    return found
                if len(found) == 1 and after is not None:
                    after()
    return found


def next_events(client: httpx.Client, query: str, names: set[str], after=None) -> list[str]:
    """The names of the stream's events up to the first one in ``names``; ``after()`` runs once
    the first snapshot has arrived."""
    seen: list[str] = []
    with client.stream("GET", f"/dashboard/events?{query}", timeout=15) as stream:
        for line in stream.iter_lines():
            if not line.startswith("event: "):
                continue
            seen.append(line[7:])
            if seen[-1] in names:
                break
            if seen == ["snapshot"] and after is not None:
                after()
    return seen


def snapshot_html(snapshot: dict) -> str:
    parts = list(snapshot["regions"].values())
    for rows in snapshot["lists"].values():
        parts += [html for _, html in rows]
    return "\n".join(parts)
