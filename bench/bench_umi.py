"""UMI capture path: handheld demo recording rate, capture ingestion, relative-action transform, calibration solves.

Recording rate decides how long a twin dataset takes; capture ingestion must outrun a 100-200 Hz tracker
by far so it never falls behind a ROS callback; the relative transform runs once per policy inference
(decode) and once per training window (encode); calibration solves show what a user waits for.
"""

from __future__ import annotations

import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from bench.common import BenchResult, percentiles, time_calls  # noqa: E402


def _recording(res: BenchResult, quick: bool) -> None:
    from mimic.teleop.handheld import TwinStreamLatency, record_twin

    episodes = 2 if quick else 10
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        out = record_twin(
            f"{tmp}/h.zarr",
            episodes,
            seed=0,
            injected=TwinStreamLatency(0.03, 0.01, 0.08, 0.004),
            progress=False,
        )
        dt = time.perf_counter() - t0
    res.rows.append(
        {
            "what": "record_twin",
            "episodes": out["episodes"],
            "rows_per_s": round(out["rows"] / dt, 1),
            "realtime_x": round(out["rows"] / 10.0 / dt, 2),
        }
    )


def _ingestion(res: BenchResult, quick: bool) -> None:
    from mimic.teleop.handheld import HandheldCapture, HandheldCaptureConfig

    n = 2000 if quick else 20000
    quat = Rotation.from_euler("x", 3.1).as_quat(scalar_first=True)
    with tempfile.TemporaryDirectory() as tmp:
        cap = HandheldCapture.create(f"{tmp}/h.zarr", HandheldCaptureConfig(image_size=(96, 96)))
        cap.begin_episode()
        img = np.zeros((96, 96, 3), np.uint8)
        per_pose = []
        for k in range(n):
            t = k * 0.005
            t0 = time.perf_counter()
            cap.on_pose(t, [t, 0, 0], quat)
            per_pose.append(time.perf_counter() - t0)
            if k % 4 == 0:
                cap.on_gripper(t, 0.05)
            if k % 7 == 0:
                cap.on_frame(t, img)
        cap.end_episode()
        cap.close()
    p = percentiles(per_pose)
    res.rows.append(
        {
            "what": "capture on_pose",
            "p50_ms": round(p["p50"], 3),
            "p99_ms": round(p["p99"], 3),
            "max_ms": round(p["max"], 2),
        }
    )


def _relative(res: BenchResult, quick: bool) -> None:
    from mimic.data.relative import RelativeTrajectory

    tf = RelativeTrajectory()
    rng = np.random.default_rng(0)
    item = {
        "obs": {
            "robot0_eef_pos": rng.normal(size=(2, 3)),
            "robot0_eef_rot_axis_angle": rng.normal(size=(2, 3)),
        },
        "action": np.concatenate([rng.normal(size=(16, 6)), rng.uniform(0, 0.08, (16, 1))], 1),
    }
    rel = tf.encode_window(item)
    ref = tf.reference(item["obs"])
    reps = 200 if quick else 2000
    enc = time_calls(lambda: tf.encode_window(item), reps)
    dec = time_calls(lambda: tf.decode_actions(rel["action"], ref), reps)
    res.rows.append({"what": "relative encode", "p50_ms": round(float(np.median(enc)) * 1e3, 3)})
    res.rows.append({"what": "relative decode", "p50_ms": round(float(np.median(dec)) * 1e3, 3)})


def _calibration(res: BenchResult, quick: bool) -> None:
    from mimic.calibration.handeye import calibrate_hand_eye, pose_error
    from mimic.calibration.intrinsics import calibrate_intrinsics
    from mimic.sim.handheld import ArmBoardScene, BoardScene, board_center, random_views

    scene = BoardScene()
    images = [scene.render(v) for v in scene.random_views(15, seed=0)]
    t0 = time.perf_counter()
    intr = calibrate_intrinsics(images, scene.board, distortion="standard")
    dt = time.perf_counter() - t0
    k = scene.camera_matrix()
    res.rows.append(
        {
            "what": "intrinsics",
            "solve_s": round(dt, 3),
            "fx_err_pct": round(abs(intr.fx - k[0, 0]) / k[0, 0] * 100, 4),
            "rms_px": round(intr.rms_px, 3),
        }
    )
    scene.close()
    for arm in ("franka",) if quick else ("franka", "ur5e", "xarm7"):
        sc = ArmBoardScene(arm)
        sc.set_joints(sc.spec.home)
        truth = sc.true_camera_mount()
        flanges, imgs = [], []
        for v in random_views(
            board_center(sc.board, sc.board_pose),
            20,
            seed=1,
            distance_m=(0.28, 0.45),
            max_tilt_deg=35,
            max_roll_rad=0.8,
        ):
            if sc.move_camera_to(v, truth) < 0.01:
                flanges.append(sc.flange_pose())
                imgs.append(sc.render_wrist())
        t0 = time.perf_counter()
        intr = calibrate_intrinsics(imgs, sc.board, distortion="standard")
        he = calibrate_hand_eye(flanges, imgs, intr, sc.board)
        dt = time.perf_counter() - t0
        mm, deg = pose_error(truth, he.t_flange_cam)
        res.rows.append(
            {
                "what": f"hand-eye {arm}",
                "views": he.n_views,
                "solve_s": round(dt, 3),
                "err_mm": round(mm * 1e3, 3),
                "err_deg": round(deg, 3),
            }
        )
        sc.close()


def run(quick: bool) -> BenchResult:
    res = BenchResult(name="umi")
    _recording(res, quick)
    _ingestion(res, quick)
    _relative(res, quick)
    _calibration(res, quick)
    res.notes += [
        "record_twin: 96x96 wrist camera at 29.4 Hz, pose and width at 100 Hz, into a Zarr store",
        "capture on_pose: a 200 Hz pose stream with width 50 Hz and frames 29 Hz, grid rows emitted",
        "relative encode: 2 obs steps + 16 actions; decode: one 16 x 10 chunk (per inference)",
        "intrinsics: 15 views at 480x640; hand-eye solve includes the wrist camera's intrinsics",
    ]
    res.notes.append(
        "record_twin runs the twin unpaced (sim time), so realtime_x > 1 means faster than a person"
    )
    return res
