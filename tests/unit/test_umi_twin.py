"""The handheld twin is the arms' gripper without the arm: same wrist view, same scene draws, same TCP frame."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

import mimic.sim as sim
from mimic.sim.expert import run_expert_episode
from mimic.sim.handheld import HandheldEnv, HandheldExpert


@pytest.mark.parametrize("arm", ["franka", "ur5e", "xarm7"])
def test_wrist_view_matches_the_arm_twin_at_the_same_tcp_pose(arm):
    """What makes handheld demos deployable: at one TCP pose the handheld's wrist image is the arm's."""
    env = sim.make_env("pick_place", arm, seed=0, cameras=("wrist",), image_size=(96, 96))
    expert = sim.make_expert(env)
    obs = env.reset(seed=4)
    for _ in range(15):  # above the cube, fingers down
        obs, *_ = env.step(expert.act(obs))
    hand = HandheldEnv(seed=4, gripper_like=arm)
    hand.reset(seed=4)  # same cube, goal, colour and light draws as the arm twin
    hand._set_tcp(obs["robot0_eef_pos"], env.data.site_xmat[env.tcp_site].reshape(3, 3), teleport=True)
    hand.data.qpos[hand.finger_qpos] = env.data.qpos[env.finger_qpos]
    mujoco.mj_forward(hand.model, hand.data)
    np.testing.assert_allclose(hand.object_state(), obs["object_state"], atol=1e-3)  # cube settled vs spawned
    diff = np.abs(hand.render("wrist", (96, 96)).astype(float) - obs["camera1_rgb"].astype(float))
    # The bottom strip shows the palm and, on an arm, a sliver of its last link (arm-specific, absent in hand)
    above_palm = diff[:66].mean()
    print(f"{arm}: wrist image mean |diff| {diff.mean():.2f} / 255, above the palm {above_palm:.3f}")
    assert above_palm < 0.5 and diff.mean() < 10
    env.close()
    hand.close()


def test_handheld_expert_picks_and_places():
    env = HandheldEnv(seed=0)
    expert = HandheldExpert(env)
    wins = sum(run_expert_episode(env, expert, seed)[0] for seed in range(5))
    env.close()
    assert wins == 5
    with pytest.raises(ValueError, match="expected 7"):
        env.step(np.zeros(8))
