"""Handheld demos are deployable: relative chunks replayed on the Franka, UR5e and xArm7 twins through IK.

This is the open-loop half of what a policy trained on the handheld data must do on an arm: each chunk of
8 recorded actions is made relative to the recorded pose at the chunk start (mimic.data.relative), re-anchored
at the arm's *measured* TCP pose, solved by DLS IK (mimic.sim.expert) and executed. The arm first moves to
where the person started, as a deployment starts from a similar pose. Success means the data's TCP
frame, world frame, rotation convention, relative transform and gripper widths all transfer.
"""

from __future__ import annotations

import numpy as np
import pytest

import mimic.sim as sim
from mimic.data.dataset import ReplayDataset
from mimic.data.relative import RelativeTrajectory, pose_to_matrix
from mimic.robots.gripper import grasp_command
from mimic.teleop.handheld import record_twin

CHUNK = 8


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    path = tmp_path_factory.mktemp("umi") / "handheld.zarr"
    record_twin(path, 3, seed=20, progress=False)
    return ReplayDataset(path)


def _replay(env, expert, actions: np.ndarray, gripper_max: float) -> bool:
    tf = RelativeTrajectory()
    lim = 0.8 * env.spec.dq_max / env.control_hz
    q = env.data.qpos[env.arm_qpos].copy()
    start = pose_to_matrix(actions[0, :3], actions[0, 3:6])
    obs = None
    for _ in range(25):  # to where the person started
        q = q + np.clip(expert.ik(q, start[:3, 3], start[:3, :3]) - q, -lim, lim)
        obs, *_ = env.step(np.concatenate([q, [actions[0, 6]]]))
    n = len(actions)
    for t in range(n + 10):
        if t % CHUNK == 0:
            i = min(t, n - 2)
            rel = tf.encode_actions(
                actions[i + 1 : i + 1 + CHUNK], pose_to_matrix(actions[i, :3], actions[i, 3:6])
            )
            here = pose_to_matrix(obs["robot0_eef_pos"], obs["robot0_eef_rot_axis_angle"])
            chunk = tf.decode_actions(rel, here)  # row k: the pose k+1 steps after the chunk start
        a = chunk[min(t % CHUNK, len(chunk) - 1)]
        target = pose_to_matrix(a[:3], a[3:6])
        q = q + np.clip(expert.ik(q, target[:3, 3], target[:3, :3]) - q, -lim, lim)
        obs, _, done, _, _ = env.step(np.concatenate([q, [float(grasp_command(a[6], gripper_max))]]))
        if done:
            return True
    return False


@pytest.mark.parametrize("arm", ["franka", "ur5e", "xarm7"])
def test_relative_replay_of_handheld_demos_succeeds_on_each_arm(demos, arm):
    env = sim.make_env("pick_place", arm, cameras=())
    expert = sim.make_expert(env)
    wins = 0
    for e in range(demos.n_episodes):
        env.reset(seed=int(demos.attrs["expert_seeds"][e]))  # the same cube and goal the person saw
        wins += _replay(env, expert, demos.episode(e)["action"], float(demos.attrs["gripper_max"]))
    env.close()
    print(f"{arm}: {wins}/{demos.n_episodes} handheld demos replayed to success")
    assert wins == demos.n_episodes


def test_grasp_command():
    np.testing.assert_allclose(
        grasp_command([0.038, 0.059, 0.061, 0.08, 0.09], 0.08), [0, 0, 0.061, 0.08, 0.08]
    )
