"""Shared fixtures: the real sample data beside the checkout, and a private ROS 2 domain."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real recordings and labels for tests; never copied into the repository).

    Set ``MADM_SHARED_DATA`` to use another location; tests that need it are skipped where it is absent.
    """
    path = Path(os.environ.get("MADM_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"sample data folder {path} not found (set MADM_SHARED_DATA)")
    return path


@pytest.fixture
def ros_domain(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """A ROS domain id private to this test, with DDS discovery limited to the loopback.

    The id is derived from the test name and the process id so that parallel runs on one machine
    do not see each other; child processes inherit it through the environment.
    """
    domain = 1 + zlib.crc32(f"{request.node.nodeid}:{os.getpid()}".encode()) % 100
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain
