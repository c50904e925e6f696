"""Handheld capture pieces: axis-angle continuity, action/width join, input errors, pose-stream latency."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mimic.calibration.handeye import pose_stream_latency
from mimic.data.validate import validate
from mimic.teleop.handheld import HandheldCapture, HandheldCaptureConfig, continuous_axis_angle


def test_axis_angle_stays_continuous_through_pi():
    """A TCP pointing down sits near rotation angle pi: turning through it must not jump the stored values."""
    axis = np.array([1.0, 0.3, 0.1]) / np.linalg.norm([1.0, 0.3, 0.1])
    rots = Rotation.from_rotvec(np.linspace(np.pi - 0.3, np.pi + 0.3, 101)[:, None] * axis)
    prev, out = None, []
    for q in rots.as_quat(scalar_first=True):
        prev = continuous_axis_angle(q, prev)
        out.append(prev)
    out = np.array(out)
    assert np.abs(np.diff(out, axis=0)).max() < 0.02
    np.testing.assert_allclose(Rotation.from_rotvec(out).as_matrix(), rots.as_matrix(), atol=1e-9)
    shortest = rots.as_rotvec()
    assert np.abs(np.diff(shortest, axis=0)).max() > 3  # what a naive conversion would have stored


def test_capture_joins_width_into_actions_and_names_bad_input(tmp_path):
    cfg = HandheldCaptureConfig(
        image_size=(8, 8), pose_latency_s=0.01, gripper_latency_s=0.0, camera_latency_s=0.02
    )
    cap = HandheldCapture.create(tmp_path / "h.zarr", cfg)
    with pytest.raises(RuntimeError, match="pose outside an episode"):
        cap.on_pose(0.0, np.zeros(3), [1, 0, 0, 0])
    cap.begin_episode()
    img = np.full((8, 8, 3), 100, np.uint8)
    for k in range(301):  # 3 s: poses 100 Hz, widths 50 Hz closing linearly, frames 30 Hz
        t = k * 0.01
        cap.on_pose(t + 0.01, [t, 0.0, 0.2], [0, 1, 0, 0])
        if k % 2 == 0:
            cap.on_gripper(t, 0.08 - 0.02 * t)
        if k % 3 == 0:
            cap.on_frame(t + 0.02, img)
    with pytest.raises(ValueError, match="not a rotation"):
        cap.on_pose(3.1, np.zeros(3), [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"expected uint8 \(8, 8, 3\)"):
        cap.on_frame(3.1, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="3 finite values"):
        cap.on_pose(3.1, [0.0, np.nan, 0.0], [1, 0, 0, 0])
    rows = cap.end_episode()
    cap.close()
    assert 25 <= rows <= 31
    ds, _ = validate(tmp_path / "h.zarr")
    ep = ds.episode(0)
    g = ep["timestamp"]
    np.testing.assert_allclose(ep["robot0_eef_pos"][:, 0], g, atol=1e-9)  # latency removed: pos x == time
    np.testing.assert_allclose(
        ep["action"][:, 6], 0.08 - 0.02 * g, atol=1e-9
    )  # width interpolated at pose time
    np.testing.assert_allclose(ep["robot0_gripper_width"][:, 0], ep["action"][:, 6], atol=1e-9)
    np.testing.assert_allclose(np.abs(ep["robot0_eef_rot_axis_angle"][:, 0]), np.pi, atol=1e-9)


@pytest.fixture(scope="module")
def wave():
    """The hand swaying above the table: capture-time pose samples (100 Hz) and wrist frames (29.4 Hz)."""
    from mimic.sim.handheld import HandheldEnv, wave_capture

    env = HandheldEnv(seed=0, image_size=(96, 96), camera_hz=30.0)
    yield wave_capture(env, duration_s=6.0)
    env.close()


@pytest.mark.parametrize(("pose_s", "camera_s"), [(0.04, 0.12), (0.15, 0.05)])
def test_pose_stream_latency_against_the_wrist_camera(wave, pose_s, camera_s):
    t_pose, pos, t_frames, frames = wave
    rng = np.random.default_rng(1)
    jitter = 0.004
    est = pose_stream_latency(
        t_pose + pose_s + rng.uniform(0, jitter, len(t_pose)),
        pos,
        t_frames + camera_s + rng.uniform(0, jitter, len(t_frames)),
        frames,
        camera_latency_s=camera_s + jitter / 2,
    )
    truth = pose_s + jitter / 2
    print(f"pose latency: true {truth * 1e3:.1f} ms, estimated {est * 1e3:.1f} ms")
    assert abs(est - truth) < 0.005
    with pytest.raises(ValueError, match="positions must be"):
        pose_stream_latency(t_pose, pos[:, :2], t_frames, frames, 0.0)


def test_reopen_appends_episodes_and_refuses_arm_stores(tmp_path):
    cfg = HandheldCaptureConfig(image_size=(8, 8), pose_latency_s=0.02)
    img = np.zeros((8, 8, 3), np.uint8)

    def episode(cap: HandheldCapture, t0: float) -> int:
        cap.begin_episode()
        for k in range(101):
            t = t0 + k * 0.01
            cap.on_pose(t, [k * 0.001, 0, 0], [1, 0, 0, 0])
            cap.on_gripper(t, 0.05)
            cap.on_frame(t, img)
        return cap.end_episode()

    cap = HandheldCapture.create(tmp_path / "h.zarr", cfg)
    episode(cap, 0.0)
    cap.close()
    cap = HandheldCapture.open(tmp_path / "h.zarr")
    assert cap.config.pose_latency_s == 0.02 and cap.config.image_size == (8, 8)
    episode(cap, 100.0)
    cap.close()
    ds, _ = validate(tmp_path / "h.zarr")
    assert ds.n_episodes == 2
    from mimic.data.writer import DatasetWriter, StreamSpec

    DatasetWriter.create(
        tmp_path / "arm.zarr", 10.0, {"x": StreamSpec((1,))}, {"robot": "franka", "joint_names": []}
    )
    with pytest.raises(ValueError, match="not a handheld store"):
        HandheldCapture.open(tmp_path / "arm.zarr")


def test_streams_from_concurrent_callback_threads(tmp_path):
    """As a ROS recorder feeds it: three threads, wall-clock arrival stamps, one store that validates."""
    import threading
    import time

    # tolerances wide enough for a feeding thread starved by a loaded machine: this is about the lock, not timing
    cfg = HandheldCaptureConfig(
        image_size=(8, 8),
        pose_latency_s=0.005,
        camera_latency_s=0.03,
        lowdim_tolerance_s=0.5,
        camera_tolerance_s=0.5,
    )
    cap = HandheldCapture.create(tmp_path / "h.zarr", cfg)
    cap.begin_episode()
    stop = time.monotonic() + 1.5

    def feed(period_s: float, push) -> None:
        while time.monotonic() < stop:
            push(time.time())
            time.sleep(period_s)

    threads = [
        threading.Thread(target=feed, args=(0.005, lambda t: cap.on_pose(t, [0.1, 0.0, 0.2], [0, 1, 0, 0]))),
        threading.Thread(target=feed, args=(0.02, lambda t: cap.on_gripper(t, 0.04))),
        threading.Thread(target=feed, args=(0.033, lambda t: cap.on_frame(t, np.zeros((8, 8, 3), np.uint8)))),
    ]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    rows = cap.end_episode()
    cap.close()
    ds, _ = validate(tmp_path / "h.zarr")
    assert 8 <= rows <= 16 and ds.n_steps == rows  # ~1.4 s of overlap at 10 Hz, whatever the scheduling
    np.testing.assert_allclose(ds.episode(0)["action"][:, 6], 0.04)


def test_slam_camera_poses_become_tcp_poses(tmp_path):
    """A pose stream of the wrist camera (SLAM, UMI's source) + the camera mount -> the TCP's poses."""
    from mimic.sim.env import Randomization
    from mimic.sim.handheld import HandheldEnv, camera_pose_cv, homogeneous

    env = HandheldEnv(seed=2, randomization=Randomization(camera_pos_m=0.0))
    obs = env.reset(seed=2)
    tcp_cam = env.nominal_camera_mount
    cfg = HandheldCaptureConfig(image_size=(8, 8), tracked_to_tcp=np.linalg.inv(tcp_cam).tolist())
    cap = HandheldCapture.create(tmp_path / "h.zarr", cfg)
    cap.begin_episode()
    truth = []
    img = np.zeros((8, 8, 3), np.uint8)
    for k in range(21):
        if k:
            action = np.r_[
                obs["robot0_eef_pos"] + [0.01, -0.005, 0.004], obs["robot0_eef_rot_axis_angle"] * 0.98, 0.08
            ]
            obs, *_ = env.step(action)
        t = k / 10
        cam = camera_pose_cv(env.model, env.data, "wrist")
        cap.on_pose(t, cam[:3, 3], Rotation.from_matrix(cam[:3, :3]).as_quat(scalar_first=True))
        cap.on_gripper(t, 0.08)
        cap.on_frame(t, img)
        p, r = env.tcp_pose()
        truth.append(homogeneous(p, r))
    env.close()
    assert cap.end_episode() == 21
    cap.close()
    ep = validate(tmp_path / "h.zarr")[0].episode(0)
    truth = np.stack(truth)
    np.testing.assert_allclose(ep["robot0_eef_pos"], truth[:, :3, 3], atol=1e-6)
    rot = Rotation.from_rotvec(ep["robot0_eef_rot_axis_angle"]).as_matrix()
    np.testing.assert_allclose(rot, truth[:, :3, :3], atol=1e-6)
    with pytest.raises(ValueError, match="tracked_to_tcp must be a 4x4 rigid transform"):
        HandheldCaptureConfig(tracked_to_tcp=(2 * np.eye(4)).tolist())
