"""Gripper width from finger markers: the twin's markers, detection, the width map and missing samples."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mimic.calibration.gripper_width import twin_calibration, twin_width_sweep
from mimic.sim.env import Randomization
from mimic.sim.handheld import (
    FingerMarkerSpec,
    HandheldEnv,
    _handheld_xml,
    _with_finger_markers,
    camera_pose_cv,
)
from mimic.teleop.handheld import HandheldCapture, HandheldCaptureConfig
from mimic.teleop.marker_width import (
    FingerMarkerDetector,
    MarkerWidthCalibration,
    MarkerWidthSource,
    read_missing_widths,
)


@pytest.fixture(scope="module")
def calibration() -> MarkerWidthCalibration:
    cal, _ = twin_calibration()
    return cal


def test_width_within_2mm_over_the_whole_opening_range(calibration):
    """30 widths closed -> open at 6 hand poses, each with its own wrist mount jitter (+-1 cm), light
    intensity and direction, table and cube colours; calibrated once at the nominal mount."""
    result = twin_width_sweep(calibration, n_widths=30, n_poses=6, seed=1)
    err = result.errors_m * 1e3
    print(f"finger-marker width (3d, 240x320): {result.summary()}")
    assert result.detected == 1.0
    assert err.max() < 2.0 and err.mean() < 0.5
    assert result.truth.min() == pytest.approx(0.0, abs=1e-6) and result.truth.max() == pytest.approx(0.08)


def test_pixel_mode_holds_only_on_the_mount_it_was_calibrated_on():
    cal, _ = twin_calibration(mode="pixel")
    rigid = twin_width_sweep(
        cal, n_widths=15, n_poses=3, seed=1, randomization=Randomization(camera_pos_m=0.0)
    )
    moved = twin_width_sweep(cal, n_widths=15, n_poses=3, seed=1)
    print(f"pixel mode, rigid mount: {rigid.summary()}; jittered mount: {moved.summary()}")
    assert rigid.errors_m.max() < 0.002
    assert moved.errors_m.max() > 0.004  # a centimetre of mount shift: why "3d" is the default


def test_hidden_marker_gives_none_never_a_width(calibration):
    env = HandheldEnv(seed=0, finger_markers=True)
    env.reset(seed=0)
    env.set_gripper_width(0.05)
    img = env.render("wrist", calibration.image_size)
    source = MarkerWidthSource(calibration)
    assert source(1.5, img)[1] == pytest.approx(0.05, abs=0.002)
    k = calibration.detector().camera_matrix
    t_world_cam = camera_pose_cv(env.model, env.data, "wrist")
    for geom in ("finger_left_marker", "finger_right_marker"):
        p_cam = np.linalg.inv(t_world_cam) @ np.r_[env.data.geom_xpos[env.model.geom(geom).id], 1.0]
        u, v, _ = k @ (p_cam[:3] / p_cam[2])
        covered = cv2.circle(img.copy(), (int(u), int(v)), 12, (200, 150, 120), -1)  # a thumb on one marker
        assert source(2.0, covered) == (2.0, None)
    plain = HandheldEnv(seed=0)  # no markers printed
    plain.reset(seed=0)
    assert source(2.5, plain.render("wrist", calibration.image_size)) == (2.5, None)
    assert source.n_frames == 4 and source.n_missing == 3 and source.completeness == pytest.approx(0.25)
    with pytest.raises(ValueError, match="96x96.*240x320"):
        source.measure(env.render("wrist", (96, 96)))
    env.close()
    plain.close()


def test_markers_follow_the_finger_bodies_not_their_geoms():
    """A bigger finger (another mesh) moves its plate with it: the plate is placed from the finger's geoms."""
    from mimic.robots.specs import get_spec
    from mimic.sim.env import _OBJECTS

    spec = FingerMarkerSpec()
    xml = _handheld_xml(get_spec("franka"), _OBJECTS["pick_place"])
    fat = xml.replace('size="0.008 0.006 0.025"', 'size="0.012 0.006 0.03"')
    assert fat != xml
    import mujoco

    for scene, face_x in ((xml, 0.008), (fat, 0.012)):
        model = mujoco.MjModel.from_xml_string(_with_finger_markers(scene, spec))
        data = mujoco.MjData(model)
        mujoco.mj_forward(model, data)
        for body in ("finger_left", "finger_right"):
            g = model.geom(f"{body}_marker").id
            assert model.geom_bodyid[g] == model.body(body).id
            assert model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0
            b = model.body(body).id
            local = data.xmat[b].reshape(3, 3).T @ (data.geom_xpos[g] - data.xpos[b])
            assert local[0] > face_x  # in front of the finger's camera-facing side


def test_default_scene_is_unchanged_without_markers():
    a, b = HandheldEnv(seed=0), HandheldEnv(seed=0, finger_markers=False)
    assert a.model.ngeom == b.model.ngeom and a.model.ntex == b.model.ntex
    m = HandheldEnv(seed=0, finger_markers=True)
    assert m.model.ngeom == a.model.ngeom + 2
    assert np.allclose(m.model.body_mass, a.model.body_mass)  # visual plates: no mass, no contact
    obs, _, _, _, info = m.step(np.r_[m.reset(seed=0)["robot0_eef_pos"], 0, 0, 0, 0.08])
    assert "marker_frames" not in a.step(np.r_[a.reset(seed=0)["robot0_eef_pos"], 0, 0, 0, 0.08])[4]
    assert len(info["marker_frames"]) == len(info["frames"]) == len(info["marker_widths"])
    assert info["marker_frames"][0][1].shape == (240, 320, 3)


def test_calibration_map_json_and_bad_input(tmp_path):
    spec = FingerMarkerSpec()
    cal = MarkerWidthCalibration.fit([(0.03, 0.0), (0.031, 0.0), (0.11, 0.08)], spec, "pixel", (240, 320))
    assert cal.features == [pytest.approx(0.0305), 0.11] and cal.widths == [0.0, 0.08]
    assert cal.width(0.07025) == pytest.approx(0.04)
    assert cal.width(0.12) == pytest.approx(0.08 + 0.01 * 0.08 / 0.0795)  # extrapolated along the end segment
    three = MarkerWidthCalibration.fit([(1.0, 0.0), (3.0, 0.04), (4.0, 0.08)], spec, "pixel", (240, 320))
    assert three.width(2.0) == pytest.approx(0.02) and three.width(3.5) == pytest.approx(0.06)
    cal.save(tmp_path / "gw.json")
    back = MarkerWidthCalibration.load(tmp_path / "gw.json")
    assert (
        back.width(0.05) == cal.width(0.05) and back.image_size == (240, 320) and back.marker_spec() == spec
    )
    (tmp_path / "bad.json").write_text('{"mode": "3d"}')
    with pytest.raises(ValueError, match="bad.json: not a gripper-width calibration"):
        MarkerWidthCalibration.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="not monotone"):
        MarkerWidthCalibration.fit([(1.0, 0.0), (3.0, 0.04), (2.0, 0.08)], spec, "pixel", (240, 320))
    with pytest.raises(ValueError, match="open and closed"):
        MarkerWidthCalibration.fit([(1.0, 0.04), (1.1, 0.04)], spec, "pixel", (240, 320))
    with pytest.raises(ValueError, match="needs camera_matrix"):
        MarkerWidthCalibration.fit([(1.0, 0.0), (2.0, 0.08)], spec, "3d", (240, 320))
    with pytest.raises(ValueError, match="needs the camera intrinsics"):
        FingerMarkerDetector(spec, "3d")
    with pytest.raises(ValueError, match="left_id and right_id must differ"):
        FingerMarkerSpec(left_id=3, right_id=3)
    with pytest.raises(ValueError, match="unknown ArUco dictionary"):
        FingerMarkerSpec(dictionary="DICT_9X9")


def test_capture_marks_a_missing_width_and_never_invents_one(tmp_path):
    """Widths from a 30 Hz camera with one frame unreadable: the store commits, the gap is recorded, and no
    row uses a width at the missing time; a longer gap than the grid tolerance refuses the episode."""
    cfg = HandheldCaptureConfig(image_size=(8, 8))
    cap = HandheldCapture.create(tmp_path / "h.zarr", cfg)
    frame = np.zeros((8, 8, 3), np.uint8)

    def run(missing: set[int]) -> None:
        cap.begin_episode()
        for k in range(100):  # 1 s of 100 Hz poses and 30 Hz frames, time-ordered
            t = k / 100
            cap.on_pose(t, [0.4 + 0.01 * t, 0, 0.2], [0, 1, 0, 0])
            if k % 3 == 0:
                j = k // 3
                cap.on_frame(t, frame)
                if j in missing:
                    cap.on_gripper_missing(t)
                else:
                    cap.on_gripper(t, 0.05 + 0.01 * t)

    run({10})
    rows = cap.end_episode()
    assert rows >= 9
    np.testing.assert_allclose(read_missing_widths(tmp_path / "h.zarr", 0), [0.3])
    import zarr

    data = zarr.open_group(str(tmp_path / "h.zarr"), mode="r")["data"]
    used = data["robot0_gripper_width_t"][:]
    assert not np.any(np.isclose(used, 0.3))  # the grid row at 0.3 s took a real neighbour, marked by its _t
    np.testing.assert_allclose(
        data["robot0_gripper_width"][:, 0], 0.05 + 0.01 * data["timestamp"][:], atol=1e-9
    )

    with pytest.raises(ValueError, match="robot0_gripper_width.*tolerance"):
        run(set(range(10, 16)))  # 0.2 s without a width: no row may be made up across it
    cap.discard_episode()
    cap.close()
    assert len(read_missing_widths(tmp_path / "h.zarr", 0)) == 1
