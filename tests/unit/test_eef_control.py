"""IK (mimic.robots.ik) and the end-effector chunk mode (mimic.robots.eef_control) on the three arm twins' kinematics."""

from __future__ import annotations

import numpy as np
import pytest

from mimic.robots.eef_control import EefChunkController, poses_to_matrices
from mimic.robots.ik import IKSolver

ARMS = ("franka", "ur5e", "xarm7")


@pytest.fixture(scope="module", params=ARMS)
def ik(request):
    return IKSolver.for_arm(request.param)


def _row(t: np.ndarray, width: float = 0.08) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return np.concatenate([t[:3, 3], Rotation.from_matrix(t[:3, :3]).as_rotvec(), [width]])


def test_ik_recovers_poses_of_random_configurations_within_limits(ik):
    rng = np.random.default_rng(0)
    spec = ik.spec
    solved = 0
    for _ in range(20):
        q_true = spec.home + rng.uniform(-0.4, 0.4, spec.dof)
        q_true = np.clip(q_true, spec.q_min + 0.01, spec.q_max - 0.01)
        target = ik.fk(q_true)
        res = ik.solve(spec.home, target)
        assert np.all(res.q >= spec.q_min) and np.all(res.q <= spec.q_max)
        solved += res.within(1e-4, 1e-3)
    assert solved >= 18, f"{spec.name}: IK reached only {solved}/20 reachable poses"


def test_ik_reports_unreachable_poses_by_residual(ik):
    target = ik.fk(ik.spec.home)
    target[:3, 3] = [1.6, 0.0, 0.3]  # beyond every arm's reach
    res = ik.solve(ik.spec.home, target)
    assert res.pos_err_m > 0.3
    assert np.all(res.q >= ik.spec.q_min) and np.all(res.q <= ik.spec.q_max)


def test_ik_rejects_a_bad_target(ik):
    with pytest.raises(ValueError, match="finite 4x4"):
        ik.solve(ik.spec.home, np.full((4, 4), np.nan))


def _line_chunk(ik: IKSolver, n: int, delta: np.ndarray) -> np.ndarray:
    start = ik.fk(ik.spec.home)
    rows = []
    for s in np.linspace(0, 1, n + 1)[1:]:
        t = start.copy()
        t[:3, 3] += s * delta
        rows.append(_row(t, 0.04))
    return np.array(rows)


def test_chunk_of_tcp_poses_is_tracked_within_limits(ik):
    spec, rate = ik.spec, 100.0
    ctrl = EefChunkController(ik, rate, blend_s=0.0, velocity_scale=0.5)
    ctrl.reset(spec.home, spec.gripper_max, 0.0)
    poses = _line_chunk(ik, 10, np.array([0.05, -0.05, -0.08]))
    assert ctrl.set_chunk(0.01, 0.05, poses, t_now=0.0)
    prev, q = spec.home.copy(), spec.home
    for k in range(1, 80):
        out = ctrl.target(k / rate)
        if out is None:
            break
        q, g = out
        assert np.all(q >= spec.q_min) and np.all(q <= spec.q_max)
        assert np.all(np.abs(q - prev) <= 0.5 * spec.dq_max / rate + 1e-9)
        assert g == pytest.approx(0.04)
        prev = q
    final = ik.fk(q)
    np.testing.assert_allclose(final[:3, 3], poses[-1, :3], atol=2e-3)
    np.testing.assert_allclose(poses_to_matrices(poses[-1:])[0][:3, :3], final[:3, :3], atol=1e-2)
    assert ctrl.eef_counters.unreachable_points == 0


def test_unreachable_point_cuts_the_chunk_and_holds_the_last_reachable_target(ik):
    spec, rate = ik.spec, 50.0
    ctrl = EefChunkController(ik, rate, blend_s=0.0, velocity_scale=1.0)
    ctrl.reset(spec.home, spec.gripper_max, 0.0)
    poses = _line_chunk(ik, 6, np.array([0.0, 0.0, -0.03]))
    poses[3:, 0] = 1.6  # out of reach from the fourth point on
    assert ctrl.set_chunk(0.02, 0.1, poses, t_now=0.0)
    assert ctrl.eef_counters.unreachable_points == 3 and ctrl.eef_counters.unreachable_chunks == 1
    outs = [ctrl.target(k / rate) for k in range(1, 40)]
    held = [o[0] for o in outs if o is not None][-10:]
    np.testing.assert_allclose(ik.fk(held[-1])[:3, 3], poses[2, :3], atol=1e-3)  # the last reachable one
    for q in held[1:]:
        np.testing.assert_allclose(q, held[0])


def test_chunk_starting_unreachable_is_refused_and_the_old_one_kept(ik):
    spec = ik.spec
    ctrl = EefChunkController(ik, 100.0, blend_s=0.0)
    ctrl.reset(spec.home, spec.gripper_max, 0.0)
    good = _line_chunk(ik, 4, np.array([0.02, 0.0, 0.0]))
    assert ctrl.set_chunk(0.0, 0.1, good)
    bad = good.copy()
    bad[:, 0] = 1.6
    assert not ctrl.set_chunk(0.1, 0.1, bad)
    assert ctrl.eef_counters.unreachable_points == 4
    assert ctrl.joint.chunk is not None and ctrl.joint.chunk.t_start == 0.0


@pytest.mark.parametrize("poses", [np.zeros((3, 6)), np.full((2, 7), np.nan), np.zeros((0, 7))])
def test_malformed_chunks_are_refused_and_counted(poses):
    ik = IKSolver.for_arm("xarm7")
    ctrl = EefChunkController(ik, 100.0)
    ctrl.reset(ik.spec.home, 0.0, 0.0)
    assert not ctrl.set_chunk(0.0, 0.1, poses)
    assert ctrl.counters.refused == 1


def test_controller_needs_reset_first():
    ik = IKSolver.for_arm("franka")
    with pytest.raises(RuntimeError, match="reset"):
        EefChunkController(ik, 100.0).set_chunk(0.0, 0.1, _line_chunk(ik, 2, np.zeros(3)))
