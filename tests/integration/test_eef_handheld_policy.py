"""Handheld demos -> end-effector policy -> the arm twins through IK: the mechanics, end to end.

The long success measurement (a properly trained policy, 50 rollouts per arm) is a run reported in the
issue, not a test; here: recording with the object tracker, the deployment path replaying the demos
through the same rollout/IK/Limiter code the policy uses, a tiny training run through the CLI, the
policy's frame-freeness, and the evaluation CLI with its JSON, PNG and MP4.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mimic.data.dataset import ReplayDataset
from mimic.data.relative import RelativeTrajectory, pose_to_matrix
from mimic.policies.checkpoint import action_space, load_deployable
from mimic.robots.eef_control import EefChunkController
from mimic.robots.gripper import grasp_command
from mimic.robots.ik import IKSolver
from mimic.workflows.evaluate_eef import rollout_eef
from mimic.workflows.record import record_handheld

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "policies" / "configs" / "handheld_pick_place_eef.yaml"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("eef") / "handheld.zarr"
    record_handheld(path, 3, seed=40, progress=False)
    return path


class ReplayOracle:
    """A stand-in policy with the EefPolicy interface that predicts the recorded demo's chunks, relative to
    the demo's pose and decoded at the arm's measured TCP (what a perfectly trained policy would output)."""

    obs_keys = ("robot0_eef_pos", "robot0_eef_rot_axis_angle", "robot0_gripper_width", "object_state")
    n_obs_steps, horizon, n_action_steps, gripper_max = 2, 16, 8, 0.08

    def __init__(self, actions: np.ndarray) -> None:
        self.actions, self.i, self.tf = actions, 0, RelativeTrajectory()

    def reset(self) -> None:
        self.i = 0

    def predict(self, window, num_inference_steps=None):
        a, i = self.actions, min(self.i, len(self.actions) - 1)
        self.i += self.n_action_steps
        rows = np.clip(np.arange(i - 1, i - 1 + self.horizon), 0, len(a) - 1)
        rel = self.tf.encode_actions(a[rows], pose_to_matrix(a[i, :3], a[i, 3:6]))
        here = pose_to_matrix(window["robot0_eef_pos"][-1], window["robot0_eef_rot_axis_angle"][-1])
        rows = self.tf.decode_actions(rel, here)
        rows[:, 6] = grasp_command(rows[:, 6], self.gripper_max)  # as EefPolicy.predict does
        return rows


def test_store_has_object_state_from_the_tracker(store):
    ds = ReplayDataset(store)
    assert ds.attrs["robot"] == "handheld" and ds.n_episodes == 3
    assert ds.array("object_state").shape == (ds.n_steps, 10)
    ep = ds.episode(0)
    cube0, goal = ep["object_state"][0, :3], ep["object_state"][0, 7:10]
    np.testing.assert_allclose(ep["object_state"][:, 7:10], np.tile(goal, (len(ep["action"]), 1)))
    assert np.linalg.norm(ep["object_state"][-1, :2] - goal[:2]) < 0.03  # the cube ended on the goal
    assert np.linalg.norm(cube0[:2] - goal[:2]) > 0.05
    assert np.all(np.abs(ep["object_state_t"] - ep["timestamp"]) <= 0.06)


@pytest.mark.parametrize("arm", ["franka", "ur5e", "xarm7"])
def test_deployment_path_replays_handheld_demos_to_success(store, arm):
    import mimic.sim as sim

    ds = ReplayDataset(store)
    env = sim.make_env("pick_place", arm, cameras=())
    ctrl = EefChunkController(IKSolver(env.model, env.spec), env.control_hz, blend_s=0.0, velocity_scale=0.8)
    wins = 0
    for e, seed in enumerate(ds.attrs["expert_seeds"]):
        actions = ds.episode(e)["action"]
        ok, _, _, _ = rollout_eef(ReplayOracle(actions), env, ctrl, int(seed), start=actions[0])
        wins += ok
    env.close()
    assert wins == ds.n_episodes, f"{arm}: {wins}/{ds.n_episodes}"
    assert ctrl.eef_counters.unreachable_points == 0
    assert ctrl.eef_counters.max_pos_err_m < 1e-3


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("eef_run")
    sets = [
        f"dataset={store}",
        f"run_dir={run}",
        "steps=12",
        "batch_size=16",
        "log_every=6",
        "val_every=12",
        "ckpt_every=12",
        "policy.unet.down_dims=[16,32]",
        "policy.gen.num_inference_steps=2",
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mimic.cli",
            "train",
            str(CONFIG),
            "--no-progress",
            *[a for s in sets for a in ("--set", s)],
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert (run / "metrics.csv").read_text().count("\n") >= 3
    return run / "checkpoint"


def test_trained_policy_predicts_absolute_tcp_chunks_independent_of_the_base_frame(checkpoint, store):
    torch.set_num_threads(1)
    assert action_space(checkpoint) == "eef"
    policy = load_deployable(checkpoint)
    assert policy.action_space == "eef"
    assert (policy.n_obs_steps, policy.horizon, policy.action_dim) == (2, 16, 7)
    ep = ReplayDataset(store).episode(0)
    window = {k: ep[k][10:12] for k in policy.obs_keys}
    policy.seed(0)
    chunk = policy.predict(window)
    assert chunk.shape == (16, 7) and np.all(np.isfinite(chunk))
    # The same scene seen from a base rotated 90 deg about z and shifted: the chunk moves with it.
    from scipy.spatial.transform import Rotation

    r, shift = Rotation.from_euler("z", np.pi / 2), np.array([0.2, -0.1, 0.05])
    moved = dict(window)
    moved["robot0_eef_pos"] = r.apply(window["robot0_eef_pos"]) + shift
    moved["robot0_eef_rot_axis_angle"] = (
        r * Rotation.from_rotvec(window["robot0_eef_rot_axis_angle"])
    ).as_rotvec()
    obj = window["object_state"].copy()
    obj[:, :3], obj[:, 7:10] = r.apply(obj[:, :3]) + shift, r.apply(obj[:, 7:10]) + shift
    obj[:, 3:7] = (r * Rotation.from_quat(obj[:, 3:7], scalar_first=True)).as_quat(scalar_first=True)
    moved["object_state"] = obj
    policy.seed(0)
    chunk_moved = policy.predict(moved)
    np.testing.assert_allclose(chunk_moved[:, :3], r.apply(chunk[:, :3]) + shift, atol=1e-4)
    np.testing.assert_allclose(
        (r * Rotation.from_rotvec(chunk[:, 3:6])).as_matrix(),
        Rotation.from_rotvec(chunk_moved[:, 3:6]).as_matrix(),
        atol=1e-4,
    )


def test_mimic_eval_runs_an_eef_checkpoint_on_every_arm_twin(checkpoint, tmp_path, capsys):
    from mimic.workflows.evaluate import main  # in-process: the CLI's code path without another torch import

    rc = main(
        [
            str(checkpoint),
            "--arm",
            "all",
            "--episodes",
            "1",
            "--video-dir",
            str(tmp_path / "vid"),
            "--videos",
            "1",
            "--json",
            str(tmp_path / "res.json"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert [line.split(":")[0] for line in out.splitlines() if "success" in line] == [
        "franka/pick_place",
        "ur5e/pick_place",
        "xarm7/pick_place",
    ]
    results = json.loads((tmp_path / "res.json").read_text())
    assert [r["arm"] for r in results] == ["franka", "ur5e", "xarm7"]
    for res in results:
        assert res["episodes"] == 1 and len(res["outcomes"]) == 1
        assert 0.0 <= res["ci_low"] <= res["ci_high"] <= 1.0
    assert (tmp_path / "res.png").stat().st_size > 0
    assert len(list((tmp_path / "vid").glob("*.mp4"))) == 3


def test_mimic_eval_refuses_a_directory_that_is_no_checkpoint_in_one_line(tmp_path, capsys):
    from mimic.workflows.evaluate import main

    (tmp_path / "ckpt").mkdir()
    assert main([str(tmp_path / "ckpt"), "--arm", "franka"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mimic eval:") and len(err.strip().splitlines()) == 1 and "missing" in err
