"""A two-gripper end-effector policy driving two twin arms through the ROS deploy session (deploy_bimanual_twin).

Real processes started from the packaged session YAML (its parameters and remaps as the supervisor passes them):
the arm node serving both arms of one twin scene, one controller per arm in eef mode on /robot<i>/..., and the
policy node with a scripted two-gripper policy that moves each TCP by its own offset from where it started
(in the shared table frame). Both arms must get there: chunks split per gripper, back in each arm's base
frame, IK and execution on each arm, no point refused. `mimic deploy` of the same policy runs the session
with its evaluator, which resets both controllers and scores seeded episodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState
from std_msgs.msg import String

from mimic.robots.eef_control import tcp_pose_row
from mimic.robots.ik import IKSolver
from mimic.sim.tasks.bimanual_pick_place import BASE_POSES
from mimic_ros.session import load_session
from tests.conftest import REPO
from tests.ros_teardown import close_node

pytestmark = pytest.mark.integration

READY = "MIMIC_NODE_READY"
OFFSETS = (np.array([0.04, 0.0, -0.06]), np.array([0.0, -0.04, -0.03]))  # per gripper, table frame (m)
TOL_M = 0.006


class TwoArmOffsetPolicy:
    """Scripted two-gripper eef policy: gripper i goes from the TCP pose of its first observation to that pose
    + OFFSETS[i], 1 cm per control period, orientation kept; rows aligned as the policies' (row n_obs_steps - 1
    is the newest observation)."""

    action_space, grippers = "eef", 2
    obs_keys = tuple(
        f"robot{i}_{k}" for i in range(2) for k in ("eef_pos", "eef_rot_axis_angle", "gripper_width")
    )
    n_obs_steps, horizon, n_action_steps, action_dim, control_hz = 2, 16, 8, 14, 10.0

    def __init__(self) -> None:
        self.goal: list[np.ndarray] | None = None

    def predict(self, obs_window: dict[str, np.ndarray], num_inference_steps=None) -> np.ndarray:
        if self.goal is None:
            self.goal = [obs_window[f"robot{i}_eef_pos"][-1] + OFFSETS[i] for i in range(2)]
        out = []
        for i in range(2):
            here, aa = obs_window[f"robot{i}_eef_pos"][-1], obs_window[f"robot{i}_eef_rot_axis_angle"][-1]
            d = self.goal[i] - here
            n = np.clip((np.arange(self.horizon) - (self.n_obs_steps - 1)) * 0.01, 0.0, np.linalg.norm(d))
            pos = here + n[:, None] * d / max(np.linalg.norm(d), 1e-9)
            out.append(np.column_stack([pos, np.tile(aa, (self.horizon, 1)), np.full(self.horizon, 0.08)]))
        return np.concatenate(out, axis=1)

    def reset(self) -> None:
        self.goal = None


class Watcher:
    """Both arms' joint states (TCP by FK + base position) and controller diagnostics."""

    def __init__(self) -> None:
        rclpy.init()
        self.node = rclpy.create_node("bimanual_deploy_test")
        self.ik = IKSolver.for_arm("xarm7")
        self.states: list[list[np.ndarray]] = [[], []]
        self.diag: list[dict] = [{}, {}]
        for i in range(2):
            self.node.create_subscription(
                JointState,
                f"/robot{i}/joint_states",
                lambda m, i=i: self.states[i].append(np.array(m.position)),
                100,
            )
            self.node.create_subscription(
                String,
                f"/robot{i}/controller/diagnostics",
                lambda m, i=i: self.diag.__setitem__(i, json.loads(m.data)),
                10,
            )
        self.ex = SingleThreadedExecutor()
        self.ex.add_node(self.node)

    def tcp(self, i: int) -> np.ndarray:
        row = tcp_pose_row(self.ik.fk(self.states[i][-1][:7]))
        row[:3] += BASE_POSES[i][:3, 3]
        return row

    def wait_for(self, what: str, ok, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not ok():
            assert time.monotonic() < end, f"timed out waiting for {what}"
            self.ex.spin_once(timeout_sec=0.02)

    def close(self) -> None:
        close_node(self.ex, self.node)


def _start(procs, node, timeout: float = 90.0) -> subprocess.Popen:
    proc = procs.python(
        "-u", "-m", node.module, *node.ros_args(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{node.name} exited before ready:\n{''.join(lines)}")
        lines.append(line)
        if line.startswith(READY):
            threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True).start()
            proc.log = lines  # type: ignore[attr-defined]
            return proc
    raise AssertionError(f"{node.name} not ready after {timeout} s:\n{''.join(lines)}")


def test_policy_drives_both_arms_through_the_bimanual_session(procs) -> None:
    session = load_session(
        "deploy_bimanual_twin",
        [f"policy.checkpoint=py:{__name__}:TwoArmOffsetPolicy", "policy.matching=false"],
    )
    watcher = Watcher()
    try:
        _start(procs, session.node("arm"))
        watcher.wait_for("both arms' joint states", lambda: all(watcher.states), 30)
        starts = [watcher.tcp(i) for i in range(2)]
        ctls = [_start(procs, session.node(f"controller{i}")) for i in range(2)]
        # a chunk that reaches a controller before its first joint state has no IK seed and is refused: the
        # controllers publish diagnostics only from their running loops, once seeded
        watcher.wait_for("both controllers seeded", lambda: all(watcher.diag), 30)
        _start(procs, session.node("policy"))

        def arrived() -> bool:
            return all(
                np.linalg.norm(watcher.tcp(i)[:3] - (starts[i][:3] + OFFSETS[i])) < TOL_M for i in range(2)
            )

        watcher.wait_for("both TCPs at their goals", arrived, 60)
        watcher.wait_for("diagnostics since", lambda: all(d.get("commands_sent") for d in watcher.diag), 10)
        for i in range(2):
            turn = Rotation.from_rotvec(watcher.tcp(i)[3:]) * Rotation.from_rotvec(starts[i][3:]).inv()
            rot_err = turn.magnitude()
            assert rot_err < 0.05, f"arm {i} turned by {rot_err:.3f} rad"
            d = watcher.diag[i]
            assert d["mode"] == "eef" and d["commands_sent"] > 0, d
            assert d["eef"]["unreachable_points"] == 0 and d["counters"]["refused"] == 0, d
        assert all(c.poll() is None for c in ctls)
    finally:
        watcher.close()


def test_mimic_deploy_scores_a_two_gripper_policy_on_two_arms(tmp_path) -> None:
    """`mimic deploy` on a two-gripper policy picks the two-arm session and scores its seeded episodes."""
    results = tmp_path / "results.json"
    base = [sys.executable, "-m", "mimic.cli", "deploy", f"py:{__name__}:TwoArmOffsetPolicy"]
    cmd = [*base, "--arm", "twin:xarm7", "--episodes", "2", "--episode-s", "4", "--results", str(results)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    data = json.loads(results.read_text())
    assert [e["seed"] for e in data["episodes"]] == [100001, 100002], data
    assert data["n"] == 2 and data["success"] == 0  # moving by an offset places no cube
    assert "bimanual_pick_place" in out and "controller mode eef" in out and "success 0/2" in out

    for bad, words in (
        (["--camera-latency-s", "0.1"], "--camera-latency-s: the two-arm twin injects no latency"),
        (
            ["--task", "reach"],
            "--task reach: a two-gripper policy runs the two-arm twin's bimanual_pick_place",
        ),
    ):
        proc = subprocess.run([*base, *bad], capture_output=True, text=True, timeout=120, cwd=REPO)
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
