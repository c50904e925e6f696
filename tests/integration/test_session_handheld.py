"""The handheld session end to end: a twin episode recorded by the direct path, replayed as live topics, recorded
by the handheld recorder node, equals the direct store.

Chain under test: `record_twin` (scripted hand, injected stream latencies + jitter) -> direct store ->
handheld_replay_node (poses on /handheld/pose as geometry_msgs/PoseStamped, widths on /handheld/gripper_width as
sensor_msgs/JointState, JPEG frames on /cameras/wrist/image/compressed, at real time with now-based capture
stamps; ~/start, ~/stop) -> handheld_recorder_node -> HandheldCapture -> session store, all started by
`mimic session up handheld_twin`. Alignment tolerances asserted per grid row (measured values in docs/handheld.md):
- pose, axis-angle, width, action: within 1e-5 (m, rad). Not bit-equal: on the ROS clock capture times are
  epoch seconds, whose float64 spacing is 0.24 us, and stamps carry whole nanoseconds.
- `<key>_t` - first timestamp: within 1 us (the same samples chosen for every row).
- images: the stored frames JPEG-encoded once more on the topic and once more in the store: mean |diff| < 1.5.
Also: `mimic calibrate latency --pose twin` recovers an injected pose-stream latency, and the recorder's
~/start, ~/stop, ~/discard work from the keyboard tool `mimic_ros.keys` as in the teleop session.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import numpy as np

from mimic.data.validate import validate
from mimic.teleop.handheld import TwinStreamLatency, record_twin

INJECTED = TwinStreamLatency(pose_s=0.05, gripper_s=0.02, camera_s=0.08, jitter_s=0.004)
# provenance: which path wrote the store, its topics; the twin's seeds exist only on the direct path
PROVENANCE = {"source", "topics", "stamps", "cameras", "grippers", "episode_marks", "expert_seeds"}
TWIN_ATTRS = ("camera_mount_tcp_cam", "gripper_max", "tcp_offset_from_flange_m", "gripper_seed_stride")
KEY_ACTIONS = {"s": "start", "e": "stop", "d": "discard"}  # mimic_ros.keys
_PIPE = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}


def session(procs, tmp_path, direct, sets: dict) -> tuple[str, dict]:
    """`mimic session up handheld_twin` replaying `direct`; returns (output, the replay's results)."""
    ds = validate(direct)[0]
    attrs = {k: ds.attrs[k] for k in TWIN_ATTRS if k in ds.attrs}
    (tmp_path / "attrs.json").write_text(json.dumps(attrs))
    lat = ds.attrs["latencies"]
    base = {
        "recorder.path": tmp_path / "session.zarr",
        "recorder.attrs_file": tmp_path / "attrs.json",
        "recorder.pose_latency_s": lat["pose_s"],
        "recorder.gripper_latency_s": lat["gripper_s"],
        "recorder.camera_latency_s": lat["camera_s"],
        "replay.store": direct,
        "replay.generate": 0,
        "replay.results_path": tmp_path / "replay.json",
    }
    args = [sys.executable, "-m", "mimic.cli", "session", "up", "handheld_twin", "--verbose"]
    args += ["--log-dir", str(tmp_path / "logs")]
    for key, value in {**base, **sets}.items():
        args += ["--set", f"{key}={value}"]
    proc = procs.start(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-4000:]
    return out, json.loads((tmp_path / "replay.json").read_text())


def compare(direct, recorded) -> dict[str, float]:
    """Assert the two stores hold the same episodes within the stated tolerances; returns the measured errors."""
    a, _ = validate(direct)
    b, stats = validate(recorded)
    assert a.n_episodes == b.n_episodes and a.n_steps == b.n_steps, (a.n_steps, b.n_steps)
    assert sorted(a.keys) == sorted(b.keys)
    for key in a.keys:
        assert a.array(key).shape == b.array(key).shape and a.array(key).dtype == b.array(key).dtype, key
    differ = {k for k in set(a.attrs) | set(b.attrs) if a.attrs.get(k) != b.attrs.get(k)}
    assert differ <= PROVENANCE, {k: (a.attrs.get(k), b.attrs.get(k)) for k in differ - PROVENANCE}
    err = {"lowdim": 0.0, "time_s": 0.0, "image_mean": 0.0, "image_max": 0.0}
    for e in range(a.n_episodes):
        ea, eb = a.episode(e), b.episode(e)
        for key in a.keys:
            if key.endswith("_rgb"):
                d = np.abs(ea[key].astype(int) - eb[key].astype(int))
                err["image_mean"] = max(err["image_mean"], float(d.mean()))
                err["image_max"] = max(err["image_max"], float(d.max()))
            elif key == "timestamp" or key.endswith("_t"):
                d = np.abs((ea[key] - ea["timestamp"][0]) - (eb[key] - eb["timestamp"][0]))
                err["time_s"] = max(err["time_s"], float(d.max()))
            else:
                err["lowdim"] = max(err["lowdim"], float(np.abs(ea[key] - eb[key]).max()))
    assert err["lowdim"] < 1e-5 and err["time_s"] < 1e-6 and err["image_mean"] < 1.5, err
    assert max(stats.max_error_s.values()) < 0.02  # every row within 20 ms of its samples, as the direct path
    return err


def test_replayed_handheld_episode_records_the_direct_store(procs, tmp_path):
    direct = tmp_path / "direct.zarr"
    record_twin(direct, 1, seed=3, injected=INJECTED, progress=False)
    t = time.monotonic()
    out, results = session(procs, tmp_path, direct, {})
    elapsed = time.monotonic() - t
    for node in ("recorder", "replay"):
        assert f"[session] {node} ready" in out
    assert "all nodes stopped" in out
    (ep,) = results["episodes"]
    assert ep["committed"] and ep["exact_values"] and ep["taken"] == ep["samples"], ep
    err = compare(direct, tmp_path / "session.zarr")
    ds = validate(tmp_path / "session.zarr")[0]
    assert ds.attrs["latencies"] == {"pose_s": 0.05, "gripper_s": 0.02, "camera_s": 0.08}
    assert ds.attrs["topics"]["pose"] == "/handheld/pose" and ds.attrs["stamps"]["pose"] == "capture"
    print(
        f"one gripper, {ds.n_steps} rows: lowdim max {err['lowdim']:.2e} (m, rad), row times max "
        f"{err['time_s'] * 1e9:.0f} ns, images mean {err['image_mean']:.2f} max {err['image_max']:.0f} "
        f"levels; samples {ep['samples']}, replay late max {ep['max_late_ms']} ms; session {elapsed:.1f} s"
    )


def test_two_grippers_in_one_session(procs, tmp_path):
    direct = tmp_path / "direct.zarr"
    record_twin(direct, 1, seed=5, injected=INJECTED, progress=False, grippers=2)
    sets = {
        "recorder.grippers": "left,right",
        "recorder.cameras": "left_wrist,right_wrist",
        "replay.grippers": "left,right",
        "replay.cameras": "left_wrist,right_wrist",
    }
    out, results = session(procs, tmp_path, direct, sets)
    (ep,) = results["episodes"]
    assert ep["committed"] and set(ep["samples"]) == {
        "pose",
        "pose1",
        "gripper",
        "gripper1",
        "camera",
        "camera1",
    }
    assert ep["taken"] == ep["samples"], ep
    err = compare(direct, tmp_path / "session.zarr")
    ds = validate(tmp_path / "session.zarr")[0]
    assert ds.array("action").shape[1] == 14 and ds.attrs["grippers"] == ["left", "right"]
    assert ds.attrs["topics"]["pose1"] == "/handheld/right/pose"
    assert ds.attrs["topics"]["camera1"] == "/cameras/right_wrist/image/compressed"
    print(
        f"two grippers, {ds.n_steps} rows: lowdim max {err['lowdim']:.2e}, row times max "
        f"{err['time_s'] * 1e9:.0f} ns, images mean {err['image_mean']:.2f} max {err['image_max']:.0f}"
    )


def test_calibrate_latency_recovers_an_injected_pose_latency(tmp_path):
    out = tmp_path / "latency.json"
    cli = subprocess.run(
        [sys.executable, "-m", "mimic.cli", "calibrate", "latency", "--arm", "twin:franka", "--pose", "twin"]
        + ["--inject-pose-s", "0.06", "--pose-jitter-s", "0.004", "--duration", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    pose_s = json.loads(out.read_text())["pose_s"]
    truth = 0.06 + 0.004 / 2
    print(f"pose latency: injected {truth * 1e3:.1f} ms, estimated {pose_s * 1e3:.1f} ms")
    assert abs(pose_s - truth) < 0.005
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "mimic.cli",
            "calibrate",
            "latency",
            "--arm",
            "franka:10.0.0.1",
            "--pose",
            "twin",
        ]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 1 and "--pose twin: the twin tracker rides on a twin arm" in bad.stderr


class Lines:
    """A child's stdout read on a thread, so every wait for a line is bounded even when the child goes quiet."""

    def __init__(self, proc) -> None:
        self.proc, self.log = proc, []
        self.queue: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.queue.put(line)
        self.queue.put("")  # end of output

    def wait(self, needle: str, timeout: float) -> str:
        """The first new line containing `needle`; AssertionError with the output so far if none in `timeout` s."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.queue.get(timeout=left)
            except queue.Empty:
                break
            if not line:
                raise AssertionError(f"exited before {needle!r}:\n{''.join(self.log)}")
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError(f"no {needle!r} within {timeout} s:\n{''.join(self.log)}")


def test_keyboard_starts_stops_and_discards_handheld_episodes(procs, tmp_path):
    """The person's flow: replayed streams run (`mimic handheld replay`, no recorder calls), keys drive the recorder."""
    direct = tmp_path / "direct.zarr"
    record_twin(direct, 1, seed=3, progress=False)
    recorder = procs.python(
        "-u",
        "-m",
        "mimic_ros.handheld_recorder_node",
        "--ros-args",
        "-r",
        "__node:=recorder",
        "-p",
        f"path:={tmp_path / 'keys.zarr'}",
        "-p",
        "pose_stamp:=capture",
        "-p",
        "gripper_stamp:=capture",
        **_PIPE,
    )
    Lines(recorder).wait("MIMIC_NODE_READY", 60)
    keys_proc = procs.python("-u", "-m", "mimic_ros.keys", stdin=subprocess.PIPE, **_PIPE)
    keys = Lines(keys_proc)
    keys.wait("s = start", 60)
    # at half speed the hand moves for ~13 s: time for the keys below on a loaded machine
    replay_proc = procs.python(
        "-u",
        "-m",
        "mimic.cli",
        "handheld",
        "replay",
        str(direct),
        "--rate",
        "0.5",
        "--lead-in",
        "1.0",
        **_PIPE,
    )
    replay = Lines(replay_proc)
    replay.wait("motion", 120)

    def key(k: str) -> str:
        keys_proc.stdin.write(k + "\n")
        keys_proc.stdin.flush()
        return keys.wait(f"{ {'s': 'start', 'e': 'stop', 'd': 'discard'}[k] }: ", 30)

    deadline = time.monotonic() + 30
    while "start: ok: recording episode 0" not in (answer := key("s")):  # refused until every stream is heard
        assert time.monotonic() < deadline, answer
        time.sleep(0.3)
    time.sleep(2.0)
    assert "stop: ok:" in key("e")
    assert "start: ok: recording episode 1" in key("s")
    time.sleep(0.5)
    assert "discard: ok: episode 1 discarded" in key("d")
    assert "stop: refused: not recording" in key("e")
    keys_proc.stdin.write("q\n")
    keys_proc.stdin.flush()
    assert keys_proc.wait(timeout=30) == 0
    replay.wait("episodes committed", 120)
    assert replay_proc.wait(timeout=30) == 0, "".join(replay.log)
    ds, _ = validate(tmp_path / "keys.zarr")
    assert ds.n_episodes == 1 and 10 <= ds.n_steps <= 80, ds.n_steps  # ~2 s at 10 Hz, more if keys lag
    print(f"keys: {ds.n_steps} rows committed; {''.join(keys.log).strip()}")
    assert np.ptp(ds.read("robot0_eef_pos"), axis=0).max() > 0.005  # the hand moved while recording


def test_recorder_marks_a_stalled_stream_and_names_bad_parameters(procs, tmp_path):
    """Live synthetic streams from this process: a pose gap stalls the episode (rows before it kept, marked),
    a NaN pose is dropped and counted; a wrong parameter is one line naming it."""
    import rclpy
    from geometry_msgs.msg import PoseStamped
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from sensor_msgs.msg import CompressedImage, JointState
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from mimic_ros.msgs import jpeg_image, set_stamp
    from tests.ros_teardown import close_node

    node_args = ["-u", "-m", "mimic_ros.handheld_recorder_node", "--ros-args", "-r", "__node:=recorder"]
    for params, says in (
        (
            ["grippers:=left,right", "cameras:=wrist"],
            "parameter cameras='wrist' must name one camera per gripper",
        ),
        (["width_source:=markers"], "parameter marker_calibration: width_source=markers needs one"),
        (["tracked_to_tcp:=1,2"], "tracked_to_tcp must be 16 comma-separated numbers"),
    ):
        extra = [a for p in [f"path:={tmp_path / 'bad.zarr'}", *params] for a in ("-p", p)]
        bad = subprocess.run([sys.executable, *node_args, *extra], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and says in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, (
            bad.stderr
        )

    path = tmp_path / "stall.zarr"
    params = [
        f"path:={path}",
        "pose_stamp:=capture",
        "gripper_stamp:=capture",
        "image_height:=32",
        "image_width:=32",
        # tolerances with room for this process being starved on a loaded machine; the gap below is far wider
        "lowdim_tolerance_s:=0.1",
        "camera_tolerance_s:=0.2",
    ]
    recorder = procs.python(*node_args, *[a for p in params for a in ("-p", p)], **_PIPE)
    Lines(recorder).wait("MIMIC_NODE_READY", 60)
    rclpy.init()
    node = rclpy.create_node("stall_test")
    ex = SingleThreadedExecutor()
    ex.add_node(node)
    try:
        pose = node.create_publisher(PoseStamped, "/handheld/pose", 100)
        width = node.create_publisher(JointState, "/handheld/gripper_width", 100)
        camera = node.create_publisher(CompressedImage, "/cameras/wrist/image/compressed", 10)
        status: list[dict] = [{}]
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(
            String, "/recorder/status", lambda m: status.__setitem__(0, json.loads(m.data)), latched
        )
        clients = {n: node.create_client(Trigger, f"/recorder/{n}") for n in ("start", "stop")}
        frame = jpeg_image(0.0, np.full((48, 64, 3), 90, np.uint8))  # resized to 32x32 by the recorder

        def publish_for(seconds: float, with_pose: bool = True, nan_pose: bool = False) -> None:
            end, k = time.monotonic() + seconds, 0
            while time.monotonic() < end:
                now = time.time()
                if with_pose:
                    msg = PoseStamped()
                    set_stamp(msg.header.stamp, now)
                    msg.pose.position.x = float("nan") if nan_pose and k == 3 else 0.3 + 0.05 * np.sin(now)
                    msg.pose.orientation.w = 1.0
                    pose.publish(msg)
                js = JointState(name=["gripper"], position=[0.05])
                set_stamp(js.header.stamp, now)
                width.publish(js)
                if k % 5 == 0:
                    set_stamp(frame.header.stamp, now)
                    camera.publish(frame)
                k += 1
                ex.spin_once(timeout_sec=0.01)

        def call(name: str) -> Trigger.Response:
            assert clients[name].wait_for_service(timeout_sec=20.0)
            future = clients[name].call_async(Trigger.Request())
            end = time.monotonic() + 20.0
            while not future.done():
                assert time.monotonic() < end, f"/recorder/{name} did not answer"
                publish_for(0.02)
            return future.result()

        publish_for(1.5)  # discovery, then the streams are live
        deadline = time.monotonic() + 30.0
        while not (resp := call("start")).success:  # refused until every stream has been heard (discovery)
            assert time.monotonic() < deadline, resp.message
            publish_for(0.3)
        publish_for(1.5, nan_pose=True)
        publish_for(0.7, with_pose=False)  # the tracker lost the gripper for 700 ms
        publish_for(1.0)
        assert status[0].get("stalled", "") and "pose (/handheld/pose)" in status[0]["stalled"], status[0]
        resp = call("stop")
        assert resp.success, resp.message
        info = json.loads(resp.message)
        assert "pose" in info["stalled"] and info["dropped"].get("pose", 0) >= 1
    finally:
        close_node(ex, node)
    ds, _ = validate(path)
    assert ds.n_episodes == 1 and 8 <= ds.n_steps <= 20, ds.n_steps  # the 1.5 s before the gap, not after it
    assert "pose" in ds.attrs["episode_marks"]["0"]["stalled"]
    assert ds.array("camera0_rgb").shape[1:] == (32, 32, 3)


def test_width_read_from_finger_markers_in_the_session(procs, tmp_path):
    """width_source=markers: the recorder reads the width from the ArUco markers on the fingers in the replayed
    240x320 wrist frames (no width topic); it stays within 2 mm of the direct store's width, which is the
    twin's true finger opening, at every grid row."""
    from mimic.calibration.gripper_width import twin_calibration

    size = (240, 320)
    direct = tmp_path / "direct.zarr"
    record_twin(direct, 1, seed=3, image_size=size, injected=INJECTED, progress=False, finger_markers=True)
    cal, _ = twin_calibration(size=size)
    cal.save(tmp_path / "gripper_width.json")
    sets = {
        "recorder.width_source": "markers",
        "recorder.marker_calibration": tmp_path / "gripper_width.json",
        "recorder.image_height": size[0],
        "recorder.image_width": size[1],
        "replay.widths": "false",
        # widths come at the 30 fps frame rate, and the grasp can hide a marker for a frame or two
        "recorder.lowdim_tolerance_s": 0.07,
    }
    out, results = session(procs, tmp_path, direct, sets)
    (ep,) = results["episodes"]
    assert ep["committed"] and "gripper" not in ep["samples"], ep
    a, b = validate(direct)[0].episode(0), validate(tmp_path / "session.zarr")[0].episode(0)
    truth, read = a["robot0_gripper_width"].ravel(), b["robot0_gripper_width"].ravel()
    assert len(truth) == len(read)
    # a row's width is its nearest sample's: 100 Hz truth and 30 fps frames are taken at different instants,
    # which only matters while the fingers move (they close in a few ms); compare where they are still
    step = np.abs(np.diff(truth))
    still = np.r_[step[0], np.maximum(step[1:], step[:-1]), step[-1]] < 1e-3
    err_mm = np.abs(truth - read)[still] * 1e3
    ds = validate(tmp_path / "session.zarr")[0]
    assert ds.attrs["topics"]["gripper"] == "markers in /cameras/wrist/image/compressed"
    assert ds.attrs["latencies"]["gripper_s"] == ds.attrs["latencies"]["camera_s"]
    print(
        f"marker width through the session: {still.sum()} of {len(read)} rows with the fingers still, error max "
        f"{err_mm.max():.2f} mm, mean {err_mm.mean():.2f} mm"
    )
    assert still.mean() > 0.8 and err_mm.max() < 2.0
