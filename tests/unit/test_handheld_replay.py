"""Handheld capture pieces behind the ROS session: several grippers, raw values, replay schedule, pose latency."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mimic.calibration.latency import LatencyCalibration, pose_latency_from_motion
from mimic.data.validate import validate
from mimic.teleop.handheld import (
    ACTION_LAYOUT,
    HandheldCapture,
    HandheldCaptureConfig,
    TwinStreamLatency,
    action_layout,
    read_raw_arrivals,
    read_raw_values,
    record_twin,
    replay_episode,
)


def test_two_grippers_fill_robot_and_camera_keys_and_join_actions(tmp_path):
    cfg = HandheldCaptureConfig(image_size=(8, 8), pose_latency_s=0.01, grippers=2)
    cap = HandheldCapture.create(tmp_path / "h.zarr", cfg)
    cap.begin_episode()
    img = np.zeros((8, 8, 3), np.uint8)
    for k in range(201):  # 2 s: gripper 1's poses 5 ms after gripper 0's, widths at 50 Hz
        t = k * 0.01
        cap.on_pose(t + 0.01, [t, 0.0, 0.2], [1, 0, 0, 0], gripper=0)
        cap.on_pose(t + 0.015, [0.0, -t, 0.3], [1, 0, 0, 0], gripper=1)
        if k % 2 == 0:
            cap.on_gripper(t, 0.08 - 0.02 * t, gripper=0)
            cap.on_gripper(t, 0.01 + 0.02 * t, gripper=1)
        if k % 3 == 0:
            cap.on_frame(t, img, gripper=0)
            cap.on_frame(t, img + 1, gripper=1)
    with pytest.raises(ValueError, match="gripper 2, this capture has grippers 0..1"):
        cap.on_pose(3.0, np.zeros(3), [1, 0, 0, 0], gripper=2)
    rows = cap.end_episode()
    cap.close()
    ds, _ = validate(tmp_path / "h.zarr")
    assert ds.attrs["action_layout"] == action_layout(2) and len(action_layout(2)) == 14
    assert action_layout(1) == ACTION_LAYOUT
    assert {"robot1_eef_pos", "robot1_gripper_width", "camera1_rgb"} <= set(ds.keys)
    ep = ds.episode(0)
    g = ep["timestamp"]
    assert rows == len(g) >= 15
    np.testing.assert_allclose(ep["robot0_eef_pos"][:, 0], g, atol=1e-9)
    # captured 5 ms after gripper 0's sample of the same value (its latency is 10 ms too)
    np.testing.assert_allclose(ep["robot1_eef_pos"][:, 1], -(g - 0.005), atol=1e-9)
    np.testing.assert_allclose(ep["action"][:, 7:10], ep["robot1_eef_pos"], atol=1e-9)
    np.testing.assert_allclose(ep["action"][:, 13], ep["robot1_gripper_width"][:, 0], atol=1e-9)
    np.testing.assert_allclose(ep["action"][:, 6], 0.08 - 0.02 * g, atol=1e-9)
    assert (ep["camera1_rgb"] == 1).all() and (ep["camera0_rgb"] == 0).all()
    assert set(read_raw_arrivals(tmp_path / "h.zarr", 0)) == {
        "pose",
        "pose1",
        "gripper",
        "gripper1",
        "camera",
        "camera1",
    }
    values = read_raw_values(tmp_path / "h.zarr", 0)
    assert values["pose1"].shape == (201, 7) and values["gripper"].shape == (101, 1)
    np.testing.assert_allclose(values["pose1"][5], [0, -0.05, 0.3, 1, 0, 0, 0])  # as received
    with pytest.raises(ValueError, match="grippers must be an integer >= 1"):
        HandheldCaptureConfig(grippers=0)


def _feed(cap: HandheldCapture, ep, offset: float) -> None:
    """What the handheld recorder does with a replayed episode: arrival = capture stamp + latency."""
    cap.begin_episode()
    for s in ep.samples:
        t = offset + s.t_capture + ep.latencies[s.kind]
        if s.kind == "pose":
            cap.on_pose(t, s.value[:3], s.value[3:], s.gripper)
        elif s.kind == "gripper":
            cap.on_gripper(t, s.value[0], s.gripper)
        else:
            cap.on_frame(t, s.value, s.gripper)
    cap.end_episode()


def test_replayed_raw_streams_rebuild_the_episode(tmp_path):
    """The replay schedule holds every sample at its recorded times: fed again, it gives the same rows."""
    inj = TwinStreamLatency(pose_s=0.05, gripper_s=0.02, camera_s=0.08, jitter_s=0.004)
    record_twin(tmp_path / "direct.zarr", 1, seed=4, injected=inj, progress=False)
    ep = replay_episode(tmp_path / "direct.zarr", 0)
    assert ep.exact and ep.grippers == 1 and ep.latencies == {"pose": 0.05, "gripper": 0.02, "camera": 0.08}
    arrivals = read_raw_arrivals(tmp_path / "direct.zarr", 0)
    assert ep.counts() == {k: len(v) for k, v in arrivals.items()}
    assert all(a.t_arrival <= b.t_arrival for a, b in zip(ep.samples, ep.samples[1:], strict=False))
    direct = validate(tmp_path / "direct.zarr")[0]
    cap = HandheldCapture.create(tmp_path / "again.zarr", HandheldCaptureConfig(**_config(direct)))
    _feed(cap, ep, offset=5000.0)
    cap.close()
    a, b = direct.episode(0), validate(tmp_path / "again.zarr")[0].episode(0)
    assert len(a["timestamp"]) == len(b["timestamp"])
    for key in ("robot0_eef_pos", "robot0_eef_rot_axis_angle", "robot0_gripper_width", "action"):
        np.testing.assert_allclose(b[key], a[key], atol=1e-9, err_msg=key)
    np.testing.assert_allclose(
        b["camera0_rgb_t"] - b["timestamp"][0], a["camera0_rgb_t"] - a["timestamp"][0], atol=1e-9
    )
    diff = np.abs(b["camera0_rgb"].astype(int) - a["camera0_rgb"].astype(int))
    assert diff.mean() < 1.5  # stored frames JPEG-encoded once more

    # a store without raw values replays from its grid rows (interpolated at each sample's capture time)
    import zarr

    raw = zarr.open_group(str(tmp_path / "direct.zarr"), mode="r+")["raw"]["episode_0"]
    for name in ("pose_value", "gripper_value"):
        del raw[name]
    old = replay_episode(tmp_path / "direct.zarr", 0)
    assert not old.exact and old.counts() == ep.counts()
    pose_new = np.array([s.value[:3] for s in ep.samples if s.kind == "pose"])
    pose_old = np.array([s.value[:3] for s in old.samples if s.kind == "pose"])
    inside = slice(10, -10)  # the grid covers these
    err = float(np.abs(pose_new[inside] - pose_old[inside]).max())
    print(f"pose replayed from the 10 Hz grid: max {err * 1e3:.2f} mm from the raw 100 Hz stream")
    assert err < 0.01  # the hand's turns between grid rows (up to 0.3 m/s), cut by linear interpolation
    with pytest.raises(ValueError, match="episode 3 out of range"):
        replay_episode(tmp_path / "direct.zarr", 3)


def _config(ds) -> dict:
    cfg = dict(ds.attrs["handheld_config"])
    return {**cfg, "image_size": tuple(cfg["image_size"])}


def test_pose_latency_from_a_reference_motion():
    rng = np.random.default_rng(0)
    t = np.arange(0.0, 6.0, 0.002)
    q = 0.05 * np.sin(2 * np.pi * 0.5 * t)  # the joint, stamped at capture
    t_pose = np.arange(0.0, 6.0, 0.01)
    angle = 0.05 * np.sin(2 * np.pi * 0.5 * t_pose)
    positions = np.stack([0.5 * np.cos(angle), 0.5 * np.sin(angle), np.full_like(angle, 0.3)], axis=1)
    arrival = t_pose + 0.07 + rng.uniform(0, 0.004, len(t_pose))
    est = pose_latency_from_motion(t, q, np.maximum.accumulate(arrival), positions)
    assert abs(est - 0.072) < 0.003
    est_flipped = pose_latency_from_motion(t, q, np.maximum.accumulate(arrival), -positions)
    assert abs(est_flipped - est) < 1e-9  # the direction's sign does not matter
    with pytest.raises(ValueError, match="positions must be"):
        pose_latency_from_motion(t, q, t_pose, positions[:, :2])


def test_latency_file_feeds_the_handheld_recorder(tmp_path):
    from mimic_ros.handheld_recorder_node import parse_transform, read_latency_file
    from mimic_ros.params import ParamError

    path = tmp_path / "latency.json"
    LatencyCalibration(arm_s=0.08, camera_s={"camera0": 0.03}, pose_s=0.05).save(path)
    assert read_latency_file(str(path), ["wrist"]) == {"pose": 0.05, "camera": 0.03}
    LatencyCalibration(camera_s={"left_wrist": 0.03, "right_wrist": 0.04}).save(path)
    with pytest.raises(ValueError, match="different latencies"):
        read_latency_file(str(path), ["left_wrist", "right_wrist"])
    old = json.loads(path.read_text())
    old.pop("pose_s")  # a file written before pose streams were timed still loads
    path.write_text(json.dumps(old))
    assert LatencyCalibration.load(path).pose_s is None
    assert parse_transform("") is None
    assert np.allclose(parse_transform(",".join(map(str, np.eye(4).ravel()))), np.eye(4))
    with pytest.raises(ParamError, match="16 comma-separated numbers"):
        parse_transform("1,2,3")
