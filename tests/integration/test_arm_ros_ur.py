"""A hardware backend behind the ROS arm node: `mimic_ros.arm_node` with backend `ur:127.0.0.1` against the UR peer.

Checks the cross-team contract end to end for a real SDK: /robot/joint_command (joint names + "gripper",
positions in rad and m) becomes servoJ targets at the controller, and /robot/joint_states reports the
measured joints under the same names with system-clock stamps.
"""

from __future__ import annotations

import subprocess
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState

from mimic.robots.specs import get_spec
from tests.peers.ur_rtde_peer import URPeerClient
from tests.ros_teardown import close_node

pytestmark = pytest.mark.timeout(300)

SPEC = get_spec("ur5e")
NAMES = [*SPEC.joint_names, "gripper"]


def start_arm_node(procs, backend: str, timeout: float = 90.0) -> subprocess.Popen:
    proc = procs.python(
        "-u", "-m", "mimic_ros.arm_node", "--ros-args", "-p", f"backend:={backend}",
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("arm node exited before ready:\n" + "".join(lines))
        lines.append(line)
        if line.startswith("MIMIC_NODE_READY"):
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc
    raise AssertionError(f"arm node not ready after {timeout} s:\n" + "".join(lines))


def test_arm_node_streams_commands_to_the_ur_controller(procs):
    peer_proc = procs.python(
        "-m", "tests.peers.ur_rtde_peer", "--q0", *map(str, SPEC.home),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    peer = URPeerClient(peer_proc)
    # 125 silent periods (250 ms) make a fault here, not the default 3 (6 ms): the peer is a Python process on
    # a loaded 2-core machine whose own clock stalls past 6 ms now and then (test_arm_ur.py covers silence)
    start_arm_node(procs, "ur:127.0.0.1?stale_periods=125")
    assert peer.stats()["program_running"]

    rclpy.init()
    node = rclpy.create_node("arm_ros_ur_test")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    states: list[JointState] = []
    node.create_subscription(JointState, "/robot/joint_states", states.append, 50)
    pub = node.create_publisher(JointState, "/robot/joint_command", 100)
    try:
        deadline = time.monotonic() + 20.0
        while (pub.get_subscription_count() == 0 or not states) and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.01)
        assert states, "no /robot/joint_states from the arm node"
        assert list(states[-1].name) == NAMES
        assert np.allclose(states[-1].position[:6], SPEC.home, atol=1e-6)

        count0 = peer.stats()["servoj_count"]
        t0 = time.monotonic()
        next_t = t0
        target = SPEC.home.copy()
        while (t := time.monotonic() - t0) < 2.0:  # 100 Hz sine on the shoulder, as the controller would send
            target = SPEC.home.copy()
            target[0] += 0.15 * np.sin(2 * np.pi * 0.5 * t)
            msg = JointState()
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.name = NAMES
            msg.position = [*target.tolist(), 0.0]
            pub.publish(msg)
            next_t += 0.01
            while time.monotonic() < next_t:
                ex.spin_once(timeout_sec=max(0.0, next_t - time.monotonic()))
        streamed = peer.stats()["servoj_count"] - count0
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)

        stats = peer.stats()
        print(f"servoJ during 2 s of commands: {streamed} ({streamed / 2.0:.0f} Hz)")
        # The backend streamed servoJ (500 Hz target) while commands came in; slack for a loaded machine.
        assert streamed >= 0.3 * 2.0 * SPEC.control_rate_hz
        assert np.allclose(stats["servoj_last"], target, atol=1e-3)
        last = states[-1]
        assert list(last.name) == NAMES
        assert np.abs(np.array(last.position[:6]) - target).max() < 0.01
        stamp = last.header.stamp.sec + last.header.stamp.nanosec * 1e-9
        assert abs(stamp - time.time()) < 0.5  # capture time on the system clock
        moving = [m.position[0] for m in states[-200:]]
        assert max(moving) - min(moving) > 0.1  # the measured shoulder really followed the sine
    finally:
        close_node(ex, node)
        peer.close()
