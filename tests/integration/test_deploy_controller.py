"""The controller node as a real process: follow and chunk modes over ROS topics, timing and safety."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Duration
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from tests.ros_teardown import close_node
from tests.unit.test_control_chunk import make_spec

SPEC = make_spec()
BOOT = "import sys; from tests.unit.test_control_chunk import make_spec; from mimic_ros.controller_node import main; "


RATE_HZ = 500.0  # the chunk test's control rate


def stamp(t: float, s) -> None:
    s.sec, s.nanosec = int(t), int((t - int(t)) * 1e9)


class Peer:
    """The arm and the target source, in the test process."""

    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("deploy_test_peer")
        self.state_pub = self.node.create_publisher(JointState, "/robot/joint_states", 10)
        self.leader_pub = self.node.create_publisher(JointState, "/leader/joint_states", 10)
        self.chunk_pub = self.node.create_publisher(JointTrajectory, "/policy/action_chunk", 10)
        self.commands: list[tuple[float, np.ndarray]] = []
        self.node.create_subscription(JointState, "/robot/joint_command", self._on_cmd, 100)
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)

    def _on_cmd(self, msg: JointState) -> None:
        assert list(msg.name) == [*SPEC.joint_names, "gripper"]
        self.commands.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, np.array(msg.position)))

    def spin_for(self, seconds: float, every=None, period: float = 0.01) -> None:
        end = time.monotonic() + seconds
        next_call = 0.0
        while time.monotonic() < end:
            if every is not None and time.monotonic() >= next_call:
                every()
                next_call = time.monotonic() + period
            self.ex.spin_once(timeout_sec=0.002)

    def wait_matched(self, pub, timeout: float = 20.0) -> None:
        end = time.monotonic() + timeout
        while pub.get_subscription_count() == 0:
            assert time.monotonic() < end, "controller did not subscribe in time"
            self.spin_for(0.05)

    def publish_state(self, q: np.ndarray, g: float) -> None:
        msg = JointState()
        stamp(time.time(), msg.header.stamp)
        msg.name = [*SPEC.joint_names, "gripper"]
        msg.position = [*q.tolist(), g]
        self.state_pub.publish(msg)

    def close(self) -> None:
        close_node(self.ex, self.node)


def start_controller(procs, tmp_path, *args: str):
    stats = tmp_path / "stats.json"
    ros_args = ["--ros-args"] + [x for a in [*args, f"stats_path:={stats}"] for x in ("-p", a)]
    cmd = BOOT + f"sys.exit(main({ros_args!r}, spec=make_spec()))"
    return procs.python("-c", cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), stats


def stop(proc, stats) -> dict:
    proc.send_signal(2)
    proc.communicate(timeout=15)
    return json.loads(stats.read_text())


def check_safe(commands: list[tuple[float, np.ndarray]]) -> None:
    qs = np.array([c[1][:7] for c in commands])
    ts = np.array([c[0] for c in commands])
    assert np.all(qs >= SPEC.q_min) and np.all(qs <= SPEC.q_max)
    speed = np.abs(np.diff(qs, axis=0)) / np.maximum(np.diff(ts), 1e-4)[:, None]
    assert np.all(speed <= SPEC.dq_max * 0.8 * 1.001 + 1e-6)


def test_follow_mode_tracks_leader_within_limits_and_holds_when_stale(procs, tmp_path) -> None:
    proc, stats_path = start_controller(procs, tmp_path, "mode:=follow", "stale_after_s:=0.1")
    peer = Peer()
    try:
        peer.wait_matched(peer.leader_pub)
        peer.wait_matched(peer.state_pub)
        target = SPEC.home + 0.05
        target[3] = SPEC.q_max[3] + 0.5  # outside the joint limit: must be clipped, never sent

        def send_leader() -> None:
            msg = JointState()
            stamp(time.time(), msg.header.stamp)
            msg.position = [*target.tolist(), 0.06]
            peer.leader_pub.publish(msg)

        peer.spin_for(0.3, every=lambda: peer.publish_state(SPEC.home, 0.04), period=0.02)
        peer.spin_for(1.5, every=send_leader)
        n_following = len(peer.commands)
        peer.spin_for(0.6)  # leader silent -> the controller holds
        stats = stop(proc, stats_path)
    finally:
        peer.close()
    assert n_following > 300, f"only {n_following} commands in 1.5 s at 500 Hz"
    last = peer.commands[n_following - 1][1]
    np.testing.assert_allclose(last[[0, 1, 2, 4, 5, 6]], target[[0, 1, 2, 4, 5, 6]], atol=1e-9)
    assert last[3] <= SPEC.q_max[3] and last[7] == 0.06
    assert len(peer.commands) - n_following < 0.2 * 500, "kept commanding long after the leader went stale"
    check_safe(peer.commands)
    assert stats["counters"]["clipped_position"] > 0 and stats["counters"]["stale_ticks"] > 0
    print(
        "follow period error ms p50/p99/max:",
        stats["period_error_ms_p50"],
        stats["period_error_ms_p99"],
        stats["period_error_ms_max"],
    )
    # A loop that lost its 500 Hz timer (a sleep of a whole period or more per tick) shows p99 errors of tens of
    # ms; the rate itself is measured in the bench (goal 0.5 ms on a quiet machine). 5.19 ms was seen on an
    # idle 2-core CI-sized machine, so the bound sits at 10 ms.
    assert stats["period_error_ms_p99"] < 10.0


def test_chunk_mode_sends_each_point_one_arm_latency_early(procs, tmp_path) -> None:
    lead = 0.1
    proc, stats_path = start_controller(
        procs, tmp_path, "mode:=chunk", f"lead_s:={lead}", f"rate_hz:={RATE_HZ}"
    )
    peer = Peer()
    try:
        peer.wait_matched(peer.chunk_pub)
        peer.wait_matched(peer.state_pub)
        # The arm publishes its state all along, as a real one does: the controller commands only once seeded
        # from a state, and a 0.3 s burst can pass before discovery completes on the controller's side.
        # Its control loop starts once seeded and then publishes diagnostics every second: wait for those.
        arm_state = lambda: peer.publish_state(SPEC.home, 0.04)  # noqa: E731
        diagnostics: list[str] = []
        peer.node.create_subscription(
            String, "/controller/diagnostics", lambda m: diagnostics.append(m.data), 10
        )
        deadline = time.monotonic() + 20.0
        while not diagnostics and time.monotonic() < deadline:
            peer.spin_for(0.1, every=arm_state, period=0.02)
        assert diagnostics, "the controller never started its loop (no state seen?)"
        # A slow ramp on joint 1 (0.2 rad/s), 16 points at 10 Hz, first point executing 0.3 s from now.
        t0 = time.time() + 0.3
        msg = JointTrajectory()
        stamp(t0, msg.header.stamp)
        for i in range(16):
            q = SPEC.home.copy()
            q[0] += 0.02 * i
            pt = JointTrajectoryPoint(positions=[*q.tolist(), 0.04])
            pt.time_from_start = Duration(sec=0, nanosec=int(i * 0.1 * 1e9))
            msg.points.append(pt)
        peer.chunk_pub.publish(msg)
        peer.spin_for(2.0, every=arm_state, period=0.02)
        stats = stop(proc, stats_path)
    finally:
        peer.close()
    assert len(peer.commands) > 300
    check_safe(peer.commands)
    ts = np.array([c[0] for c in peer.commands])
    q0 = np.array([c[1][0] for c in peer.commands])
    inside = (ts + lead > t0 + 0.05) & (ts + lead < t0 + 1.45)
    expected = SPEC.home[0] + 0.2 * (ts[inside] + lead - t0)
    # Every output is on the ramp, except that after a starved tick (a gap over 2 periods) the safety rule
    # caps the step at one period's velocity limit: those outputs lag the ramp for a few ticks, never lead it.
    err = q0[inside] - expected
    period = 1.0 / RATE_HZ
    gap_at = np.flatnonzero(np.diff(ts) > 2 * period) + 1
    catching_up = np.zeros(len(ts), bool)
    for i in gap_at:
        catching_up[i : i + 4] = True
    off = np.abs(err) > 2e-3
    assert not np.any(off & ~catching_up[inside]), (err[off], np.flatnonzero(inside)[off], gap_at)
    assert np.all(err[off] < 0), "an output ran ahead of the chunk"
    assert off.sum() <= 5, f"{off.sum()} outputs off the ramp"
    assert ts[-1] + lead <= t0 + 1.5 + 0.01, "commanded past the chunk's end instead of holding"
    print(
        "chunk period error ms p50/p99/max:",
        stats["period_error_ms_p50"],
        stats["period_error_ms_p99"],
        stats["period_error_ms_max"],
    )


def test_bad_parameter_stops_the_node_with_one_line(procs, tmp_path) -> None:
    proc, _ = start_controller(procs, tmp_path, "mode:=sprint")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert (
        err.strip().splitlines()[-1]
        == "controller: parameter mode='sprint' is not one of 'follow', 'chunk', 'eef'"
    )
