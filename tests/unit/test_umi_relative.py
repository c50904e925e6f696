"""Relative-trajectory representation: exact round trips, frame invariance, WindowDataset items."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from mimic.data.relative import (
    RelativeTrajectory,
    RelativeWindowDataset,
    matrix_to_rot6d,
    pose_to_matrix,
    rot6d_to_matrix,
)


def _trajectory(rng: np.random.Generator, n: int) -> np.ndarray:
    """[n, 7] absolute rows: pos (m), axis-angle (rad, |angle| < pi), gripper width (m)."""
    pos = rng.uniform(-0.8, 0.8, (n, 3))
    aa = Rotation.random(n, random_state=rng.integers(1 << 31)).as_rotvec()
    width = rng.uniform(0, 0.08, (n, 1))
    return np.concatenate([pos, aa, width], axis=1)


def _same_pose(a: np.ndarray, b: np.ndarray) -> None:
    """Rows [pos, aa, ...] describe the same poses (axis-angle is compared as rotations, not numbers)."""
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-9)
    np.testing.assert_allclose(
        pose_to_matrix(a[:, :3], a[:, 3:6]), pose_to_matrix(b[:, :3], b[:, 3:6]), atol=1e-9
    )
    np.testing.assert_allclose(a[:, 6:], b[:, 6:], atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), rotation=st.sampled_from(["rot6d", "axis_angle"]))
def test_actions_round_trip_to_absolute(seed, rotation):
    rng = np.random.default_rng(seed)
    tf = RelativeTrajectory(rotation=rotation)
    traj = _trajectory(rng, 16)
    ref = pose_to_matrix(rng.uniform(-1, 1, 3), Rotation.random(random_state=seed).as_rotvec())
    rel = tf.encode_actions(traj, ref)
    assert rel.shape == (16, tf.action_dim(7))
    _same_pose(tf.decode_actions(rel, ref), traj)


def test_relative_actions_do_not_depend_on_the_world_frame():
    """The point of the representation: the same motion recorded in two base frames encodes identically."""
    rng = np.random.default_rng(1)
    tf = RelativeTrajectory()
    traj = _trajectory(rng, 10)
    obs = {"robot0_eef_pos": traj[:2, :3], "robot0_eef_rot_axis_angle": traj[:2, 3:6]}
    world = pose_to_matrix(np.array([0.3, -1.2, 0.5]), np.array([0.2, -0.4, 1.9]))  # a different base frame
    moved = world @ pose_to_matrix(traj[:, :3], traj[:, 3:6])
    traj2 = np.concatenate(
        [moved[:, :3, 3], Rotation.from_matrix(moved[:, :3, :3]).as_rotvec(), traj[:, 6:]], 1
    )
    obs2 = {"robot0_eef_pos": traj2[:2, :3], "robot0_eef_rot_axis_angle": traj2[:2, 3:6]}
    a1 = tf.encode_actions(traj, tf.reference(obs))
    a2 = tf.encode_actions(traj2, tf.reference(obs2))
    np.testing.assert_allclose(a1, a2, atol=1e-9)
    o1, o2 = tf.encode_obs(obs), tf.encode_obs(obs2)
    for k in obs:
        np.testing.assert_allclose(o1[k], o2[k], atol=1e-9)
    # the newest step is the reference itself: zero translation, identity rotation
    np.testing.assert_allclose(o1["robot0_eef_pos"][-1], 0, atol=1e-12)
    np.testing.assert_allclose(o1["robot0_eef_rot_axis_angle"][-1], [1, 0, 0, 0, 1, 0], atol=1e-12)


def test_rot6d_recovers_rotations_and_repairs_noisy_output():
    rots = Rotation.random(100, random_state=3).as_matrix()
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(rots)), rots, atol=1e-12)
    noisy = matrix_to_rot6d(rots) + np.random.default_rng(0).normal(0, 0.01, (100, 6))
    fixed = rot6d_to_matrix(noisy)
    np.testing.assert_allclose(
        fixed @ np.swapaxes(fixed, 1, 2), np.broadcast_to(np.eye(3), (100, 3, 3)), atol=1e-12
    )
    assert np.allclose(np.linalg.det(fixed), 1.0)


def test_window_item_torch_and_dataset_wrapper():
    rng = np.random.default_rng(2)
    traj = _trajectory(rng, 18)
    img = torch.rand(2, 3, 8, 8)
    items = [
        {
            "obs": {
                "robot0_eef_pos": torch.tensor(traj[i : i + 2, :3], dtype=torch.float32),
                "robot0_eef_rot_axis_angle": torch.tensor(traj[i : i + 2, 3:6], dtype=torch.float32),
                "camera0_rgb": img,
            },
            "action": torch.tensor(traj[i : i + 16], dtype=torch.float32),
        }
        for i in range(3)
    ]
    ds = RelativeWindowDataset(items)
    out = ds[0]
    assert out["action"].shape == (16, 10) and out["action"].dtype == torch.float32
    assert out["obs"]["robot0_eef_rot_axis_angle"].shape == (2, 6)
    assert out["obs"]["camera0_rgb"] is img  # images untouched
    tf = ds.transform
    ref = tf.reference(items[0]["obs"])
    back = tf.decode_actions(out["action"].numpy(), ref)
    np.testing.assert_allclose(back[:, :3], traj[:16, :3], atol=1e-5)  # float32 storage
    norm = ds.get_normalizer({"action": "minmax", "robot0_eef_pos": "meanstd"})
    a = norm.normalize("action", out["action"])
    assert float(a.abs().max()) <= 1.0 + 1e-5
    assert tf.action_dim(7) == 10 and RelativeTrajectory(rotation="axis_angle").action_dim(7) == 7
    assert RelativeTrajectory.from_json(tf.to_json()) == tf


def test_bad_configuration_and_shapes_are_named():
    with pytest.raises(ValueError, match="rotation"):
        RelativeTrajectory(rotation="quat")
    with pytest.raises(ValueError, match="width 4"):
        RelativeTrajectory().encode_actions(np.zeros((3, 4)), np.eye(4))
    with pytest.raises(KeyError, match="robot0_eef_pos"):
        RelativeTrajectory().reference({"robot0_eef_rot_axis_angle": np.zeros((2, 3))})


def test_batches_encode_like_items():
    """mimic.policies.data.WindowBatches gathers [B, T, ...] batches: one call must equal B per-item calls."""
    rng = np.random.default_rng(5)
    items = []
    for _ in range(4):
        traj = _trajectory(rng, 18)
        items.append(
            {
                "obs": {"robot0_eef_pos": traj[:2, :3], "robot0_eef_rot_axis_angle": traj[:2, 3:6]},
                "action": traj[2:],
            }
        )
    batch = {
        "obs": {k: np.stack([it["obs"][k] for it in items]) for k in items[0]["obs"]},
        "action": np.stack([it["action"] for it in items]),
    }
    tf = RelativeTrajectory()
    out = tf.encode_window(batch)
    for i, it in enumerate(items):
        one = tf.encode_window(it)
        np.testing.assert_allclose(out["action"][i], one["action"], atol=1e-12)
        for k in one["obs"]:
            np.testing.assert_allclose(out["obs"][k][i], one["obs"][k], atol=1e-12)
    ref = tf.reference(batch["obs"])
    assert ref.shape == (4, 4, 4)
    _same_pose(tf.decode_actions(out["action"], ref).reshape(-1, 7), batch["action"].reshape(-1, 7))
    tb = {
        "obs": {k: torch.tensor(v, dtype=torch.float32) for k, v in batch["obs"].items()},
        "action": torch.tensor(batch["action"], dtype=torch.float32),
    }
    out_t = tf.encode_window(tb)
    assert out_t["action"].dtype == torch.float32 and out_t["action"].shape == (4, 16, 10)
    np.testing.assert_allclose(out_t["action"].numpy(), out["action"], atol=1e-4)
