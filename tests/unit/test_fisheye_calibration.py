"""Fisheye wrist cameras: the twin rendered through a lens model (sim.camera_model), its calibration
(cv2.fisheye via calibrate_intrinsics) and rectification back to a pinhole, against the lens it was
rendered through. About 15 s, most of it rendering the board views."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from mimic.calibration.charuco import CharucoDetector
from mimic.calibration.intrinsics import Intrinsics, calibrate_intrinsics, pixel_error, rectified, rectify
from mimic.sim.camera_model import (
    CameraRemap,
    Lens,
    LensBoardScene,
    MujocoPinhole,
    project,
    render_through,
    umi_fisheye,
    unproject,
)

DISTORTED_PINHOLE = Lens(
    np.array([[330.0, 0, 322.0], [0, 331.0, 236.0], [0, 0, 1]]),
    [-0.15, 0.04, 0.001, -0.0005, -0.004],
    (480, 640),
)


def _truth_px(scene, t_world_cam, det):
    t_cam_board = np.linalg.inv(t_world_cam) @ scene.board_pose
    return project(scene.lens, det.object_points @ t_cam_board[:3, :3].T + t_cam_board[:3, 3])


@pytest.fixture(scope="module")
def fisheye_scene():
    scene = LensBoardScene()  # umi_fisheye(): 640x480, 120 deg horizontal, 152 deg diagonal
    yield scene
    scene.close()


def test_projection_matches_opencv_and_inverts():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(2000, 3)) * [1, 1, 0.3] + [0, 0, 1.0]  # up to ~85 deg off-axis
    fish = umi_fisheye()
    ref, _ = cv2.fisheye.projectPoints(
        pts.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), fish.camera_matrix, fish.dist
    )
    np.testing.assert_allclose(project(fish, pts), ref.reshape(-1, 2), atol=1e-9)
    ref, _ = cv2.projectPoints(
        pts, np.zeros(3), np.zeros(3), DISTORTED_PINHOLE.camera_matrix, DISTORTED_PINHOLE.dist
    )
    np.testing.assert_allclose(project(DISTORTED_PINHOLE, pts), ref.reshape(-1, 2), atol=1e-9)
    for lens in (fish, DISTORTED_PINHOLE):
        vv, uu = np.mgrid[0:480:7, 0:640:7].astype(float)
        px = np.stack([uu.ravel(), vv.ravel()], axis=1)
        rays, valid = unproject(lens, px)
        assert valid.all()
        np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1.0, atol=1e-12)
        assert np.abs(project(lens, rays) - px).max() < 1e-6


def test_remap_geometry_is_exact_and_the_wide_limit_is_refused():
    remap = CameraRemap(umi_fisheye())
    h, w = remap.lens.size
    vv, uu = np.mgrid[0:h, 0:w].astype(float)
    # target pixel -> render pixel (the map) -> ray of the render's pinhole -> target pixel again
    k_render = remap.render_camera_matrix()
    rays = np.linalg.solve(k_render, np.stack([remap.map_x.ravel(), remap.map_y.ravel(), np.ones(h * w)]))
    back = project(remap.lens, rays.T)
    geometric = np.abs(back - np.stack([uu.ravel(), vv.ravel()], axis=1)).max()
    # cv2.remap reads float32 maps at 1/32 render pixel; one render pixel is <= 1/supersample target pixel
    stored = max(np.abs(remap._maps[0][1] - remap.map_x).max(), np.abs(remap._maps[0][2] - remap.map_y).max())
    print(
        f"umi_fisheye remap: render {remap.render_size} fovy {remap.render_fovy_deg:.1f} deg, half-angles "
        f"{remap.half_fov_deg[0]:.1f}/{remap.half_fov_deg[1]:.1f} deg, {remap.levels + 1} pyramid levels; "
        f"geometric error {geometric:.1e} px, float32 maps {stored:.1e} render px"
    )
    assert geometric < 1e-6 and stored < 1e-3
    assert remap.valid.all()
    assert max(remap.half_fov_deg) < 75 and remap.render_size == (1556, 2074)
    wider = umi_fisheye()
    wider.camera_matrix[:2, :2] *= 0.8  # ~190 deg diagonal: past what one pinhole render covers
    with pytest.raises(ValueError, match=r"one render covers <= 75 deg .*cube map"):
        CameraRemap(wider)


@pytest.mark.parametrize("lens", [umi_fisheye(), DISTORTED_PINHOLE], ids=["fisheye", "pinhole_distorted"])
def test_corners_in_a_remapped_render_sit_where_the_lens_projects_them(lens):
    scene = LensBoardScene(lens)
    det = CharucoDetector(scene.board)
    errs = []
    try:
        for t in scene.random_views(6, seed=1):
            d = det.detect(scene.render(t))
            if d is not None:
                errs.append(d.corners_px - _truth_px(scene, t, d))
        # the same through render_through + MujocoPinhole (what an arm twin's wrist camera would use)
        scene._place(t)
        src = MujocoPinhole(scene.model, scene.data, "calib")
        np.testing.assert_array_equal(render_through(src, lens), scene.render(t))
        src.close()
    finally:
        scene.close()
    e = np.linalg.norm(np.concatenate(errs), axis=1)
    print(f"{lens.model}: {len(e)} corners, {np.sqrt(np.mean(e**2)):.3f} px RMS, max {e.max():.3f} px off")
    assert len(errs) >= 5 and np.sqrt(np.mean(e**2)) < 0.1 and e.max() < 0.4


def test_rectified_fisheye_render_matches_the_direct_pinhole_render(fisheye_scene):
    """Rectify a fisheye render to the pinhole MuJoCo renders at the same pose and the same focal length:
    ChArUco corners agree to 0.1 px RMS (two resamplings apart), grey levels to 3 on average (edges differ
    most: the rectified image is interpolated twice, so it is slightly softer)."""
    scene = fisheye_scene
    lens = Intrinsics(scene.lens.camera_matrix, scene.lens.dist, scene.lens.size, model="fisheye")
    k_pin = scene.pinhole_camera_matrix()
    det = CharucoDetector(scene.board)
    map_x, _ = cv2.fisheye.initUndistortRectifyMap(
        lens.camera_matrix, lens.dist, np.eye(3), k_pin, (640, 480), cv2.CV_32FC1
    )
    assert np.isfinite(map_x).all()
    errs, diffs = [], []
    for t in scene.scene.random_views(4, seed=3):
        pin, rect = scene.render_pinhole(t), rectify(scene.render(t), lens, k_pin)
        diffs.append(np.abs(rect.astype(int) - pin.astype(int)).mean())
        a, b = det.detect(pin), det.detect(rect)
        ia = {int(i): j for j, i in enumerate(a.ids)}
        errs += [a.corners_px[ia[int(i)]] - b.corners_px[j] for j, i in enumerate(b.ids) if int(i) in ia]
    e = np.linalg.norm(errs, axis=1)
    print(
        f"rectified vs pinhole: corners {np.sqrt(np.mean(e**2)):.3f} px RMS (max {e.max():.3f}), "
        f"grey {np.max(diffs):.2f}"
    )
    assert len(e) >= 60 and np.sqrt(np.mean(e**2)) < 0.1 and e.max() < 0.25
    assert max(diffs) < 3.0
    cam = rectified(lens, k_pin)
    assert cam.model == "pinhole" and not cam.dist.any() and cam.size == (480, 640)


def test_fisheye_calibration_recovers_the_lens(fisheye_scene, tmp_path):
    """30 views (seed 0) rendered through umi_fisheye (k = -0.06, 0.02, -0.004, 0.0004).

    Tolerances: fx, fy 1 %, cx, cy 1 px, k1 5 % (relative), RMS < 0.5 px. k2..k4 get absolute ones: 5 % of
    them (0.001, 0.0002, 0.00002) is far below what 0.06 px corner noise resolves, since the four terms are
    nearly collinear over the angles a board covers. The fit's own standard deviations here are about
    0.0035, 0.0037 and 0.0013, so each must lie within 4 of them (and within 0.015, 0.015, 0.006 outright);
    what consumers use, the projection, is asserted: no pixel moves more than 0.4 px (0.27 measured) within
    the angles the corners reach (> 60 deg; beyond, towards the 76 deg image corners, the fit extrapolates:
    0.8 px there).
    """
    scene = fisheye_scene
    views = scene.random_views(30, seed=0)
    images = [scene.render(t) for t in views]
    intr = calibrate_intrinsics(images, scene.board, model="fisheye")
    truth, k_true = scene.lens.camera_matrix, scene.lens.dist
    err = intr.dist - k_true
    std = np.array([intr.details["std"][f"k{i}"] for i in range(1, 5)])
    reach = intr.details["corners_reach_deg"]
    within, anywhere = pixel_error(intr, scene.lens, reach), pixel_error(intr, scene.lens)
    print(
        f"fisheye: {intr.n_views} views, rms {intr.rms_px:.3f} px, "
        f"fx {100 * (intr.fx / truth[0, 0] - 1):+.3f} % fy {100 * (intr.fy / truth[1, 1] - 1):+.3f} %, "
        f"c ({intr.cx - truth[0, 2]:+.2f}, {intr.cy - truth[1, 2]:+.2f}) px, "
        f"k error {np.array2string(err, precision=5)} (k1 {100 * err[0] / k_true[0]:+.2f} %), std "
        f"{np.array2string(std, precision=5)}; pixels off <= {within:.3f} px within the {reach:.1f} deg the "
        f"corners reach, {anywhere:.3f} px anywhere"
    )
    assert intr.model == "fisheye" and intr.n_views >= 24 and intr.rms_px < 0.5
    assert abs(intr.fx / truth[0, 0] - 1) < 0.01 and abs(intr.fy / truth[1, 1] - 1) < 0.01
    assert abs(intr.cx - truth[0, 2]) < 1 and abs(intr.cy - truth[1, 2]) < 1
    assert abs(err[0] / k_true[0]) < 0.05
    assert np.all(np.abs(err[1:]) < np.minimum(4 * std[1:], [0.015, 0.015, 0.006]))
    assert reach > 60 and within < 0.4
    intr.save(tmp_path / "f.json")
    back = Intrinsics.load(tmp_path / "f.json", model="fisheye")
    np.testing.assert_allclose(back.dist, intr.dist)
    assert back.model == "fisheye"


def test_model_field_round_trips_and_guards(tmp_path):
    k = np.array([[300.0, 0, 319.5], [0, 300, 239.5], [0, 0, 1]])
    old = {"camera_matrix": k.tolist(), "dist": [0.0] * 5, "size": [480, 640], "rms_px": 0.1, "n_views": 9}
    (tmp_path / "old.json").write_text(json.dumps(old))  # written before `model` existed
    assert Intrinsics.load(tmp_path / "old.json", model="pinhole").model == "pinhole"
    Intrinsics(k, np.array([0.1, 0.01, 0, 0]), (480, 640), model="fisheye").save(tmp_path / "f.json")
    with pytest.raises(
        ValueError, match=r"f.json: fisheye intrinsics where pinhole ones are needed \(rectify"
    ) as e:
        Intrinsics.load(tmp_path / "f.json", model="pinhole")
    assert "\n" not in str(e.value)
    (tmp_path / "bad.json").write_text(json.dumps({**old, "model": "fisheye"}))  # 5 coefficients
    with pytest.raises(ValueError, match=r"bad.json: not an intrinsics file \(fisheye model needs 4"):
        Intrinsics.load(tmp_path / "bad.json")
    (tmp_path / "bad2.json").write_text(json.dumps({**old, "model": "omni"}))
    with pytest.raises(ValueError, match=r"bad2.json: not an intrinsics file \(camera model must be one of"):
        Intrinsics.load(tmp_path / "bad2.json")


def test_bad_fisheye_inputs_get_one_line_errors(fisheye_scene):
    scene = fisheye_scene
    images = [scene.render(t) for t in scene.random_views(7, seed=2)]
    with pytest.raises(ValueError, match=r"board found .* in \d of 7 images, need 8 for a fisheye"):
        calibrate_intrinsics(images, scene.board, model="fisheye")
    with pytest.raises(ValueError, match="the fisheye model always fits k1..k4"):
        calibrate_intrinsics(images, scene.board, model="fisheye", distortion="radial")
    with pytest.raises(ValueError, match="model must be one of"):
        calibrate_intrinsics(images, scene.board, model="omni")
    with pytest.raises(ValueError, match=r"rectify: image is \(100, 100\)"):
        rectify(
            np.zeros((100, 100, 3), np.uint8),
            Intrinsics(scene.lens.camera_matrix, scene.lens.dist, (480, 640), model="fisheye"),
        )


def test_board_pose_through_a_fisheye(fisheye_scene):
    """charuco.board_pose with model="fisheye" (what --png and a hand-eye on fisheye views need)."""
    from mimic.calibration.charuco import board_pose
    from mimic.calibration.handeye import pose_error

    scene = fisheye_scene
    t = scene.random_views(3, seed=4)[0]
    det = CharucoDetector(scene.board).detect(scene.render(t))
    est = board_pose(det, scene.lens.camera_matrix, scene.lens.dist, "fisheye")
    dist_m, ang_deg = pose_error(np.linalg.inv(t) @ scene.board_pose, est)
    assert dist_m < 1e-3 and ang_deg < 0.2, (dist_m, ang_deg)
