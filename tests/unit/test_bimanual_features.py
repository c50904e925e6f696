"""Two-gripper features (UMI's inter-gripper pose, per-gripper relative actions), the bimanual store writer,
and the frames of the two-arm twin."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy.spatial.transform import Rotation

from mimic.data.dataset import DatasetError
from mimic.data.dp_umi import ReplayBufferWriter
from mimic.data.relative import invert, pose_to_matrix, pose_wrt, rot6d_to_matrix
from mimic.policies.eef_relative import BIMANUAL_OBS_KEYS, BimanualEefFeatures, is_bimanual

pytestmark = pytest.mark.unit


def _window(rng: np.random.Generator, t: int = 2) -> dict[str, np.ndarray]:
    w = {}
    for i in range(2):
        w[f"robot{i}_eef_pos"] = rng.uniform(-0.5, 0.5, (t, 3))
        w[f"robot{i}_eef_rot_axis_angle"] = Rotation.random(
            t, random_state=int(rng.integers(1 << 30))
        ).as_rotvec()
        w[f"robot{i}_gripper_width"] = rng.uniform(0, 0.08, (t, 1))
    quat = Rotation.random(t * 2, random_state=1).as_quat(scalar_first=True).reshape(t, 2, 4)
    w["object_state"] = np.concatenate(
        [rng.uniform(-0.5, 0.5, (t, 2, 3)), quat, rng.uniform(-0.5, 0.5, (t, 2, 3))], axis=2
    ).reshape(t, 20)
    return w


def _moved(w: dict[str, np.ndarray], t_common: np.ndarray) -> dict[str, np.ndarray]:
    """The same window seen from another common frame (a rotation about z and a translation)."""
    out = dict(w)
    for i in range(2):
        m = t_common @ pose_to_matrix(w[f"robot{i}_eef_pos"], w[f"robot{i}_eef_rot_axis_angle"])
        out[f"robot{i}_eef_pos"] = m[..., :3, 3]
        out[f"robot{i}_eef_rot_axis_angle"] = Rotation.from_matrix(m[..., :3, :3]).as_rotvec()
    s = w["object_state"].reshape(-1, 2, 10).copy()
    rot = Rotation.from_matrix(t_common[:3, :3])
    for part in (slice(0, 3), slice(7, 10)):
        s[..., part] = s[..., part] @ t_common[:3, :3].T + t_common[:3, 3]
    q = Rotation.from_quat(s[..., 3:7].reshape(-1, 4), scalar_first=True)
    s[..., 3:7] = (rot * q).as_quat(scalar_first=True).reshape(s[..., 3:7].shape)
    out["object_state"] = s.reshape(w["object_state"].shape)
    return out


def test_pose_wrt_is_umis_inter_gripper_pose():
    rng = np.random.default_rng(0)
    w = _window(rng, 3)
    pos, rot = pose_wrt(
        w["robot0_eef_pos"],
        w["robot0_eef_rot_axis_angle"],
        w["robot1_eef_pos"],
        w["robot1_eef_rot_axis_angle"],
    )
    t_b = pose_to_matrix(w["robot1_eef_pos"][-1], w["robot1_eef_rot_axis_angle"][-1])
    want = invert(t_b) @ pose_to_matrix(w["robot0_eef_pos"], w["robot0_eef_rot_axis_angle"])
    np.testing.assert_allclose(pos, want[:, :3, 3], atol=1e-12)
    np.testing.assert_allclose(rot6d_to_matrix(rot), want[:, :3, :3], atol=1e-12)
    # a gripper with respect to itself, at its newest step, is the identity
    p, r = pose_wrt(
        w["robot1_eef_pos"],
        w["robot1_eef_rot_axis_angle"],
        w["robot1_eef_pos"],
        w["robot1_eef_rot_axis_angle"],
        "axis_angle",
    )
    np.testing.assert_allclose(p[-1], 0, atol=1e-12)
    np.testing.assert_allclose(r[-1], 0, atol=1e-9)
    with pytest.raises(ValueError, match="rotation"):
        pose_wrt(p, r, p, r, "quat")


def test_features_do_not_depend_on_the_common_frame():
    """Tracker frame or table frame: the network sees the same numbers (what lets handheld demos run on arms)."""
    rng = np.random.default_rng(1)
    w = _window(rng)
    t = pose_to_matrix(np.array([0.3, -1.2, 0.05]), np.array([0.0, 0.0, 0.9]))
    f = BimanualEefFeatures()
    a, _ = f.encode_obs(w)
    b, _ = f.encode_obs(_moved(w, t))
    assert set(a) == set(f.inner_keys) == set(f.inner_shapes())
    for k in a:
        assert a[k].shape == (2, f.inner_shapes()[k][0]), k
        np.testing.assert_allclose(a[k], b[k], atol=1e-9, err_msg=k)


def test_actions_are_relative_per_gripper_and_round_trip():
    rng = np.random.default_rng(2)
    w = _window(rng)
    f = BimanualEefFeatures()
    _, refs = f.encode_obs(w)
    act = np.concatenate(
        [
            np.concatenate(
                [
                    rng.uniform(-0.5, 0.5, (16, 3)),
                    Rotation.random(16, random_state=i).as_rotvec(),
                    rng.uniform(0, 0.08, (16, 1)),
                ],
                1,
            )
            for i in range(2)
        ],
        1,
    )
    rel = f.encode_actions(act, refs)
    assert rel.shape == (16, f.action_dim(14)) == (16, 20)
    # gripper 1's relative rows depend on gripper 1's pose only
    w2 = dict(w, robot0_eef_pos=w["robot0_eef_pos"] + 1.0)
    _, refs2 = f.encode_obs(w2)
    np.testing.assert_allclose(f.encode_actions(act, refs2)[:, 10:], rel[:, 10:])
    back = f.decode_actions(rel, refs)
    np.testing.assert_allclose(
        back[:, [0, 1, 2, 6, 7, 8, 9, 13]], act[:, [0, 1, 2, 6, 7, 8, 9, 13]], atol=1e-9
    )
    for g in range(2):
        r0 = Rotation.from_rotvec(back[:, 7 * g + 3 : 7 * g + 6])
        r1 = Rotation.from_rotvec(act[:, 7 * g + 3 : 7 * g + 6])
        assert np.all((r0.inv() * r1).magnitude() < 1e-9)
    with pytest.raises(ValueError, match="14"):
        f.action_dim(7)
    assert is_bimanual(BIMANUAL_OBS_KEYS) and not is_bimanual(BIMANUAL_OBS_KEYS[:3])


def test_replay_buffer_writer_layout_and_staging(tmp_path):
    out = tmp_path / "store.zarr.zip"
    rng = np.random.default_rng(3)

    def episode(n):
        return {
            "robot0_eef_pos": rng.normal(size=(n, 3)).astype(np.float32),
            "camera0_rgb": rng.integers(0, 255, (n, 8, 10, 3), dtype=np.uint8),
        }

    eps = [episode(4), episode(3)]
    with ReplayBufferWriter(out, {"fps": 10.0}) as w:
        for e in eps:
            w.add_episode(e)
        assert not out.exists()  # built aside, appears whole on close
        with pytest.raises(DatasetError, match="robot0_eef_pos"):
            w.add_episode(
                {"robot0_eef_pos": np.zeros((2, 4), np.float32), "camera0_rgb": eps[0]["camera0_rgb"][:2]}
            )
    zs = zarr.storage.ZipStore(str(out), mode="r")
    try:
        root = zarr.open_group(zs, mode="r")
        assert root.metadata.zarr_format == 2 and root.attrs["fps"] == 10.0
        np.testing.assert_array_equal(root["meta"]["episode_ends"][:], [4, 7])
        np.testing.assert_array_equal(
            root["data"]["camera0_rgb"][:], np.concatenate([e["camera0_rgb"] for e in eps])
        )
        assert root["data"]["camera0_rgb"].chunks == (1, 8, 10, 3)
    finally:
        zs.close()
    aborted = tmp_path / "aborted.zarr.zip"
    with pytest.raises(RuntimeError), ReplayBufferWriter(aborted) as w:
        w.add_episode(episode(2))
        raise RuntimeError("stop")
    assert list(tmp_path.iterdir()) == [out]  # nothing left of the aborted one, staging included
    with pytest.raises(DatasetError, match="already exists"):
        ReplayBufferWriter(out)


def test_two_arm_twin_frames_match_each_arms_ik_model():
    """Arm i's TCP in the table frame = its base pose @ the arm MJCF's forward kinematics (what IK solves on)."""
    from mimic.robots.eef_control import EefChunkController
    from mimic.robots.ik import IKSolver
    from mimic.sim.bimanual import BimanualTwinEnv

    env = BimanualTwinEnv("xarm7")
    try:
        obs = env.reset(seed=0)
        ik = IKSolver.for_arm(env.spec)
        for i in range(2):
            tcp = env.base_poses[i] @ ik.fk(obs[f"robot{i}_joint_pos"])
            np.testing.assert_allclose(tcp[:3, 3], obs[f"robot{i}_eef_pos"], atol=1e-6)
            # a table-frame chunk through base_pose solves the same joints as the base-frame chunk without it
            row = np.concatenate(
                [obs[f"robot{i}_eef_pos"] + [0.02, 0.0, -0.05], obs[f"robot{i}_eef_rot_axis_angle"], [0.0]]
            )
            local = row.copy()
            local[:3] -= env.base_poses[i][:3, 3]
            with_base = EefChunkController(ik, 10.0, base_pose=env.base_poses[i]).solve_chunk(
                row[None], obs[f"robot{i}_joint_pos"]
            )
            plain = EefChunkController(ik, 10.0).solve_chunk(local[None], obs[f"robot{i}_joint_pos"])
            assert with_base[1] == plain[1] == 1
            np.testing.assert_allclose(with_base[0], plain[0], atol=1e-9)
        with pytest.raises(ValueError, match="rigid"):
            EefChunkController(ik, 10.0, base_pose=np.eye(3))
    finally:
        env.close()
