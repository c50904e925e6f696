"""The lab look on the task envs: same episodes as the plain twin, a lit scene instead of a black void, and
camera effects that are off by default and reproducible per seed when on."""

import numpy as np
import pytest

from mimic.sim import Randomization, make_env, make_expert
from mimic.sim.expert import run_expert_episode
from mimic.sim.mjcf import LAB, LAB_SHADOWS, PLAIN

EFFECTS = Randomization(exposure_ev=0.5, gamma=0.2, color_jitter=0.1, blur_px=1.0, noise_std=4.0)


@pytest.mark.parametrize("arm", ["franka", "ur5e", "xarm7"])
def test_expert_episode_is_bit_identical_in_plain_and_lab_looks(arm):
    finals = []
    for look in (PLAIN, LAB):
        env = make_env("pick_place", arm, cameras=(), look=look)
        ok, steps = run_expert_episode(env, make_expert(env), seed=3)
        finals.append((ok, steps, env.data.qpos.copy()))
        env.close()
    assert finals[0][:2] == finals[1][:2] and finals[0][0]
    np.testing.assert_array_equal(finals[0][2], finals[1][2])


def test_lab_scene_has_no_black_void_and_differs_from_plain():
    images = {}
    for look in (PLAIN, LAB, LAB_SHADOWS):
        env = make_env("pick_place", "franka", cameras=("scene",), image_size=(96, 96), look=look)
        images[look.name] = env.reset(seed=0)["camera0_rgb"]
        env.close()
    black = (images["plain"].max(axis=2) < 10).mean()
    assert black > 0.1  # the plain scene's void
    assert (images["lab"].max(axis=2) < 10).mean() < 0.01
    assert np.abs(images["lab"].astype(int) - images["plain"]).mean() > 10
    assert np.abs(images["lab-shadows"].astype(int) - images["lab"]).max() > 30  # the arm's shadow


def test_camera_effects_are_off_by_default_and_reproducible_per_seed_when_on():
    def first_obs(randomization, seed):
        env = make_env(
            "push_t", "franka", cameras=("scene", "wrist"), image_size=(48, 48), randomization=randomization
        )
        obs = env.reset(seed=seed)
        obs2 = env.step(np.r_[obs["robot0_joint_pos"], 0.0])[0]
        env.close()
        return obs, obs2

    clean, clean2 = first_obs(Randomization(), 1)
    a, a2 = first_obs(EFFECTS, 1)
    b, _ = first_obs(EFFECTS, 2)
    again, again2 = first_obs(EFFECTS, 1)
    np.testing.assert_array_equal(a["object_state"], clean["object_state"])  # effects draw after the scene
    for key in ("camera0_rgb", "camera1_rgb"):
        np.testing.assert_array_equal(a[key], again[key])
        np.testing.assert_array_equal(a2[key], again2[key])
        assert np.abs(a[key].astype(int) - clean[key]).mean() > 2
        assert np.abs(a[key].astype(int) - b[key]).mean() > 2
    assert not np.array_equal(a2["camera0_rgb"], a["camera0_rgb"])  # fresh noise every frame


def test_bad_camera_effect_knob_is_a_one_line_error():
    with pytest.raises(ValueError, match="Randomization.noise_std must be >= 0"):
        Randomization(noise_std=-1.0)
    with pytest.raises(ValueError, match="Randomization.gamma must be < 1"):
        Randomization(gamma=1.5)
