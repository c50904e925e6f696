"""A test-process ROS node that watches an arm's joint states and the controller, with the TCP by FK.

Shared by the end-effector tests (eef deploy, keyboard teleop): each subclass adds its own publishers and
subscriptions in `__init__` after calling this one. Every wait is bounded.
"""

from __future__ import annotations

import json
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mimic.robots.eef_control import tcp_pose_row
from mimic.robots.ik import IKSolver
from tests.ros_teardown import close_node


class TwinWatcher:
    def __init__(self, name: str, arm: str) -> None:
        rclpy.init()
        self.node = rclpy.create_node(name)
        self.ik = IKSolver.for_arm(arm)
        self.spec = self.ik.spec
        self.states: list[np.ndarray] = []
        self.diag: dict = {}
        self.node.create_subscription(JointState, "/robot/joint_states", self._on_state, 100)
        self.node.create_subscription(
            String, "/controller/diagnostics", lambda m: setattr(self, "diag", json.loads(m.data)), 10
        )
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)

    def _on_state(self, msg: JointState) -> None:
        self.states.append(np.array(msg.position))

    def spin_for(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.ex.spin_once(timeout_sec=0.005)

    def wait_for(self, what: str, ok, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while not ok():
            assert time.monotonic() < end, f"timed out waiting for {what}"
            self.spin_for(0.05)

    def tcp(self) -> np.ndarray:
        """[pos, axis-angle] of the twin's TCP now (FK of the newest joint state)."""
        return tcp_pose_row(self.ik.fk(self.states[-1][: self.spec.dof]))

    def close(self) -> None:
        close_node(self.ex, self.node)
