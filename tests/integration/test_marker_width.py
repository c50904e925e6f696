"""Finger-marker gripper width end to end: a 30 fps handheld twin episode into a store, and `mimic calibrate
gripper-width` from the twin and from image files."""

from __future__ import annotations

import numpy as np
import zarr

from mimic.calibration.charuco import write_png
from mimic.calibration.cli import main as calibrate
from mimic.calibration.gripper_width import DETECTION_SIZE, twin_calibration, twin_episode_widths
from mimic.calibration.intrinsics import Intrinsics
from mimic.sim.handheld import HandheldEnv
from mimic.teleop.handheld import HandheldCapture, HandheldCaptureConfig
from mimic.teleop.marker_width import MarkerWidthCalibration, read_missing_widths

SEED = 3
OCCLUDE_EVERY = 15  # one frame in 15 gets a thumb over a marker


def test_handheld_episode_width_from_markers_is_complete_and_never_invented(tmp_path):
    """Widths read from 240x320 wrist frames at 30 fps (the 96x96 policy frames go to the store) with the
    default randomisation (wrist mount jittered by up to 1 cm, calibrated at the nominal mount)."""
    cal, _ = twin_calibration()
    # a 30 Hz width stream: 60 ms lets a grid row sit between two real samples across two lost frames
    cfg = HandheldCaptureConfig(lowdim_tolerance_s=0.06)
    cap = HandheldCapture.create(tmp_path / "hh.zarr", cfg, {"gripper_width_source": "finger markers"})
    cap.begin_episode()
    ep = twin_episode_widths(cal, seed=SEED, occlude_every=OCCLUDE_EVERY, capture=cap)
    assert ep.success
    rows = cap.end_episode()
    cap.close()

    got = np.isfinite(ep.measured)
    err = ep.errors_m * 1e3
    natural = int((~got & ~ep.occluded).sum())
    print(
        f"marker width, 30 fps episode (seed {SEED}): {len(ep.t)} frames, complete "
        f"{ep.completeness * 100:.1f} % ({int(ep.occluded.sum())} occluded by a thumb, {natural} hidden by the "
        f"grasp), error max {err.max():.2f} mm, mean {err.mean():.2f} mm; {rows} grid rows"
    )
    assert ep.completeness >= 0.9
    assert ep.occluded.sum() >= len(ep.t) // OCCLUDE_EVERY
    assert not got[ep.occluded].any()  # every occluded frame came out missing
    assert err.max() < 2.0
    # the store: missing frames are listed, and no grid row took a width at a missing time
    missing = read_missing_widths(tmp_path / "hh.zarr", 0)
    np.testing.assert_allclose(missing, ep.t[~got])
    data = zarr.open_group(str(tmp_path / "hh.zarr"), mode="r")["data"]
    used = data["robot0_gripper_width_t"][:]
    assert not np.isin(np.round(used, 9), np.round(missing, 9)).any()
    assert np.all(np.isin(np.round(used, 9), np.round(ep.t[got], 9)))
    assert np.isfinite(data["action"][:]).all() and len(used) == rows


def test_calibrate_gripper_width_from_twin_and_from_files(tmp_path, capsys):
    assert (
        calibrate(["gripper-width", "--twin", "--episodes", "1", "--out", str(tmp_path / "twin.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "twin check" in out and "twin episode seed 0" in out
    twin = MarkerWidthCalibration.load(tmp_path / "twin.json")
    assert twin.mode == "3d" and twin.widths == [0.0, 0.08] and twin.image_size == DETECTION_SIZE

    # what a user does: frames of the real gripper open and closed, plus the camera's intrinsics file
    cal, (opened, closed) = twin_calibration()
    for name, img in (("open_0.png", opened), ("closed_0.png", closed)):
        write_png(str(tmp_path / name), img)
    k = np.asarray(cal.camera_matrix)
    Intrinsics(k, np.zeros(5), DETECTION_SIZE).save(tmp_path / "wrist.json")
    args = [
        "gripper-width",
        "--open",
        str(tmp_path / "open_*.png"),
        "--closed",
        str(tmp_path / "closed_*.png"),
    ]
    out_json = str(tmp_path / "files.json")
    assert calibrate([*args, "--intrinsics", str(tmp_path / "wrist.json"), "--out", out_json]) == 0
    files = MarkerWidthCalibration.load(out_json)
    np.testing.assert_allclose(files.features, twin.features, atol=2e-4)  # PNG round trip, same frames

    for bad, message in (
        ([*args[:3], "--out", out_json], "--open needs --closed"),
        ([*args, "--out", out_json], "--mode 3d needs --intrinsics"),
        (
            [*args[:2], str(tmp_path / "nothing_*.png"), *args[3:], "--mode", "pixel", "--out", out_json],
            "no image",
        ),
        ([*args, "--mode", "pixel", "--open-width", "0", "--out", out_json], "must exceed closed width"),
        ([*args, "--mode", "pixel", "--episodes", "2", "--out", out_json], "use it with --twin"),
    ):
        assert calibrate(bad) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_calibration_refuses_frames_without_markers(tmp_path, capsys):
    env = HandheldEnv(seed=0)  # markers not printed
    env.reset(seed=0)
    write_png(str(tmp_path / "plain.png"), env.render("wrist", DETECTION_SIZE))
    env.close()
    p = str(tmp_path / "plain.png")
    argv = ["gripper-width", "--open", p, "--closed", p, "--mode", "pixel", "--out", str(tmp_path / "x.json")]
    assert calibrate(argv) == 1
    assert "not both found in any of the 1 open images" in capsys.readouterr().err


def test_width_through_a_umi_fisheye():
    """UMI's wrist camera is a fisheye: "3d" undistorts the corners with its Kannala-Brandt intrinsics.
    Calibrated open/closed at the nominal mount, measured at 2 jittered mounts and hand poses x 6 widths."""
    from mimic.calibration.gripper_width import calibrate_from_images, random_hand_poses
    from mimic.sim.camera_model import MujocoPinhole, render_through, umi_fisheye
    from mimic.sim.env import Randomization
    from mimic.teleop.marker_width import MarkerWidthSource

    lens = umi_fisheye((480, 640))
    still = Randomization(object_pose=0.0, colors=False, light=0.0, camera_pos_m=0.0)
    env = HandheldEnv(seed=0, finger_markers=True, randomization=still)
    cam = MujocoPinhole(env.model, env.data, "wrist")
    env.reset(seed=0, tcp_start=np.array([0.4, 0.0, 0.25]))
    frames = []
    for w in (0.08, 0.0):
        env.set_gripper_width(w)
        frames.append(render_through(cam, lens))
    cam.close()
    env.close()
    cal = calibrate_from_images(
        [frames[0]],
        [frames[1]],
        0.08,
        0.0,
        env.finger_markers,
        "3d",
        lens.camera_matrix,
        lens.dist,
        camera_model="fisheye",
    )
    source = MarkerWidthSource(cal)
    env = HandheldEnv(seed=1, finger_markers=True, randomization=Randomization(light_dir_rad=0.4))
    cam = MujocoPinhole(env.model, env.data, "wrist")
    errors = []
    for k, (pos, rot) in enumerate(random_hand_poses(2, seed=1)):
        env.reset(seed=1 + k)
        env.place_hand(pos, rot)
        for w in np.linspace(0.0, 0.08, 6):
            env.set_gripper_width(w)
            got = source.measure(render_through(cam, lens))
            assert got is not None
            errors.append(abs(got - env.gripper_width()) * 1e3)
    cam.close()
    env.close()
    print(f"fisheye 640x480 (120 deg), 3d: max error {max(errors):.2f} mm, mean {np.mean(errors):.2f} mm")
    assert max(errors) < 2.0
