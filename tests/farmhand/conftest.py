"""Fixtures of the farmhand tests: a local media server and a media cache."""

from __future__ import annotations

import pytest

from farmhand.cache import MediaCache
from tests.farmhand.media_server import start_media_server


@pytest.fixture
def server():
    state, httpd = start_media_server()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path) -> MediaCache:
    return MediaCache(tmp_path / "cache", max_bytes=50 * 1024**2)
