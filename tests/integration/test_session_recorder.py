"""The recorder node against the twin's arm node, over real topics and services.

- SIGKILL mid-episode loses only that episode: the restarted recorder trims it (status says how many steps)
  and the store validates with every committed episode intact; recording then continues in the same store.
- A camera that stalls beyond tolerance is reported in the status and the episode is truncated at the
  stall and marked in the root attrs, never padded over the gap.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import String
from std_srvs.srv import Trigger

from mimic.data.validate import validate
from mimic_ros.msgs import jpeg_image
from tests.plain_zarr import read_plain
from tests.ros_teardown import close_node

READY = "MIMIC_NODE_READY"


def start_node(procs, module: str, params: dict, timeout: float = 60.0) -> subprocess.Popen:
    """Start `python -m mimic_ros.<module>` and wait for its ready line; its output is then drained."""
    args = ["-u", "-m", f"mimic_ros.{module}", "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={json.dumps(v) if isinstance(v, str) else v}"]
    proc = procs.python(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{module} exited before ready:\n{''.join(lines)}")
        lines.append(line)
        if line.startswith(READY):
            proc.log = lines  # type: ignore[attr-defined]  # the rest of its output, for failure messages
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
            return proc
    raise AssertionError(f"{module} not ready after {timeout} s:\n{''.join(lines)}")


class Client:
    """The test's ROS node: recorder services, recorder status, optionally a fake camera."""

    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("recorder_test")
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)
        self.status: dict = {}
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.node.create_subscription(String, "/recorder/status", self._on_status, latched)
        self.clients = {
            n: self.node.create_client(Trigger, f"/recorder/{n}") for n in ("start", "stop", "discard")
        }
        self.camera = self.node.create_publisher(CompressedImage, "/cameras/fake/image/compressed", 10)

    def _on_status(self, msg: String) -> None:
        self.status = json.loads(msg.data)

    def spin_for(self, seconds: float, every=None, period: float = 0.05) -> None:
        end, next_t = time.monotonic() + seconds, time.monotonic()
        while time.monotonic() < end:
            if every is not None and time.monotonic() >= next_t:
                every()
                next_t += period
            self.ex.spin_once(timeout_sec=0.005)

    def call(self, name: str, retry_s: float = 20.0) -> Trigger.Response:
        client = self.clients[name]
        deadline = time.monotonic() + retry_s
        while True:
            assert client.wait_for_service(timeout_sec=20.0), f"/recorder/{name} not available"
            future = client.call_async(Trigger.Request())
            end = time.monotonic() + 20.0
            while not future.done():
                assert time.monotonic() < end, f"/recorder/{name} did not answer"
                self.ex.spin_once(timeout_sec=0.01)
            resp = future.result()
            if resp.success or name != "start" or time.monotonic() > deadline:
                return resp
            self.spin_for(0.3)  # start waits for fresh samples on every stream

    def close(self) -> None:
        close_node(self.ex, self.node)


@pytest.fixture
def client():
    c = Client()
    yield c
    c.close()


ARM = {
    "backend": "twin:franka",
    "task": "pick_place",
    "cameras": "scene",
    "camera_rate_hz": 10.0,
    "image_height": 48,
    "image_width": 64,
    "state_rate_hz": 50.0,
}


def test_sigkilled_recorder_loses_only_the_open_episode(procs, client, tmp_path) -> None:
    store = tmp_path / "demos.zarr"
    # flushes every 0.25 s (default 1 s), so the open episode surely has rows on disk when the kill lands
    rec = {
        "path": str(store),
        "cameras": "scene",
        "action": False,
        "task": "hold still",
        "flush_every_s": 0.25,
    }
    start_node(procs, "arm_node", ARM)
    recorder = start_node(procs, "recorder_node", rec)
    assert client.call("start").success
    client.spin_for(1.5)
    stop = client.call("stop")
    assert stop.success, stop.message
    first = json.loads(stop.message)["steps"]
    assert first >= 8
    assert client.call("start").success
    client.spin_for(1.5)
    os.kill(recorder.pid, signal.SIGKILL)  # mid-episode, rows of episode 1 already flushed
    recorder.wait(timeout=10)

    ds, _ = validate(store)
    assert ds.n_episodes == 1
    start_node(procs, "recorder_node", rec)  # reopens the store: trims the open episode's rows
    client.status = {}  # the killed recorder's last (latched) status says recording; wait for the new one's
    deadline = time.monotonic() + 10.0
    while client.status.get("recording", True) and time.monotonic() < deadline:
        client.spin_for(0.1)
    assert client.status["episodes"] == 1 and client.status["trimmed_steps"] > 0, client.status
    assert client.call("start").success
    client.spin_for(1.0)
    assert client.call("stop").success
    ds, _ = validate(store)
    assert ds.n_episodes == 2 and ds.episode_slice(0).stop == first
    assert ds.attrs["task"] == "hold still" and ds.attrs["robot"] == "franka"
    img = ds.read("camera0_rgb")
    assert img.shape[1:] == (48, 64, 3) and img.dtype == np.uint8
    arrays, meta = read_plain(store, tmp_path)  # a live session's store is portable: no Mimic needed
    assert meta["mimic_imported"] is False
    for key in ds.keys:
        assert np.array_equal(arrays[f"data/{key}"][: ds.n_steps], ds.read(key)), key


def test_camera_stall_is_reported_and_the_episode_marked_not_padded(procs, client, tmp_path) -> None:
    store = tmp_path / "demos.zarr"
    start_node(procs, "arm_node", {**ARM, "cameras": ""})
    # joints get a wide tolerance: this test is about the camera, and a CPU-starved twin can pause its joints
    start_node(
        procs,
        "recorder_node",
        {
            "path": str(store),
            "cameras": "fake",
            "action": False,
            "image_tolerance_s": 0.1,
            "tolerance_s": 0.3,
        },
    )
    frame = np.zeros((32, 32, 3), np.uint8)
    camera_on, done = threading.Event(), threading.Event()

    def camera() -> None:  # the fake camera: 15 Hz while camera_on is set
        while not done.wait(1 / 15):
            if camera_on.is_set():
                client.camera.publish(jpeg_image(time.time(), frame))

    threading.Thread(target=camera, daemon=True).start()
    camera_on.set()
    try:
        client.spin_for(1.0)
        assert client.call("start").success
        client.spin_for(1.5)
        camera_on.clear()
        t_stall = time.time()
        # the camera stalls: the 2 Hz status tick notices within ~1 s; a CPU-starved node may take longer (bounded)
        deadline = time.monotonic() + 10.0
        while not client.status.get("stalled") and time.monotonic() < deadline:
            client.spin_for(0.1)
        assert client.status["stalled"] and "camera0_rgb" in client.status["stalled"], client.status
        camera_on.set()
        client.spin_for(0.5)  # and comes back: too late for this episode
        stop = client.call("stop")
        assert stop.success and "camera0_rgb" in json.loads(stop.message)["stalled"]
        ds, _ = validate(store)
        assert ds.n_episodes == 1
        marks = dict(ds.attrs["episode_marks"])
        assert "camera0_rgb" in marks["0"]["stalled"]
        ts = ds.read("timestamp")
        cam_t = ds.read("camera0_rgb_t")
        assert ts[-1] <= t_stall + 0.1 and cam_t[-1] <= t_stall  # nothing recorded across the gap
        assert np.all(np.abs(cam_t - ts) <= 0.1 + 1e-9)
        # a fresh episode after the stall records normally and carries no mark
        assert client.call("start").success
        client.spin_for(1.0)
        assert client.call("stop").success
    finally:
        done.set()
    ds, _ = validate(store)
    assert ds.n_episodes == 2 and "1" not in dict(ds.attrs["episode_marks"])


@pytest.mark.parametrize(
    "module, param, needle",
    [
        ("arm_node", "state_rate_hz:=0", "arm: parameter state_rate_hz=0.0 outside [1.0, 1000.0]"),
        ("arm_node", "backend:=robot9:x", "unknown backend 'robot9'"),
        ("recorder_node", "fps:=abc", "recorder: parameter fps='abc' is not a float"),
        ("recorder_node", "cameras:=scene", "recorder: parameter path is empty"),
        ("operator_node", "task:=juggle", "operator: parameter task='juggle' is not one of"),
        ("leader_node", "rate_hz:=10", "leader: parameters port and calibration are required"),
        ("camera_node", "source:=/nonexistent.mp4", "camera: "),
        ("evaluator_node", "episodes:=0", "evaluator: parameter episodes=0 outside [1, 100000]"),
    ],
)
def test_bad_parameter_stops_the_node_with_one_line(module: str, param: str, needle: str) -> None:
    r = subprocess.run(
        [sys.executable, "-m", f"mimic_ros.{module}", "--ros-args", "-p", param],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert READY not in r.stdout


def test_camera_node_publishes_a_video_file_stamped_at_capture(procs, client, tmp_path) -> None:
    video = tmp_path / "cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 20.0, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), i * 6, np.uint8))
    writer.release()
    got: list[tuple[float, float]] = []
    client.node.create_subscription(
        CompressedImage,
        "/cameras/desk/image/compressed",
        lambda m: got.append((m.header.stamp.sec + m.header.stamp.nanosec * 1e-9, time.time())),
        10,
    )
    start_node(procs, "camera_node", {"name": "desk", "source": str(video), "loop": True, "latency_s": 0.05})
    deadline = time.monotonic() + 20.0
    while len(got) <= 15 and time.monotonic() < deadline:
        client.spin_for(0.2)
    assert len(got) > 15
    lag = np.array([arr - t for t, arr in got])
    assert np.all(lag >= 0.05 - 1e-3)  # stamped capture time = arrival - calibrated latency


def test_keyboard_trigger_records_an_episode(procs, tmp_path) -> None:
    store = tmp_path / "keys.zarr"
    start_node(procs, "arm_node", ARM)
    start_node(procs, "recorder_node", {"path": str(store), "cameras": "scene", "action": False})
    keys = procs.python(
        "-m",
        "mimic_ros.keys",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(keys.stdout), daemon=True).start()

    def press(key: str, expect: str, timeout: float = 30.0) -> None:
        n = len(lines)
        keys.stdin.write(key + "\n")
        keys.stdin.flush()
        deadline = time.monotonic() + timeout
        while not any(expect in line for line in lines[n:]):
            assert time.monotonic() < deadline, f"no {expect!r} after {key!r}:\n{''.join(lines)}"
            time.sleep(0.05)

    for _ in range(50):  # the recorder needs a second of samples on every stream first
        press("s", ": ")
        if any("start: ok" in line for line in lines):
            break
        time.sleep(0.3)
    time.sleep(1.5)
    press("e", "stop: ok")
    press("d", "discard: refused: not recording")
    keys.stdin.write("q\n")
    keys.stdin.flush()
    assert keys.wait(timeout=20) == 0
    ds, _ = validate(store)
    assert ds.n_episodes == 1 and ds.episode_slice(0).stop >= 8


def test_leader_node_goes_silent_on_a_servo_fault_and_recovers(procs, client, tmp_path) -> None:
    from sensor_msgs.msg import JointState

    from mimic.calibration.gello import example_calibration
    from mimic.robots.specs import get_spec
    from mimic.teleop.emulated_bus import EmulatedDynamixelBus

    spec = get_spec("franka")
    cal = example_calibration("franka", baudrate=1_000_000)
    cal.save(tmp_path / "gello.json")
    got: list[tuple[float, list[float]]] = []
    leader_status: dict = {}
    client.node.create_subscription(
        JointState, "/leader/joint_states", lambda m: got.append((time.time(), list(m.position))), 100
    )
    client.node.create_subscription(
        String, "/leader/status", lambda m: leader_status.update(json.loads(m.data)), 10
    )
    with EmulatedDynamixelBus(cal, follower="franka", start_pose=spec.home) as bus:
        target = spec.home + 0.1
        bus.set_joint_targets(target, 0.03)
        leader = start_node(
            procs,
            "leader_node",
            {
                "port": bus.port,
                "calibration": str(tmp_path / "gello.json"),
                "follower": "franka",
                "rate_hz": 100.0,
                "retry_s": 0.1,
            },
        )
        deadline = time.monotonic() + 20.0
        while len(got) <= 50 and time.monotonic() < deadline:
            client.spin_for(0.2)
        assert len(got) > 50, "".join(leader.log)[-2000:]
        np.testing.assert_allclose(got[-1][1][:7], target, atol=2e-3)  # encoder quantisation: 1.5 mrad
        assert abs(got[-1][1][7] - 0.03) < 2e-3
        servo = cal.servo_ids[2]
        bus.inject(servo, "silence")
        client.spin_for(0.5)
        t_fault, n_fault = time.time(), len(got)
        client.spin_for(1.5)
        assert all(t < t_fault for t, _ in got[n_fault:]), "published while a servo was silent"
        assert leader_status.get("error") and str(servo) in leader_status["error"], leader_status
        bus.clear_faults()
        client.spin_for(2.0)
        assert len(got) - n_fault > 20, "did not resume after the fault cleared"
