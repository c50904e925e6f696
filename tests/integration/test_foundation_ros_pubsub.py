"""Two separate processes exchange sensor_msgs/JointState through rclpy (Fast DDS, localhost only)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.conftest import REPO

SCRIPT = str(REPO / "tests" / "scripts" / "jointstate_peer.py")
N = 50


def test_environment_keeps_dds_on_this_machine() -> None:
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert 1 <= int(os.environ["ROS_DOMAIN_ID"]) <= 100


def test_jointstate_between_two_processes(procs) -> None:
    receiver = procs.python(SCRIPT, "sub", str(N), stdout=subprocess.PIPE, text=True)
    assert receiver.stdout.readline().strip() == "READY"
    t_sent_first = time.time()
    publisher = procs.python(SCRIPT, "pub", str(N))
    assert publisher.wait(timeout=60) == 0
    out, _ = receiver.communicate(timeout=60)
    assert receiver.returncode == 0, "receiver did not get every message"
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["i"] for r in records] == list(range(N)), "messages lost or reordered"
    for r in records:
        assert r["names"] == [f"joint{i}" for i in range(1, 8)]
        assert r["position"] == pytest.approx([r["i"] + 0.1 * j for j in range(7)])
        # Stamps are system-clock send times: after the test began, before arrival, and arrival is prompt.
        assert t_sent_first - 1.0 < r["stamp"] <= r["arrival"] + 1e-3
        assert r["arrival"] - r["stamp"] < 1.0
    stamps = [r["stamp"] for r in records]
    assert stamps == sorted(stamps)
