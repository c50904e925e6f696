"""Teleop session numbers: leader-to-twin latency through the real node chain, and recorder drops.

Latency: this process is the person holding an emulated GELLO (`EmulatedDynamixelBus.follow` with a slow
sinusoid on every joint); the leader node reads the bus with dynamixel-sdk and publishes
/leader/joint_states; the controller (follow mode, 500 Hz) turns it into /robot/joint_command; the arm
node executes it on the Franka twin. In follow mode an in-limit, slow leader target passes the controller
unchanged, so each command is matched exactly to the leader reading it came from: latency = arrival of
that command (this process subscribes beside the arm node) - the leader reading's capture stamp. Also
reported: how old the reading already was when the leader node published it (bus read time).

Drops: the recorder records one episode from the arm node's joints (100 Hz), commands and two rendered
cameras; frames the arm node published vs frames the recorder received, rows written vs the episode's
length at 10 Hz, and the recorder's own drop/stall counters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import BenchResult, percentiles

READY = "MIMIC_NODE_READY"


class Nodes:
    """Node processes of one measurement, stopped with SIGINT (SIGKILL after 10 s)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.logs: dict[str, list[str]] = {}

    def start(self, module: str, params: dict, timeout: float = 90.0) -> subprocess.Popen:
        args = [sys.executable, "-u", "-m", f"mimic_ros.{module}", "--ros-args"]
        for k, v in params.items():
            args += ["-p", f"{k}:={json.dumps(v) if isinstance(v, str) else v}"]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        self.procs.append(proc)
        log = self.logs.setdefault(module, [])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{module} exited before ready:\n{''.join(log[-20:])}")
            log.append(line)
            if line.startswith(READY):
                threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()
                return proc
        raise RuntimeError(f"{module} not ready after {timeout} s")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


def _stamp(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def leader_to_twin(seconds: float, tmp: Path) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    from mimic.robots.specs import get_spec
    from mimic.teleop.emulated_bus import EmulatedDynamixelBus
    from mimic.teleop.gello_calibration import example_calibration

    spec = get_spec("franka")
    cal = example_calibration("franka", baudrate=1_000_000)
    cal.save(tmp / "gello.json")
    bus = EmulatedDynamixelBus(cal, follower="franka", start_pose=spec.home)
    phases = np.linspace(0, np.pi, spec.dof)
    bus.follow(lambda t: (spec.home + 0.15 * np.sin(2 * np.pi * 0.25 * t + phases) * (t > 0.5), 0.04))
    nodes = Nodes()
    leader_msgs: dict[tuple, float] = {}
    leader_age: list[float] = []
    latency: list[float] = []
    try:
        nodes.start("arm_node", {"backend": "twin:franka", "task": "pick_place", "cameras": "scene,wrist"})
        nodes.start(
            "controller_node", {"arm": "franka", "mode": "follow", "rate_hz": 500.0, "velocity_scale": 0.4}
        )
        nodes.start(
            "leader_node",
            {
                "port": bus.port,
                "calibration": str(tmp / "gello.json"),
                "follower": "franka",
                "rate_hz": 200.0,
            },
        )
        rclpy.init()
        node = rclpy.create_node("bench_session_probe")

        def on_leader(msg) -> None:
            t = time.time()
            leader_msgs[tuple(msg.position[: spec.dof])] = _stamp(msg)
            leader_age.append(t - _stamp(msg))

        def on_command(msg) -> None:
            t = time.time()
            t_leader = leader_msgs.pop(tuple(msg.position[: spec.dof]), None)
            if t_leader is not None:
                latency.append(t - t_leader)

        node.create_subscription(JointState, "/leader/joint_states", on_leader, 100)
        node.create_subscription(JointState, "/robot/joint_command", on_command, 1000)
        ex = SingleThreadedExecutor()
        ex.add_node(node)
        end = time.monotonic() + seconds + 2.0
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.01)
            if len(leader_msgs) > 5000:
                leader_msgs.clear()
        ex.remove_node(node)
        node.destroy_node()
        rclpy.shutdown()
    finally:
        nodes.stop()
        bus.close()
    if not latency:
        raise RuntimeError(
            "no command matched a leader reading: " + "".join(nodes.logs.get("leader_node", [])[-5:])
        )
    return {"latency": percentiles(latency), "leader_age": percentiles(leader_age), "matched": len(latency)}


def recorder_drops(seconds: float, size: tuple[int, int], rate_hz: float, tmp: Path) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    nodes = Nodes()
    store = tmp / f"rec_{size[0]}x{size[1]}_{rate_hz:g}.zarr"
    sim_status: dict = {}
    try:
        nodes.start(
            "arm_node",
            {
                "backend": "twin:franka",
                "task": "pick_place",
                "cameras": "scene,wrist",
                "camera_rate_hz": rate_hz,
                "image_height": size[0],
                "image_width": size[1],
                "state_rate_hz": 100.0,
                "status_rate_hz": 20.0,
            },
        )
        # tolerances as in config/teleop_twin.yaml; statuses at 20 Hz so the frame counts are snapshots
        nodes.start(
            "recorder_node",
            {
                "path": str(store),
                "cameras": "scene,wrist",
                "action": False,
                "tolerance_s": 0.1,
                "image_tolerance_s": 0.15,
                "status_rate_hz": 20.0,
            },
        )
        rclpy.init()
        node = rclpy.create_node("bench_session_recorder")
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(
            String, "/sim/status", lambda m: sim_status.update(json.loads(m.data)), latched
        )
        rec_status: dict = {}
        node.create_subscription(
            String, "/recorder/status", lambda m: rec_status.update(json.loads(m.data)), latched
        )
        clients = {n: node.create_client(Trigger, f"/recorder/{n}") for n in ("start", "stop")}
        ex = SingleThreadedExecutor()
        ex.add_node(node)

        def call(name: str) -> Trigger.Response:
            assert clients[name].wait_for_service(timeout_sec=30)
            fut = clients[name].call_async(Trigger.Request())
            end = time.monotonic() + 30
            while not fut.done() and time.monotonic() < end:
                ex.spin_once(timeout_sec=0.01)
            return fut.result()

        def spin(s: float) -> None:
            end = time.monotonic() + s
            while time.monotonic() < end:
                ex.spin_once(timeout_sec=0.01)

        spin(1.5)
        for _ in range(50):
            if call("start").success:
                break
            spin(0.2)
        frames0 = dict(sim_status.get("frames", {}))
        received0 = dict(rec_status.get("received", {}))
        t0 = time.time()
        spin(seconds)
        stop = call("stop")
        duration = time.time() - t0
        spin(0.5)
        frames1 = dict(sim_status.get("frames", {}))
        received1 = dict(rec_status.get("received", {}))
        ex.remove_node(node)
        node.destroy_node()
        rclpy.shutdown()
    finally:
        nodes.stop()
    info = json.loads(stop.message) if stop.success else {"error": stop.message, "steps": 0}
    published = sum(frames1.get(c, 0) - frames0.get(c, 0) for c in ("scene", "wrist"))
    received = sum(received1.get(k, 0) - received0.get(k, 0) for k in ("camera0_rgb", "camera1_rgb"))
    return {
        "rows": info.get("steps", 0),
        "expected_rows": duration * 10.0,
        "stalled": info.get("stalled"),
        "dropped": sum((info.get("dropped") or {}).values()),
        "frames_published": published,
        "frames_received": received,
    }


def run(quick: bool) -> BenchResult:
    res = BenchResult("session")
    seconds = 8.0 if quick else 30.0
    with tempfile.TemporaryDirectory(prefix="bench-session-") as tmp:
        lat = leader_to_twin(seconds, Path(tmp))
        res.rows.append({"measure": "leader reading -> command at the twin (ms)", **lat["latency"]})
        res.rows.append(
            {"measure": "leader reading -> /leader/joint_states arrival (ms)", **lat["leader_age"]}
        )
        configs = [((96, 96), 15.0)] if quick else [((96, 96), 15.0), ((240, 320), 30.0)]
        for size, rate in configs:
            d = recorder_drops(seconds, size, rate, Path(tmp))
            res.rows.append(
                {
                    "measure": f"recorder 2 cams {size[0]}x{size[1]}@{rate:g} Hz + joints",
                    "rows": d["rows"],
                    "expected_rows": round(d["expected_rows"], 1),
                    "dropped": d["dropped"],
                    "stalled": d["stalled"] or "-",
                    "frames_published": d["frames_published"],
                    "frames_received": d["frames_received"],
                }
            )
    res.ratios["leader_to_twin_p50_ms"] = lat["latency"]["p50"]
    res.ratios["leader_to_twin_p99_ms"] = lat["latency"]["p99"]
    res.notes.append(
        "latency: command arrival beside the arm node minus the leader reading's capture stamp; "
        "exact match of in-limit follow-mode targets; the twin applies a command at its next "
        "physics step (<= 1 ms) after arrival"
    )
    res.notes.append(
        "recorder: frames_published/frames_received are status snapshots (20 Hz; the arm node's "
        "status lags when its threads are starved), so they agree only to a few dozen frames; "
        "'dropped' counts samples the recorder received but could not write; a stall truncates "
        "the episode at the stream gap (rows < expected_rows)"
    )
    return res


if __name__ == "__main__":
    r = run(quick="--quick" in sys.argv)
    print(json.dumps({"rows": r.rows, "ratios": r.ratios}, indent=1))
