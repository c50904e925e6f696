"""The two-arm twin and the two-gripper handheld twin of bimanual_pick_place: one seed one scene, experts succeed,
bad actions refused, arm episodes starting at demo-like TCP poses."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mimic.sim.bimanual import (
    BimanualArmExpert,
    BimanualHandheldEnv,
    BimanualHandheldExpert,
    BimanualTwinArms,
    BimanualTwinEnv,
    run_expert,
    start_tcp_rows,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def envs():
    arms, hands = (
        BimanualTwinEnv("xarm7"),
        BimanualHandheldEnv(cameras=("camera0_rgb", "camera1_rgb"), image_size=(32, 40)),
    )
    yield arms, hands
    arms.close()
    hands.close()


def test_same_seed_same_scene_on_both_twins(envs):
    arms, hands = envs
    a, h = arms.reset(seed=7), hands.reset(seed=7)
    np.testing.assert_array_equal(a["object_state"], h["object_state"])
    s = a["object_state"]
    assert s.shape == (20,) and s[1] < 0 < s[11]  # robot0's cube on its side (y < 0), robot1's on the other
    assert h["camera0_rgb"].shape == (32, 40, 3) and not np.array_equal(h["camera0_rgb"], h["camera1_rgb"])
    assert not arms.success() and not hands.success()


@pytest.mark.parametrize("which", ["arms", "hands"])
def test_experts_place_both_cubes(envs, which):
    arms, hands = envs
    env = arms if which == "arms" else hands
    expert = BimanualArmExpert(arms) if which == "arms" else BimanualHandheldExpert(hands)
    for seed in range(3):
        ok, steps = run_expert(env, expert, seed)
        assert ok, f"{which} seed {seed}: failed after {steps} steps"
    if which == "arms":
        assert arms.velocity_clips == 0  # the expert stays within what a driver accepts


def test_bad_actions_are_refused(envs):
    arms, hands = envs
    arms.reset(seed=0)
    hands.reset(seed=0)
    with pytest.raises(ValueError, match="expected 16"):
        arms.step(np.zeros(8))
    with pytest.raises(ValueError, match="NaN"):
        arms.step(np.full(16, np.nan))
    with pytest.raises(ValueError, match="14 finite"):
        hands.step(np.zeros(7))


def test_two_arm_twin_starts_each_episode_at_the_demo_like_tcp_poses():
    twin = BimanualTwinArms("xarm7", seed=11, start="handheld")
    try:
        for seed in (11, 12):
            twin.disconnect()
            twin.seed = seed
            twin.connect()
            with twin._lock:
                obs = twin.env._obs()
            for i, row in enumerate(start_tcp_rows(seed)):
                assert np.linalg.norm(obs[f"robot{i}_eef_pos"] - row[:3]) < 1e-3
                turn = (
                    Rotation.from_rotvec(obs[f"robot{i}_eef_rot_axis_angle"])
                    * Rotation.from_rotvec(row[3:]).inv()
                )
                assert turn.magnitude() < 1e-2
        assert start_tcp_rows(11)[0][0] != start_tcp_rows(12)[0][0]  # a new draw per episode
    finally:
        twin.disconnect()
    with pytest.raises(ValueError, match="start 'sideways'"):
        BimanualTwinArms("xarm7", start="sideways")


def test_person_like_approach_hovers_beside_the_cube_and_grasps_it_exactly(envs):
    _, hands = envs
    expert = BimanualHandheldExpert(hands, approach_error_m=0.03)
    obs = hands.reset(seed=4)
    expert.reset(4)
    offsets = [e.approach_offset.copy() for e in expert.experts]
    assert all(0.015 - 1e-9 <= np.linalg.norm(o) <= 0.03 + 1e-9 and o[2] == 0 for o in offsets)
    hover_gap, grasp_gap = [0.0, 0.0], [None, None]
    for _ in range(hands.max_steps):
        obs, _, term, trunc, info = hands.step(expert.act(obs))
        for i, e in enumerate(expert.experts):
            tcp, cube = obs[f"robot{i}_eef_pos"], obs["object_state"][10 * i : 10 * i + 3]
            gap = float(np.linalg.norm((tcp - cube)[:2]))
            if e._plan.phase == 0:
                hover_gap[i] = gap  # the last one: where the hover ends
            if e._plan.phase == 2 and grasp_gap[i] is None:
                grasp_gap[i] = gap  # when the fingers start to close
        if term or trunc:
            break
    assert info["success"]
    for i in range(2):
        assert abs(hover_gap[i] - np.linalg.norm(offsets[i])) < 0.004, (hover_gap, offsets)
        assert grasp_gap[i] is not None and grasp_gap[i] < 0.002, grasp_gap
    expert.reset(4)
    assert all(np.array_equal(e.approach_offset, o) for e, o in zip(expert.experts, offsets, strict=True))
    with pytest.raises(ValueError, match="approach_error_m"):
        BimanualHandheldExpert(hands, approach_error_m=-0.01)


def test_a_lagging_rig_covers_the_first_order_fraction_of_each_step():
    """tracking_lag_s: each period a hand goes 1 - exp(-dt / lag) of the way to a held row, in position and
    rotation alike; with 0 it reaches the row within the period."""
    lag = 0.2
    for tracking_lag_s, frac in ((lag, 1.0 - np.exp(-0.1 / lag)), (0.0, 1.0)):
        env = BimanualHandheldEnv(cameras=(), tracking_lag_s=tracking_lag_s)
        try:
            obs = env.reset(seed=3)
            here = [np.r_[obs[f"robot{i}_eef_pos"], obs[f"robot{i}_eef_rot_axis_angle"]] for i in range(2)]
            turn = Rotation.from_euler("z", 0.3)
            rows = [
                np.r_[h[:3] + [0.0, 0.0, -0.05], (turn * Rotation.from_rotvec(h[3:6])).as_rotvec(), 0.08]
                for h in here
            ]
            for _ in range(2):  # two periods towards the same row
                obs, *_ = env.step(np.concatenate(rows))
            covered = 1.0 - (1.0 - frac) ** 2
            for i, h in enumerate(here):
                assert obs[f"robot{i}_eef_pos"][2] - h[2] == pytest.approx(-0.05 * covered, abs=2e-3)
                angle = (
                    Rotation.from_rotvec(obs[f"robot{i}_eef_rot_axis_angle"])
                    * Rotation.from_rotvec(h[3:6]).inv()
                ).magnitude()
                assert angle == pytest.approx(0.3 * covered, abs=0.02)
        finally:
            env.close()
    with pytest.raises(ValueError, match="tracking_lag_s"):
        BimanualHandheldEnv(cameras=(), tracking_lag_s=-0.1)


def test_a_rig_through_an_arms_ik_goes_where_the_arm_can_and_holds_where_it_cannot():
    """ik_arm: a reachable row is executed as the pose the arm's IK reaches (within the controller's acceptance);
    a row out of the arm's reach leaves the hand at its last reachable pose."""
    env = BimanualHandheldEnv(cameras=(), ik_arm="xarm7")
    try:
        obs = env.reset(seed=3)
        here = [np.r_[obs[f"robot{i}_eef_pos"], obs[f"robot{i}_eef_rot_axis_angle"], 0.08] for i in range(2)]
        near = [h + np.r_[0.0, 0.0, -0.02, 0, 0, 0, 0] for h in here]
        obs, *_ = env.step(np.concatenate(near))
        reached = [obs[f"robot{i}_eef_pos"].copy() for i in range(2)]
        for i in range(2):
            assert np.linalg.norm(reached[i] - near[i][:3]) < 0.006
        far = [np.r_[2.0, 0.0, 0.2, h[3:]] for h in near]  # 2 m out: beyond either arm
        obs, *_ = env.step(np.concatenate(far))
        for i in range(2):
            assert np.linalg.norm(obs[f"robot{i}_eef_pos"] - reached[i]) < 0.003
    finally:
        env.close()
