"""mimic.policies.eef_relative's frame-free features: what the network sees must not depend on where the arm's base is."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mimic.data.relative import pose_to_matrix
from mimic.policies.eef_relative import RAW_OBS_KEYS, EefFeatures, object_features


def _rz(a: float) -> np.ndarray:
    return Rotation.from_euler("z", a).as_matrix()


def _window(rng: np.random.Generator, n: int = 2) -> dict[str, np.ndarray]:
    down = np.diag([1.0, -1.0, -1.0])
    rots = [_rz(rng.uniform(-0.5, 0.5)) @ down for _ in range(n)]
    yaw = rng.uniform(-0.7, 0.7)
    cube_q = [np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
    obj = np.r_[rng.uniform([0.4, -0.1, 0.02], [0.6, 0.1, 0.02]), cube_q, rng.uniform(0.4, 0.5, 3)]
    return {
        "robot0_eef_pos": rng.uniform([0.3, -0.1, 0.1], [0.5, 0.1, 0.3], (n, 3)),
        "robot0_eef_rot_axis_angle": Rotation.from_matrix(np.stack(rots)).as_rotvec(),
        "robot0_gripper_width": rng.uniform(0, 0.08, (n, 1)),
        "object_state": np.tile(obj, (n, 1)),
    }


def _moved(w: dict[str, np.ndarray], yaw: float, shift: np.ndarray) -> dict[str, np.ndarray]:
    """The same scene seen from a base frame rotated by `yaw` about z and shifted (another arm's base)."""
    r = _rz(yaw)
    q = Rotation.from_euler("z", yaw).as_quat(scalar_first=True)
    obj = w["object_state"].copy()
    obj[:, 0:3] = obj[:, 0:3] @ r.T + shift
    obj[:, 7:10] = obj[:, 7:10] @ r.T + shift
    cube = Rotation.from_quat(obj[:, 3:7], scalar_first=True)
    obj[:, 3:7] = (Rotation.from_quat(q, scalar_first=True) * cube).as_quat(scalar_first=True)
    rot = Rotation.from_matrix(r) * Rotation.from_rotvec(w["robot0_eef_rot_axis_angle"])
    return {
        **w,
        "robot0_eef_pos": w["robot0_eef_pos"] @ r.T + shift,
        "robot0_eef_rot_axis_angle": rot.as_rotvec(),
        "object_state": obj,
    }


def test_features_are_invariant_to_the_base_frame():
    rng = np.random.default_rng(0)
    f = EefFeatures()
    for _ in range(5):
        w = _window(rng)
        a, _ = f.encode_obs(w)
        b, _ = f.encode_obs(_moved(w, rng.uniform(-np.pi, np.pi), rng.uniform(-1, 1, 3)))
        for k in a:
            np.testing.assert_allclose(a[k], b[k], atol=1e-9, err_msg=k)


def test_newest_pose_is_identity_and_cube_yaw_has_quarter_turn_symmetry():
    rng = np.random.default_rng(1)
    w = _window(rng)
    inner, ref = EefFeatures().encode_obs(w)
    np.testing.assert_allclose(inner["robot0_eef_pos"][-1], 0, atol=1e-12)
    np.testing.assert_allclose(inner["robot0_eef_rot_axis_angle"][-1], [1, 0, 0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(
        ref, pose_to_matrix(w["robot0_eef_pos"][-1], w["robot0_eef_rot_axis_angle"][-1])
    )
    turned = w["object_state"].copy()
    turned[:, 3:7] = (
        Rotation.from_euler("z", np.pi / 2) * Rotation.from_quat(turned[:, 3:7], scalar_first=True)
    ).as_quat(scalar_first=True)
    np.testing.assert_allclose(
        object_features(turned, ref), object_features(w["object_state"], ref), atol=1e-9
    )


def test_cube_position_is_expressed_in_the_tcp_frame():
    ref = np.eye(4)
    ref[:3, :3] = np.diag([1.0, -1.0, -1.0])  # pointing down
    ref[:3, 3] = [0.5, 0.0, 0.3]
    state = np.r_[0.55, 0.02, 0.02, 1, 0, 0, 0, 0.4, 0.1, 0.001][None]
    feat = object_features(state, ref)[0]
    np.testing.assert_allclose(feat[:3], [0.05, -0.02, 0.28], atol=1e-12)  # cube 28 cm "ahead" along tcp z
    np.testing.assert_allclose(feat[3:6], [-0.1, -0.1, 0.299], atol=1e-12)


def test_batch_encoding_equals_per_window_encoding():
    rng = np.random.default_rng(2)
    f = EefFeatures()
    windows = [_window(rng) for _ in range(4)]
    actions = [
        np.column_stack(
            [
                rng.uniform(0.3, 0.5, (16, 3)),
                np.tile(w["robot0_eef_rot_axis_angle"][-1], (16, 1)),
                rng.uniform(0, 0.08, 16),
            ]
        )
        for w in windows
    ]
    batch = f.encode_batch(
        {"obs": {k: np.stack([w[k] for w in windows]) for k in RAW_OBS_KEYS}, "action": np.stack(actions)}
    )
    for i, (w, a) in enumerate(zip(windows, actions, strict=True)):
        inner, ref = f.encode_obs(w)
        for k, v in inner.items():
            np.testing.assert_allclose(batch["obs"][k][i].numpy(), v, atol=1e-5, err_msg=k)
        np.testing.assert_allclose(batch["action"][i].numpy(), f.relative.encode_actions(a, ref), atol=1e-5)
        back = f.relative.decode_actions(batch["action"][i].numpy(), ref)
        np.testing.assert_allclose(
            pose_to_matrix(back[:, :3], back[:, 3:6]), pose_to_matrix(a[:, :3], a[:, 3:6]), atol=1e-4
        )  # axis-angle near pi may come back with the other sign
        np.testing.assert_allclose(back[:, 6], a[:, 6], atol=1e-6)


def test_missing_pose_key_names_it():
    w = _window(np.random.default_rng(3))
    del w["robot0_eef_pos"]
    with pytest.raises(KeyError, match="robot0_eef_pos"):
        EefFeatures().encode_obs(w)


def test_object_tracker_stream_is_checked_and_aligned(tmp_path):
    from mimic.data.dataset import ReplayDataset
    from mimic.workflows.record import ObjectTrackedCapture

    cap = ObjectTrackedCapture.create(tmp_path / "h.zarr")
    with pytest.raises(RuntimeError, match="outside an episode"):
        cap.on_objects(0.0, np.zeros(10))
    cap.begin_episode()
    with pytest.raises(ValueError, match="object_state must be 10 finite values"):
        cap.on_objects(0.0, np.zeros(7))
    img = np.zeros((96, 96, 3), np.uint8)
    for k in range(31):  # 3 s: pose/width at 100 Hz, camera at 30 Hz, objects at 10 Hz
        t = k * 0.1
        cap.on_objects(t, np.r_[0.5 + t, np.zeros(9)])
        for j in range(10):
            cap.on_pose(t + j * 0.01, [0.4, 0.0, 0.2], [0.0, 1.0, 0.0, 0.0])
            cap.on_gripper(t + j * 0.01, 0.08)
        for j in range(3):
            cap.on_frame(t + j / 30, img)
    assert cap.end_episode() > 20
    cap.close()
    ds = ReplayDataset(tmp_path / "h.zarr")
    ep = ds.episode(0)
    np.testing.assert_allclose(ep["object_state"][:, 0], 0.5 + ep["timestamp"], atol=1e-9)  # interpolated


class _TiltFreeBatches:
    """EefBatches' normaliser over windows whose tool always points down: only yaw varies between poses, as in
    handheld demos, so the rotation features' tilt components are flat."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.windows = [_window(rng) for _ in range(64)]
        self.actions = []
        for w in self.windows:  # 8 rows moving away from the newest pose, its tool still down
            pos = w["robot0_eef_pos"][-1] + rng.uniform(-0.05, 0.05, (8, 3))
            aa = np.repeat(w["robot0_eef_rot_axis_angle"][-1:], 8, axis=0)
            self.actions.append(np.concatenate([pos, aa, rng.uniform(0, 0.08, (8, 1))], axis=1))

    def __len__(self) -> int:
        return len(self.windows)

    def batch(self, ids: np.ndarray) -> dict:
        obs = {k: np.stack([self.windows[i][k] for i in ids]) for k in RAW_OBS_KEYS}
        return EefFeatures().encode_batch({"obs": obs, "action": np.stack([self.actions[i] for i in ids])})


def test_flat_rotation_features_get_a_gain_an_arm_tilt_cannot_blow_up():
    """An arm tilts its TCP by a degree or two where tool-down demos never tilt: that must stay a small input."""
    from mimic.policies.data import MIN_LOWDIM_RANGE, MIN_ROTATION_RANGE
    from mimic.policies.eef_relative import EefBatches, rotation_keys

    fake = _TiltFreeBatches(np.random.default_rng(5))
    norm = EefBatches.normalizer(fake)
    assert rotation_keys(norm.keys) == ["robot0_eef_rot_axis_angle"]
    rot_scale = norm.state_dict()["robot0_eef_rot_axis_angle.scale"].numpy()
    assert (
        rot_scale.max() <= 2.0 / MIN_ROTATION_RANGE + 1e-4
    )  # flat tilt components capped at the rotation floor
    pos_scale = norm.state_dict()["robot0_eef_pos.scale"].numpy()
    assert pos_scale.max() <= 2.0 / MIN_LOWDIM_RANGE + 1e-3  # positions keep their own floor
    # a 1-degree tilt of the older pose moves its normalised rotation features by at most 0.2
    w = fake.windows[0]
    tilted = {**w}
    tilt = Rotation.from_euler("x", np.radians(1.0)) * Rotation.from_rotvec(w["robot0_eef_rot_axis_angle"][0])
    tilted["robot0_eef_rot_axis_angle"] = np.stack([tilt.as_rotvec(), w["robot0_eef_rot_axis_angle"][1]])
    a, _ = EefFeatures().encode_obs(w)
    b, _ = EefFeatures().encode_obs(tilted)
    key = "robot0_eef_rot_axis_angle"
    moved = norm.normalize(key, b[key]) - norm.normalize(key, a[key])
    assert np.abs(moved).max() < 0.2
