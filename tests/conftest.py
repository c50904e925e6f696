"""Test-wide hygiene, in one place.

- DDS stays on this machine: ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST for this process and every child.
- Each test run gets its own random ROS_DOMAIN_ID (1-100; the Makefile's if set), so concurrent runs rarely share one;
  a developer running nodes by hand beside a test run should use 0 or 101 (ids above 101 put DDS ports
  into the ephemeral port range).
- Every process a test starts through `procs` is stopped by the test, even when the test fails.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# The Makefile passes a per-run domain; a bare `pytest` picks one itself. 1..100 keep Fast DDS ports valid.
os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYTHONUNBUFFERED", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test must sit in exactly one tier, taken from its folder, so `-m unit` etc. select honestly."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


class ProcessGroup:
    """Child processes of one test, each in its own process group so grandchildren die with it."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], **kwargs) -> subprocess.Popen:
        kwargs.setdefault("env", os.environ.copy())
        kwargs.setdefault("cwd", str(REPO))
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def python(self, *args: str, **kwargs) -> subprocess.Popen:
        return self.start([sys.executable, *args], **kwargs)

    def stop_all(self, timeout: float = 5.0) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)


@pytest.fixture
def procs() -> Iterator[ProcessGroup]:
    group = ProcessGroup()
    try:
        yield group
    finally:
        group.stop_all()


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A real S3-protocol server (moto) on 127.0.0.1 with bucket "bucket"; its credentials and endpoint are in
    this process's environment (so in every subprocess the test starts) until the test ends."""
    from tests.peers.s3_server import S3Server

    server = S3Server().start()
    try:
        for k, v in server.env().items():
            monkeypatch.setenv(k, v)
        server.create_bucket("bucket")
        import fsspec

        # An s3fs instance cached for another endpoint or credentials must not answer for this server.
        fsspec.filesystem("s3").clear_instance_cache()
        yield server
    finally:
        server.stop()
