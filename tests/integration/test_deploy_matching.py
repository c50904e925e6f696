"""Latency matching through the real policy and controller nodes, against injected camera and arm latency.

The test process plays the arm (executes each /robot/joint_command 100 ms after it arrives, publishes
/robot/joint_states) and the camera (a frame showing its capture time as a time code, delivered 150 ms
late). The policy is scripted and skilled: from a frame it predicts the moving target's joint-1 position
from that frame's moment on, as a trained policy would. What differs between the runs is only timing.
"""

from __future__ import annotations

import array
import subprocess
import time
from collections import deque

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage, JointState

from mimic.calibration.latency import CODE_BITS, draw_time_code, read_time_code
from tests.ros_teardown import close_node
from tests.unit.test_control_chunk import make_spec

SPEC = make_spec()
CAMERA_S, ARM_S, INFERENCE_S = 0.150, 0.100, 0.050
AMP, FREQ = 0.3, 0.4


def target(t: float) -> float:
    return SPEC.home[0] + AMP * np.sin(2 * np.pi * FREQ * t)


class ScriptedPolicy:
    """Implements the policies team's Policy attributes; predicts the target from the newest frame's moment."""

    n_obs_steps, horizon, n_action_steps, action_dim, control_hz = 2, 16, 8, 8, 10.0
    obs_keys = ("camera0_rgb",)

    def predict(self, obs_window: dict[str, np.ndarray], num_inference_steps=None) -> np.ndarray:
        now = time.time()
        shown = read_time_code(obs_window["camera0_rgb"][-1])
        wrap = (1 << CODE_BITS) * 1e-3
        t_frame = now - ((now - shown) % wrap)
        rows = np.tile(np.concatenate([SPEC.home, [0.04]]), (self.horizon, 1))
        offset = self.n_obs_steps - 1
        rows[:, 0] = [target(t_frame + (i - offset) / self.control_hz) for i in range(self.horizon)]
        time.sleep(max(0.0, INFERENCE_S - (time.time() - now)))
        return rows

    def reset(self) -> None:
        pass


BOOT = (
    "import sys; from tests.unit.test_control_chunk import make_spec; "
    "from tests.integration.test_deploy_matching import ScriptedPolicy; "
)


def run_session(procs, matching: bool, seconds: float = 6.0) -> float:
    lead = ARM_S if matching else 0.0
    ctl_args = ["--ros-args", "-p", "mode:=chunk", "-p", f"lead_s:={lead}"]
    pol_args = ["--ros-args"] + [
        x
        for a in (
            "cameras:=scene",
            f"camera_latency_s:={CAMERA_S}",
            f"arm_latency_s:={ARM_S}",
            f"matching:={matching}",
        )
        for x in ("-p", a)
    ]
    procs.python(
        "-c",
        BOOT + f"from mimic_ros.controller_node import main; sys.exit(main({ctl_args!r}, spec=make_spec()))",
        stdout=subprocess.DEVNULL,
    )
    procs.python(
        "-c",
        BOOT + "from mimic_ros.policy_node import main; "
        f"sys.exit(main({pol_args!r}, spec=make_spec(), policy=ScriptedPolicy()))",
        stdout=subprocess.DEVNULL,
    )
    rclpy.init()
    node = rclpy.create_node("deploy_matching_peer")
    state_pub = node.create_publisher(JointState, "/robot/joint_states", 10)
    cam_pub = node.create_publisher(CompressedImage, "/cameras/scene/image/compressed", 2)
    in_flight: deque[tuple[float, float]] = deque()
    node.create_subscription(
        JointState,
        "/robot/joint_command",
        lambda m: in_flight.append((time.time() + ARM_S, m.position[0])),
        100,
    )
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    frames: deque[tuple[float, bytes]] = deque()
    q0, errors = SPEC.home[0], []
    try:
        end = time.monotonic() + 30
        while cam_pub.get_subscription_count() == 0 or state_pub.get_subscription_count() == 0:
            assert time.monotonic() < end, "nodes did not come up"
            ex.spin_once(timeout_sec=0.05)
        t_begin = time.time()
        next_state = next_frame = t_begin
        while (now := time.time()) - t_begin < seconds:
            while in_flight and in_flight[0][0] <= now:
                q0 = in_flight.popleft()[1]
            if now >= next_state:
                next_state += 0.01
                msg = JointState()
                msg.position = [q0, *SPEC.home[1:].tolist(), 0.04]
                state_pub.publish(msg)
                if now - t_begin > 3.0:
                    errors.append(q0 - target(now))
            if now >= next_frame:
                next_frame += 1 / 30
                img = draw_time_code(np.zeros((96, 96, 3), np.uint8), now)
                frames.append((now + CAMERA_S, cv2.imencode(".jpg", img)[1].tobytes()))
            while frames and frames[0][0] <= now:
                msg = CompressedImage(format="jpeg")
                msg.data = array.array("B", frames.popleft()[1])
                cam_pub.publish(msg)
            ex.spin_once(timeout_sec=0.001)
    finally:
        close_node(ex, node)
        procs.stop_all()
        procs.procs.clear()
    assert len(errors) > 200, "the arm was not commanded"
    return float(np.sqrt(np.mean(np.square(errors))))


def test_matching_on_tracks_a_moving_target_and_off_lags(procs) -> None:
    on = run_session(procs, matching=True)
    off = run_session(procs, matching=False)
    print(
        f"tracking RMS error with 150 ms camera / 100 ms arm latency: matching on {on:.4f} rad, off {off:.4f} rad"
    )
    # 300 ms of uncompensated delay on 0.3 rad at 0.4 Hz lags ~0.15 rad RMS; matched, only clock jitter remains.
    assert off > 0.1
    assert on < 0.03
