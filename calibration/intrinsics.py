"""Camera intrinsics from ChArUco images (OpenCV calibrateCamera), saved as a small JSON file.

Any set of views works as long as the board is seen at several tilts and distances: a fronto-parallel
series alone cannot separate focal length from distance. Per-view corner counts below `min_corners` are
skipped (partial views are fine: ChArUco corners are identified individually).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mimic.calibration.charuco import CharucoDetector
from mimic.sim.boards import CharucoBoardSpec

# Which distortion terms to estimate. Rendered (pinhole) cameras need none; real lenses k1, k2 (+ p1, p2).
DISTORTION_FLAGS = {
    "none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "radial": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "standard": cv2.CALIB_FIX_K3,
    "full": 0,
}


@dataclass
class Intrinsics:
    """Pinhole camera: 3x3 `camera_matrix` (px), OpenCV distortion (k1 k2 p1 p2 k3), image size (h, w)."""

    camera_matrix: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    rms_px: float = float("nan")
    n_views: int = 0
    details: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @property
    def fx(self) -> float:
        return float(self.camera_matrix[0, 0])

    @property
    def fy(self) -> float:
        return float(self.camera_matrix[1, 1])

    @property
    def cx(self) -> float:
        return float(self.camera_matrix[0, 2])

    @property
    def cy(self) -> float:
        return float(self.camera_matrix[1, 2])

    def save(self, path: str | Path) -> None:
        d = asdict(self)
        d["camera_matrix"] = self.camera_matrix.tolist()
        d["dist"] = self.dist.reshape(-1).tolist()
        Path(path).write_text(json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Intrinsics:
        try:
            d = json.loads(Path(path).read_text())
            d["camera_matrix"] = np.asarray(d["camera_matrix"], float).reshape(3, 3)
            d["dist"] = np.asarray(d["dist"], float)
            d["size"] = tuple(d["size"])
            return cls(**d)
        except (OSError, json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not an intrinsics file ({e})") from None


def calibrate_intrinsics(
    images: list[np.ndarray],
    board: CharucoBoardSpec,
    min_corners: int = 8,
    distortion: str = "standard",
    min_views: int = 5,
) -> Intrinsics:
    """Intrinsics from uint8 images of `board`; raises ValueError naming the shortfall if too few views."""
    if distortion not in DISTORTION_FLAGS:
        raise ValueError(
            f"intrinsics: distortion must be one of {sorted(DISTORTION_FLAGS)}, got {distortion!r}"
        )
    if not images:
        raise ValueError("intrinsics: no images given")
    size = tuple(images[0].shape[:2])
    detector = CharucoDetector(board)
    obj, img, used = [], [], []
    for i, im in enumerate(images):
        if tuple(im.shape[:2]) != size:
            raise ValueError(f"intrinsics: image {i} is {im.shape[:2]}, the first one {size}")
        det = detector.detect(im, min_corners)
        if det is not None:
            obj.append(det.object_points.astype(np.float32))
            img.append(det.corners_px.astype(np.float32))
            used.append(i)
    if len(used) < min_views:
        raise ValueError(
            f"intrinsics: board found (>= {min_corners} corners) in {len(used)} of {len(images)} "
            f"images, need {min_views}"
        )
    h, w = size
    k0 = np.array([[w, 0, (w - 1) / 2], [0, w, (h - 1) / 2], [0, 0, 1.0]])
    rms, k, dist, _, _ = cv2.calibrateCamera(
        obj, img, (w, h), k0, np.zeros(5), flags=cv2.CALIB_USE_INTRINSIC_GUESS | DISTORTION_FLAGS[distortion]
    )
    return Intrinsics(
        np.asarray(k, float),
        np.asarray(dist, float).reshape(-1),
        (h, w),
        float(rms),
        len(used),
        {"views_used": used, "distortion": distortion, "board": board.to_json()},
    )


def configure(p) -> None:
    """`mimic calibrate intrinsics (--images GLOB | --twin) --out cam.json [--png views.png]`."""
    from mimic.calibration.charuco import add_board_args

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="glob of board images, e.g. 'calib/*.png'")
    src.add_argument("--twin", action="store_true", help="render 15 views of the board in the MuJoCo twin")
    p.add_argument("--out", required=True, help="intrinsics JSON to write")
    p.add_argument("--png", help="mosaic of the views with detected corners and board axes")
    p.add_argument("--distortion", default="standard", choices=sorted(DISTORTION_FLAGS))
    add_board_args(p)


def run(a) -> int:
    from mimic.calibration.charuco import board_from_args, load_images, write_detections

    board = board_from_args(a)
    truth = None
    if a.twin:
        from mimic.sim.handheld import BoardScene

        scene = BoardScene(board)
        images = [scene.render(v) for v in scene.random_views(15, seed=0)]
        truth = scene.camera_matrix()
        scene.close()
    else:
        images = load_images(a.images)
    intr = calibrate_intrinsics(images, board, distortion=a.distortion)
    intr.save(a.out)
    print(
        f"{a.out}: fx {intr.fx:.2f} fy {intr.fy:.2f} cx {intr.cx:.2f} cy {intr.cy:.2f} px, "
        f"rms {intr.rms_px:.3f} px over {intr.n_views} views"
    )
    if truth is not None:
        print(
            f"twin truth: f {truth[0, 0]:.2f} cx {truth[0, 2]:.2f} cy {truth[1, 2]:.2f} px "
            f"(fx error {abs(intr.fx - truth[0, 0]) / truth[0, 0] * 100:.3f} %)"
        )
    if a.png:
        write_detections(a.png, images, board, intr)
    return 0
