"""The twin's MJCF is the spec's DH table: MuJoCo's flange pose equals forward_kinematics everywhere."""

import mujoco
import numpy as np
import pytest

from mimic.robots.kinematics import forward_kinematics
from mimic.robots.specs import ARM_NAMES, get_spec
from mimic.sim.mjcf import build_model


@pytest.mark.parametrize("name", ARM_NAMES)
def test_mujoco_flange_matches_dh_fk_at_1000_configs(name):
    spec = get_spec(name)
    m = build_model(spec)
    d = mujoco.MjData(m)
    site, base = m.site("flange").id, m.body("base").id
    rng = np.random.default_rng(0)
    worst_m = worst_rad = 0.0
    for _ in range(1000):
        q = rng.uniform(spec.q_min, spec.q_max)
        d.qpos[: spec.dof] = q
        mujoco.mj_kinematics(m, d)
        rb = d.xmat[base].reshape(3, 3)
        p = rb.T @ (d.site_xpos[site] - d.xpos[base])
        r = rb.T @ d.site_xmat[site].reshape(3, 3)
        t = forward_kinematics(spec, q)
        e = r.T @ t[:3, :3]  # rotation between the two; its angle from the skew part (exact near zero)
        angle = np.arctan2(
            np.linalg.norm([e[2, 1] - e[1, 2], e[0, 2] - e[2, 0], e[1, 0] - e[0, 1]]) / 2,
            (np.trace(e) - 1) / 2,
        )
        worst_m = max(worst_m, float(np.linalg.norm(p - t[:3, 3])))
        worst_rad = max(worst_rad, float(angle))
    assert worst_m < 1e-6 and worst_rad < 1e-6, (worst_m, worst_rad)


def test_published_reference_poses():
    # Franka's documented home flange position and UR5e's zero pose from UR's DH sheet.
    franka = get_spec("franka")
    np.testing.assert_allclose(
        forward_kinematics(franka, franka.home)[:3, 3], [0.3069, 0.0, 0.5903], atol=1e-3
    )
    ur = get_spec("ur5e")
    np.testing.assert_allclose(
        forward_kinematics(ur, np.zeros(6))[:3, 3], [-0.8172, -0.2329, 0.0628], atol=1e-4
    )


@pytest.mark.parametrize("name", ARM_NAMES)
def test_spec_is_consistent(name):
    s = get_spec(name)
    assert len(s.dh) == s.dof == len(s.q_min) == len(s.dq_max)
    assert np.all(s.q_min < s.q_max) and np.all(s.dq_max > 0)
    assert np.all((s.home >= s.q_min) & (s.home <= s.q_max))
    assert s.source


def test_unknown_arm_is_one_line_error():
    with pytest.raises(ValueError, match="unknown arm 'kuka'"):
        get_spec("kuka")
