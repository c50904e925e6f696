"""The policy node encodes camera frames ahead of each chunk: a real visuomotor policy (2 cameras 96x96 + joints,
random weights) in the node, fed new frames at 30 Hz and joint states at 100 Hz by the test process. In the steady
state each chunk's encoder computes only the newest frame per camera (the policy's feature cache counts what it
encoded, reported on /policy/diagnostics); the window's older step was prepared while the node waited."""

from __future__ import annotations

import array
import json
import subprocess
import time

import cv2
import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import CompressedImage, JointState
from std_msgs.msg import String

from tests.ros_teardown import close_node
from tests.unit.test_control_chunk import make_spec

SPEC = make_spec()
CAMERAS = ("scene", "wrist")
BOOT = (
    "import sys; from tests.unit.test_control_chunk import make_spec; "
    "from tests.unit.test_inference_engines import VISUOMOTOR, _policy; "
    "from mimic_ros.policy_node import main; "
)


def test_chunks_encode_only_their_newest_frames(procs) -> None:
    args = ["--ros-args", "-p", f"cameras:={','.join(CAMERAS)}"]
    procs.python(
        "-c",
        BOOT
        + f"sys.exit(main({args!r}, spec=make_spec(), policy=_policy('consistency', shapes=VISUOMOTOR)))",
        stdout=subprocess.DEVNULL,
    )
    rclpy.init()
    node = rclpy.create_node("policy_prepare_peer")
    state_pub = node.create_publisher(JointState, "/robot/joint_states", 10)
    cam_pubs = [node.create_publisher(CompressedImage, f"/cameras/{c}/image/compressed", 2) for c in CAMERAS]
    diags: list[dict] = []
    node.create_subscription(String, "/policy/diagnostics", lambda m: diags.append(json.loads(m.data)), 50)
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    rng = np.random.default_rng(0)
    try:
        end = time.monotonic() + 60
        while state_pub.get_subscription_count() == 0 or any(
            p.get_subscription_count() == 0 for p in cam_pubs
        ):
            assert time.monotonic() < end, "policy node did not come up"
            ex.spin_once(timeout_sec=0.05)
        next_state = next_frame = time.monotonic()
        end = time.monotonic() + 40
        while len(diags) < 14 and time.monotonic() < end:
            now = time.monotonic()
            if now >= next_state:
                next_state += 0.01
                state = JointState()
                state.position = [*SPEC.home.tolist(), 0.04]
                state_pub.publish(state)
            if now >= next_frame:
                next_frame += 1 / 30
                for pub in cam_pubs:  # every frame new, as a camera's are
                    img = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
                    msg = CompressedImage(format="png")
                    msg.data = array.array("B", cv2.imencode(".png", img)[1].tobytes())
                    pub.publish(msg)
            ex.spin_once(timeout_sec=0.001)
    finally:
        close_node(ex, node)
        procs.stop_all()
    encoded = [d["encoded_frames"] for d in diags]
    prepared = [d["prepared_frames"] for d in diags]
    print(f"frames encoded per chunk: {encoded}; prepared ahead of it: {prepared}")
    assert len(diags) >= 10, f"only {len(diags)} chunks"
    steady = encoded[2:]  # the first windows repeat or precede the frames the node saw before them
    assert all(2 <= n <= 4 for n in steady), encoded
    # One new frame per camera; a chunk whose older step a scheduling hiccup of this shared machine left
    # unprepared for a camera encodes both steps' frames of it (3 or 4): tolerated once in a while, never the rule.
    assert sum(n == 2 for n in steady) >= 0.8 * len(steady), encoded
    assert all(p >= 2 for p in prepared[2:]), prepared
