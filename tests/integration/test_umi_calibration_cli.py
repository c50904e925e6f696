"""`mimic calibrate intrinsics|handeye` end to end on twin renders: JSON + PNG written, twin truth printed, bad input -> one line."""

from __future__ import annotations

import json

import cv2
import numpy as np

from mimic.calibration.charuco import write_png
from mimic.calibration.cli import main as calibrate
from mimic.calibration.handeye import HandEye
from mimic.calibration.intrinsics import Intrinsics


def intrinsics_main(argv: list[str]) -> int:
    return calibrate(["intrinsics", *argv])


def handeye_main(argv: list[str]) -> int:
    return calibrate(["handeye", *argv])


def test_intrinsics_then_hand_eye_from_files(tmp_path, capsys):
    assert (
        intrinsics_main(["--twin", "--out", str(tmp_path / "cam.json"), "--png", str(tmp_path / "cam.png")])
        == 0
    )
    assert "fx error" in capsys.readouterr().out
    assert Intrinsics.load(tmp_path / "cam.json").n_views == 15
    assert cv2.imread(str(tmp_path / "cam.png")).std() > 10

    # The file path a user with a real robot takes: images on disk + flange poses in JSON.
    from mimic.calibration.handeye import collect_twin_views, pose_error

    flanges, images, truth = collect_twin_views("xarm7", n_views=12)
    (tmp_path / "views").mkdir()
    for i, img in enumerate(images):
        write_png(str(tmp_path / "views" / f"{i:03d}.png"), img)
    (tmp_path / "poses.json").write_text(json.dumps([f.tolist() for f in flanges]))
    assert (
        intrinsics_main(
            ["--images", str(tmp_path / "views" / "*.png"), "--out", str(tmp_path / "wrist.json")]
        )
        == 0
    )
    assert (
        handeye_main(
            [
                "--poses",
                str(tmp_path / "poses.json"),
                "--images",
                str(tmp_path / "views" / "*.png"),
                "--intrinsics",
                str(tmp_path / "wrist.json"),
                "--out",
                str(tmp_path / "he.json"),
                "--png",
                str(tmp_path / "he.png"),
            ]
        )
        == 0
    )
    mm, deg = pose_error(truth, HandEye.load(tmp_path / "he.json").t_flange_cam)
    assert mm < 0.002 and deg < 0.5  # PNG round trip (lossless) keeps the accuracy
    assert cv2.imread(str(tmp_path / "he.png")) is not None


def test_bad_inputs_are_one_line_errors(tmp_path, capsys):
    assert (
        intrinsics_main(["--images", str(tmp_path / "none" / "*.png"), "--out", str(tmp_path / "c.json")])
        == 1
    )
    assert "no image files match" in capsys.readouterr().err
    assert (
        intrinsics_main(
            ["--twin", "--model", "fisheye", "--distortion", "radial", "--out", str(tmp_path / "c.json")]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "--model fisheye always fits k1..k4" in err and err.count("\n") == 1
    assert not (tmp_path / "c.json").exists()
    assert handeye_main(["--twin", "robotx", "--out", str(tmp_path / "h.json")]) == 1
    assert "unknown arm 'robotx'" in capsys.readouterr().err
    (tmp_path / "poses.json").write_text("[1, 2]")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert (
        handeye_main(
            [
                "--poses",
                str(tmp_path / "poses.json"),
                "--images",
                str(tmp_path / "a.png"),
                "--intrinsics",
                str(tmp_path / "missing.json"),
                "--out",
                str(tmp_path / "h.json"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimic calibrate handeye:") and "poses.json" in err and "\n" not in err
    assert not (tmp_path / "h.json").exists()
