"""Hand-eye calibration: where the wrist camera sits on the flange, from views of a fixed ChArUco board.

Eye-in-hand: the board stays put while the arm moves; for every view the robot reports T_base_flange and
PnP gives T_cam_board. The unknown mount X = T_flange_cam satisfies A_i X = X B_i for every pair of views
(cv2.calibrateHandEye solves it; Park's method by default, the others are a flag away). The board's pose
in the base, T_base_flange X T_cam_board, must then be the same in every view: its spread is the
calibration's own consistency check and is reported with the result.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mimic.calibration.charuco import CharucoDetector, board_pose
from mimic.calibration.intrinsics import Intrinsics
from mimic.sim.boards import CharucoBoardSpec, board_center

METHODS = {
    "tsai": cv2.CALIB_HAND_EYE_TSAI,
    "park": cv2.CALIB_HAND_EYE_PARK,
    "horaud": cv2.CALIB_HAND_EYE_HORAUD,
    "andreff": cv2.CALIB_HAND_EYE_ANDREFF,
    "daniilidis": cv2.CALIB_HAND_EYE_DANIILIDIS,
}


@dataclass
class HandEye:
    """T_flange_cam (4x4, m; camera in OpenCV convention) and how consistent the views were with it."""

    t_flange_cam: np.ndarray
    method: str
    n_views: int
    board_spread_mm: float  # RMS distance of the board origin (in the base) from its mean over views
    board_spread_deg: float  # RMS angle of the board orientation from its mean over views
    details: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def save(self, path: str | Path) -> None:
        d = {**self.__dict__, "t_flange_cam": self.t_flange_cam.tolist()}
        Path(path).write_text(json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> HandEye:
        try:
            d = json.loads(Path(path).read_text())
            d["t_flange_cam"] = np.asarray(d["t_flange_cam"], float).reshape(4, 4)
            return cls(**d)
        except (OSError, json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not a hand-eye file ({e})") from None


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation distance in m, rotation angle in degrees) between two 4x4 poses."""
    d = np.linalg.inv(a) @ b
    cos = np.clip((np.trace(d[:3, :3]) - 1) / 2, -1.0, 1.0)
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), float(np.degrees(np.arccos(cos)))


def solve_hand_eye(
    t_base_flange: list[np.ndarray], t_cam_board: list[np.ndarray], method: str = "park"
) -> np.ndarray:
    """X = T_flange_cam from paired poses (>= 3 views with rotations about non-parallel axes)."""
    if method not in METHODS:
        raise ValueError(f"hand-eye: method must be one of {sorted(METHODS)}, got {method!r}")
    if len(t_base_flange) != len(t_cam_board) or len(t_base_flange) < 3:
        raise ValueError(
            f"hand-eye: need >= 3 paired views, got {len(t_base_flange)} flange poses and "
            f"{len(t_cam_board)} board poses"
        )
    r, t = cv2.calibrateHandEye(
        [a[:3, :3] for a in t_base_flange],
        [a[:3, 3] for a in t_base_flange],
        [b[:3, :3] for b in t_cam_board],
        [b[:3, 3] for b in t_cam_board],
        method=METHODS[method],
    )
    x = np.eye(4)
    x[:3, :3], x[:3, 3] = r, np.asarray(t).reshape(3)
    return x


def board_in_base_spread(
    t_base_flange: list[np.ndarray], t_cam_board: list[np.ndarray], x: np.ndarray
) -> tuple[float, float]:
    """(RMS mm, RMS deg) spread of T_base_board over the views: ~0 when X and the data agree."""
    boards = [a @ x @ b for a, b in zip(t_base_flange, t_cam_board, strict=True)]
    mean_p = np.mean([b[:3, 3] for b in boards], axis=0)
    u, _, vt = np.linalg.svd(np.sum([b[:3, :3] for b in boards], axis=0))
    mean = np.eye(4)
    mean[:3, :3] = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
    mean[:3, 3] = mean_p
    errs = np.array([pose_error(mean, b) for b in boards])
    return float(np.sqrt(np.mean(errs[:, 0] ** 2)) * 1e3), float(np.sqrt(np.mean(errs[:, 1] ** 2)))


def calibrate_hand_eye(
    t_base_flange: list[np.ndarray],
    images: list[np.ndarray],
    intrinsics: Intrinsics,
    board: CharucoBoardSpec,
    method: str = "park",
    min_corners: int = 10,
) -> HandEye:
    """Hand-eye from flange poses and the wrist camera's images taken at them (views without a board skip)."""
    if len(t_base_flange) != len(images):
        raise ValueError(f"hand-eye: {len(t_base_flange)} flange poses but {len(images)} images")
    detector = CharucoDetector(board)
    flanges, boards, used = [], [], []
    for i, (pose, im) in enumerate(zip(t_base_flange, images, strict=True)):
        det = detector.detect(im, min_corners)
        if det is None:
            continue
        flanges.append(np.asarray(pose, float))
        boards.append(board_pose(det, intrinsics.camera_matrix, intrinsics.dist, intrinsics.model))
        used.append(i)
    if len(used) < 3:
        raise ValueError(
            f"hand-eye: board found (>= {min_corners} corners) in {len(used)} of {len(images)} views, need 3"
        )
    x = solve_hand_eye(flanges, boards, method)
    mm, deg = board_in_base_spread(flanges, boards, x)
    return HandEye(x, method, len(used), mm, deg, {"views_used": used, "board": board.to_json()})


# ---- timing of the pose stream against the (wrist) camera --------------------------------------
def pose_stream_latency(
    t_pose_arrival: np.ndarray,
    positions: np.ndarray,
    t_frame_arrival: np.ndarray,
    frames: np.ndarray,
    camera_latency_s: float,
    max_offset_s: float = 0.3,
) -> float:
    """Capture-to-arrival latency (s) of a pose stream, from the gripper swaying in front of its own camera.

    The camera's image motion (mimic.calibration.latency.motion_signal) and the pose's displacement along its
    main direction are the same motion; cross-correlating them by arrival time gives L_camera - L_pose
    (either sign, up to `max_offset_s`), and the camera's own latency (time-code display,
    mimic.calibration.latency.camera_latency) turns that into L_pose. Sway a few cm at ~0.5-1 Hz for >= 5 s.
    """
    from mimic.calibration.latency import camera_latency_from_motion

    p = np.asarray(positions, float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) != len(t_pose_arrival):
        raise ValueError(
            f"pose latency: positions must be [n, 3] matching {len(t_pose_arrival)} times, got {p.shape}"
        )
    if len(frames) != len(t_frame_arrival) or len(frames) < 10:
        raise ValueError(
            f"pose latency: need >= 10 frames with one arrival time each, got {len(frames)} "
            f"frames and {len(t_frame_arrival)} times"
        )
    centred = p - p.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    x = centred @ direction
    # Shift the pose stream earlier by max_offset_s so that either ordering is a non-negative delay.
    d = camera_latency_from_motion(
        np.asarray(t_pose_arrival, float) - max_offset_s,
        x,
        np.asarray(t_frame_arrival, float),
        np.asarray(frames),
        2 * max_offset_s,
    )
    return float(camera_latency_s - (d - max_offset_s))


def collect_twin_views(arm: str, n_views: int = 15, seed: int = 1, size: tuple[int, int] = (480, 640)):
    """Hand-eye data from an arm twin: (flange poses, wrist images, true T_flange_cam).

    Views are planned around the board with a CAD-like mount guess (1 cm / 3 deg off the truth) and
    reached by IK; only the flange poses MuJoCo reports afterwards enter the calibration.
    """
    from mimic.sim.handheld import ArmBoardScene, random_views

    scene = ArmBoardScene(arm, size=size)
    scene.set_joints(scene.spec.home)
    truth = scene.true_camera_mount()
    cad = truth.copy()
    cad[:3, 3] += 0.01
    c, s = np.cos(0.05), np.sin(0.05)
    cad[:3, :3] = cad[:3, :3] @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    detector = CharucoDetector(scene.board)
    flanges, images = [], []
    for view in random_views(
        board_center(scene.board, scene.board_pose),
        4 * n_views,
        seed=seed,
        distance_m=(0.28, 0.45),
        max_tilt_deg=35,
        max_roll_rad=0.8,
    ):
        if scene.move_camera_to(view, cad) > 0.01:
            continue
        img = scene.render_wrist()
        if detector.detect(img, 10) is None:
            continue
        flanges.append(scene.flange_pose())
        images.append(img)
        if len(images) == n_views:
            break
    scene.close()
    return flanges, images, truth


def configure(p) -> None:
    """`mimic calibrate handeye (--twin ARM | --poses P.json --images GLOB --intrinsics K.json) --out he.json`."""
    from mimic.calibration.charuco import add_board_args

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--twin", metavar="ARM", help="collect views on this arm's MuJoCo twin (franka, ur5e, xarm7)"
    )
    src.add_argument("--poses", help="JSON list of 4x4 T_base_flange, one per image in sorted --images order")
    p.add_argument("--images", help="glob of wrist-camera images of the fixed board")
    p.add_argument(
        "--intrinsics", help="intrinsics JSON (mimic calibrate intrinsics); --twin calibrates its own"
    )
    p.add_argument("--method", default="park", choices=sorted(METHODS))
    p.add_argument("--out", required=True)
    p.add_argument("--png", help="mosaic of the views with detected corners and board axes")
    add_board_args(p)


def run(a) -> int:
    from mimic.calibration.charuco import board_from_args, load_images, write_detections
    from mimic.calibration.intrinsics import calibrate_intrinsics

    board = board_from_args(a)
    truth = None
    if a.twin:
        flanges, images, truth = collect_twin_views(a.twin)
        intr = calibrate_intrinsics(images, board)
    else:
        if not a.images or not a.intrinsics:
            raise ValueError("--poses needs --images and --intrinsics")
        try:
            flanges = [np.asarray(t, float).reshape(4, 4) for t in json.loads(Path(a.poses).read_text())]
        except (OSError, json.JSONDecodeError, ValueError, TypeError) as e:
            raise ValueError(f"{a.poses}: not a JSON list of 4x4 poses ({e})") from None
        images = load_images(a.images)
        intr = Intrinsics.load(a.intrinsics)
    he = calibrate_hand_eye(flanges, images, intr, board, a.method)
    he.save(a.out)
    t = he.t_flange_cam[:3, 3] * 1e3
    print(
        f"{a.out}: camera at [{t[0]:.2f} {t[1]:.2f} {t[2]:.2f}] mm in the flange frame, {he.n_views} views, "
        f"board spread {he.board_spread_mm:.3f} mm / {he.board_spread_deg:.3f} deg"
    )
    if truth is not None:
        mm, deg = pose_error(truth, he.t_flange_cam)
        print(f"twin truth: error {mm * 1e3:.3f} mm / {deg:.3f} deg")
    if a.png:
        write_detections(a.png, images, board, intr)
    return 0
