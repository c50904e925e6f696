"""ChArUco intrinsics and hand-eye calibration against the twin's renders (ground truth from the MJCF)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mimic.calibration.charuco import CharucoDetector, board_pose
from mimic.calibration.handeye import HandEye, calibrate_hand_eye, collect_twin_views, pose_error
from mimic.calibration.intrinsics import Intrinsics, calibrate_intrinsics
from mimic.sim.boards import CharucoBoardSpec
from mimic.sim.handheld import ArmBoardScene, BoardScene


@pytest.fixture(scope="module")
def board_views():
    scene = BoardScene(size=(480, 640), fovy_deg=55.0)
    views = scene.random_views(15, seed=0)
    images = [scene.render(v) for v in views]
    yield scene, views, images
    scene.close()


@pytest.mark.parametrize("distortion", ["none", "standard"])
def test_intrinsics_within_one_percent_of_the_renderer(board_views, distortion, tmp_path):
    scene, _, images = board_views
    intr = calibrate_intrinsics(images, scene.board, distortion=distortion)
    truth = scene.camera_matrix()
    for got, want in (
        (intr.fx, truth[0, 0]),
        (intr.fy, truth[1, 1]),
        (intr.cx, truth[0, 2]),
        (intr.cy, truth[1, 2]),
    ):
        assert abs(got - want) / want < 0.01, (got, want)
    assert intr.rms_px < 0.5 and intr.n_views >= 12
    intr.save(tmp_path / "cam.json")
    back = Intrinsics.load(tmp_path / "cam.json", model="pinhole")
    np.testing.assert_allclose(back.camera_matrix, intr.camera_matrix)
    assert back.size == (480, 640) and back.model == "pinhole"


def test_board_frame_matches_mujoco(board_views):
    """PnP's T_cam_board equals the scene's true pose: the texture is neither mirrored nor shifted."""
    scene, views, images = board_views
    det = CharucoDetector(scene.board).detect(images[0])
    assert det is not None and len(det) >= 10
    est = board_pose(det, scene.camera_matrix())
    truth = np.linalg.inv(views[0]) @ scene.board_pose
    dist_m, ang_deg = pose_error(truth, est)
    assert dist_m < 1e-3 and ang_deg < 0.2


@pytest.mark.parametrize("arm", ["franka", "ur5e", "xarm7"])
def test_hand_eye_recovers_the_wrist_camera_mount(arm, tmp_path):
    flanges, images, truth = collect_twin_views(
        arm, n_views=15
    )  # views planned with a mount guess 1 cm/3 deg off
    assert len(images) >= 10
    board = CharucoBoardSpec()
    intr = calibrate_intrinsics(images, board, distortion="standard")  # the camera's own intrinsics first
    he = calibrate_hand_eye(flanges, images, intr, board)
    dist_m, ang_deg = pose_error(truth, he.t_flange_cam)
    print(
        f"{arm}: hand-eye error {dist_m * 1e3:.3f} mm {ang_deg:.3f} deg over {he.n_views} views; "
        f"board spread {he.board_spread_mm:.3f} mm {he.board_spread_deg:.3f} deg"
    )
    assert dist_m < 0.002 and ang_deg < 0.5
    assert he.board_spread_mm < 2.0
    he.save(tmp_path / "he.json")
    np.testing.assert_allclose(HandEye.load(tmp_path / "he.json").t_flange_cam, he.t_flange_cam)


def test_true_mount_is_the_mjcf_wrist_camera():
    scene = ArmBoardScene("franka")
    scene.set_joints(scene.spec.home)
    mount = scene.true_camera_mount()
    scene.set_joints(scene.spec.home + 0.3)  # a property of the hand: the same in any configuration
    np.testing.assert_allclose(scene.true_camera_mount(), mount, atol=1e-9)
    np.testing.assert_allclose(
        mount[:3, 3], [0.07, 0.0, 0.0], atol=1e-9
    )  # robots/arm_mjcf.py: <camera name="wrist" pos="0.07 0 0">
    scene.close()


def test_bad_inputs_get_one_line_errors(board_views, tmp_path):
    scene, _, images = board_views
    blank = np.zeros_like(images[0])
    with pytest.raises(ValueError, match=r"board found .* in 2 of 8 images, need 5"):
        calibrate_intrinsics([*images[:2], *[blank] * 6], scene.board)
    # "fisheye" is a camera model, not one of the pinhole distortion choices: the error says where it is
    with pytest.raises(
        ValueError, match=r"distortion must be one of .*\(a fisheye lens is model='fisheye'\)"
    ):
        calibrate_intrinsics(images, scene.board, distortion="fisheye")
    with pytest.raises(ValueError, match=r"in 7 of 7 images, need 8 for a fisheye"):
        calibrate_intrinsics(images[:7], scene.board, model="fisheye")
    with pytest.raises(ValueError, match="3 flange poses but 2 images"):
        calibrate_hand_eye(
            [np.eye(4)] * 3,
            images[:2],
            Intrinsics(scene.camera_matrix(), np.zeros(5), (480, 640)),
            scene.board,
        )
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="bad.json: not an intrinsics file"):
        Intrinsics.load(bad)
    with pytest.raises(ValueError, match="bad.json: not a hand-eye file"):
        HandEye.load(bad)


def test_board_scenes_load_no_calibration_module():
    """The twin's board scenes sit below the calibration procedures that photograph them."""
    code = (
        "import sys, mimic.sim.handheld, mimic.sim.boards\n"
        "print(*sorted(m for m in sys.modules if m.startswith('mimic.calibration')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == []
