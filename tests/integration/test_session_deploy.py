"""`mimic deploy` through the ROS deploy session on the Franka twin (separate processes, injected latency).

The policy is scripted: it implements the Policy contract (obs_keys, horizons, control_hz, predict, reset)
with the twin's pick-place expert run on the observation window the policy node builds from
/robot/joint_states and /objects/state, so the test needs no trained checkpoint. Everything around it is
real: supervisor, arm node (twin, 150 ms camera / 100 ms command latency), chunk controller, policy node,
evaluator, the rollout recorder, and the success check of the twin task.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import mujoco
import numpy as np

from mimic.data.validate import validate

ARM, TASK = "franka", "pick_place"


class ExpertPolicy:
    """Scripted stand-in for a checkpoint: the twin's expert, rolled forward open-loop over the horizon."""

    obs_keys = ("robot0_joint_pos", "robot0_gripper_width", "object_state")
    n_obs_steps, horizon, n_action_steps, control_hz = 1, 8, 2, 10.0

    def __init__(self) -> None:
        from mimic.sim import make_env, make_expert

        self.env = make_env(TASK, ARM, seed=0, cameras=())
        self.action_dim = self.env.spec.dof + 1
        self.expert = make_expert(self.env)
        self.data = mujoco.MjData(self.env.model)

    def reset(self) -> None:
        self.expert.reset()

    def _obs(self, q: np.ndarray, gripper: np.ndarray, objects: np.ndarray) -> dict[str, np.ndarray]:
        self.data.qpos[self.env.arm_qpos] = q
        mujoco.mj_kinematics(self.env.model, self.data)
        return {
            "robot0_joint_pos": q,
            "robot0_gripper_width": gripper,
            "object_state": objects,
            "robot0_eef_pos": self.data.site_xpos[self.env.tcp_site].copy(),
        }

    def predict(self, obs_window: dict[str, np.ndarray], num_inference_steps=None) -> np.ndarray:
        q, g = obs_window["robot0_joint_pos"][-1], obs_window["robot0_gripper_width"][-1]
        objects = obs_window["object_state"][-1]
        rows, expert = [], self.expert
        for i in range(self.horizon):
            if (
                i == self.n_action_steps
            ):  # rows past the replan point: look ahead without advancing the expert
                expert = copy.deepcopy(self.expert)
            rows.append(expert.act(self._obs(q, g, objects)))
            q = rows[-1][:-1]  # open loop: assume the arm tracks the previous row
        return np.stack(rows)


def test_mimic_deploy_runs_episodes_and_scores_the_twin_task(tmp_path) -> None:
    results = tmp_path / "results.json"
    cmd = [
        sys.executable,
        "-m",
        "mimic.cli",
        "deploy",
        f"py:{__name__}:ExpertPolicy",
        "--arm",
        f"twin:{ARM}",
        "--task",
        TASK,
        "--episodes",
        "2",
        "--episode-s",
        "25",
        "--cameras",
        "scene",
        "--results",
        str(results),
        "--record",
        str(tmp_path / "rollouts.zarr"),
        "--set",
        "arm.camera_rate_hz=10",
        "--set",
        "controller.rate_hz=250",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    data = json.loads(results.read_text())
    assert data["n"] == 2 and len(data["episodes"]) == 2
    assert [e["seed"] for e in data["episodes"]] == [100_001, 100_002]
    assert "success " in out and "matching on" in out
    print(out[-800:])
    assert data["success"] >= 1, out[-3000:]
    # the optional recorder keeps each rollout it could record (one stalled at its very start has no rows
    # to commit on a starved machine, and the evaluator reports it as not recorded)
    rollouts, _ = validate(tmp_path / "rollouts.zarr")
    recorded = [e["recorded_steps"] for e in data["episodes"] if e["recorded_steps"]]
    assert rollouts.n_episodes == len(recorded) >= 1
    assert rollouts.attrs["latencies"] == {"camera_s": 0.15, "arm_s": 0.1}
