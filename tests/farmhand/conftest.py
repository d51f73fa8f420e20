"""Fixtures of the farmhand tests: a local media server and a media cache."""

from __future__ import annotations

import pytest

from farmhand.cache import MediaCache
from tests.e2e.conftest import farm, pytest_runtest_makereport  # noqa: F401  (a real farm)
from tests.farmhand.media_server import start_media_server


@pytest.fixture
def server():
    state, httpd = start_media_server()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def public_site(server):
    """A second web server, on 127.0.0.2 at the same port as ``server`` (127.0.0.1): "a public
    site" in the network guard's tests, by being the one address their policy allows. A
    connection that went to the wrong address would land on the other server."""
    try:
        state, httpd = start_media_server("127.0.0.2", server.port)
    except OSError:
        pytest.skip("127.0.0.2 is not a local address on this machine")
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path) -> MediaCache:
    return MediaCache(tmp_path / "cache", max_bytes=50 * 1024**2)
