"""`mimic calibrate intrinsics --model fisheye` end to end: the twin's board seen through umi_fisheye (seed 0,
40 views), the JSON, the PNG mosaic, the printed errors against the twin truth, and image files on disk."""

from __future__ import annotations

import cv2
import numpy as np

from mimic.calibration.charuco import write_png
from mimic.calibration.cli import main as calibrate
from mimic.calibration.intrinsics import Intrinsics
from mimic.sim.camera_model import LensBoardScene, umi_fisheye


def test_fisheye_intrinsics_from_the_twin_and_from_files(tmp_path, capsys):
    out, png = tmp_path / "f.json", tmp_path / "f.png"
    assert (
        calibrate(["intrinsics", "--twin", "--model", "fisheye", "--out", str(out), "--png", str(png)]) == 0
    )
    printed = capsys.readouterr().out
    print(printed)
    assert "fx error" in printed and "fy error" in printed
    assert all(f"k{i} " in printed for i in range(1, 5))
    intr = Intrinsics.load(out, model="fisheye")
    truth = umi_fisheye()
    assert intr.n_views >= 32 and intr.rms_px < 0.5
    assert (
        abs(intr.fx / truth.camera_matrix[0, 0] - 1) < 0.01
        and abs(intr.fy / truth.camera_matrix[1, 1] - 1) < 0.01
    )
    assert abs(intr.dist[0] / truth.dist[0] - 1) < 0.05
    std = np.array([intr.details["std"][f"k{i}"] for i in range(2, 5)])
    assert np.all(np.abs(intr.dist[1:] - truth.dist[1:]) < np.minimum(4 * std, [0.015, 0.015, 0.006]))
    mosaic = cv2.imread(str(png))
    assert mosaic is not None and mosaic.std() > 10

    # A user's path: fisheye images on disk (PNG, lossless) calibrate the same way.
    scene = LensBoardScene()
    try:
        images = [scene.render(t) for t in scene.random_views(16, seed=5)]
    finally:
        scene.close()
    (tmp_path / "views").mkdir()
    for i, img in enumerate(images):
        write_png(str(tmp_path / "views" / f"{i:03d}.png"), img)
    files = str(tmp_path / "views" / "*.png")
    assert (
        calibrate(["intrinsics", "--images", files, "--model", "fisheye", "--out", str(tmp_path / "g.json")])
        == 0
    )
    from_files = Intrinsics.load(tmp_path / "g.json", model="fisheye")
    assert abs(from_files.fx / truth.camera_matrix[0, 0] - 1) < 0.01 and from_files.rms_px < 0.5

    # Bad input: one line on stderr, exit 1, nothing written.
    few = str(tmp_path / "views" / "00[0-4].png")
    assert (
        calibrate(["intrinsics", "--images", few, "--model", "fisheye", "--out", str(tmp_path / "h.json")])
        == 1
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("mimic calibrate intrinsics:") and "need 8 for a fisheye" in err and "\n" not in err
    assert not (tmp_path / "h.json").exists()
