"""Reliability tests reuse the farm fixtures of the end-to-end tests."""

from tests.e2e.conftest import farm, heavy_clips, pytest_runtest_makereport, web_server  # noqa: F401
