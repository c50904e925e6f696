"""Camera intrinsics from ChArUco images, saved as a small JSON file: pinhole or fisheye.

- pinhole (default): cv2.calibrateCamera, OpenCV's distortion k1 k2 p1 p2 k3; `distortion` picks the terms.
- fisheye: cv2.fisheye.calibrate, the Kannala-Brandt model theta_d = theta (1 + k1 theta^2 + k2 theta^4 +
  k3 theta^6 + k4 theta^8) of wide wrist cameras (UMI's GoPro); corners are detected on the distorted image
  (ChArUco interpolates each corner from its neighbouring markers' local homographies, which holds up on
  the twin's 152 deg `umi_fisheye`: corners 0.07 px RMS from the truth, out to 66 deg off-axis).

Any set of views works as long as the board is seen at several tilts and distances: a fronto-parallel
series alone cannot separate focal length from distance. A fisheye's distortion lives at the image edges:
its views must also put the board near the edges and corners. Per-view corner counts below `min_corners`
are skipped (partial views are fine: ChArUco corners are identified individually).

`rectify(image, intr)` turns either model's image into a pinhole image (zero distortion) for consumers
that need one; `rectified(intr)` is that image's camera.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mimic.calibration.charuco import CharucoDetector
from mimic.sim.boards import CharucoBoardSpec
from mimic.sim.camera_model import MODELS, check_lens, project, unproject

# Which distortion terms to estimate. Rendered (pinhole) cameras need none; real lenses k1, k2 (+ p1, p2).
DISTORTION_FLAGS = {
    "none": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "radial": cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "standard": cv2.CALIB_FIX_K3,
    "full": 0,
}
FISHEYE_FLAGS = cv2.fisheye.CALIB_RECOMPUTE_EXTRINSIC | cv2.fisheye.CALIB_FIX_SKEW
MIN_VIEWS = {"pinhole": 5, "fisheye": 8}  # fisheye: 4 more unknowns, all of them at the image edges
PINHOLE_TERMS = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6", "s1", "s2", "s3", "s4", "tx", "ty")


@dataclass
class Intrinsics:
    """A camera: 3x3 `camera_matrix` (px), distortion `dist`, image size (h, w) and its `model`:
    "pinhole" (OpenCV k1 k2 p1 p2 k3) or "fisheye" (Kannala-Brandt k1 k2 k3 k4, cv2.fisheye).
    Files written before the model field existed load as pinhole."""

    camera_matrix: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    rms_px: float = float("nan")
    n_views: int = 0
    details: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    model: str = "pinhole"

    def __post_init__(self) -> None:
        check_lens(self)

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

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Pixels [N, 2] of camera-frame points [N, 3] (OpenCV frame); NaN where the model images none."""
        return project(self, points_cam)

    def unproject(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(unit rays [N, 3], valid [N]) of pixels [N, 2]."""
        return unproject(self, pixels)

    def save(self, path: str | Path) -> None:
        d = asdict(self)
        d["camera_matrix"] = self.camera_matrix.tolist()
        d["dist"] = self.dist.reshape(-1).tolist()
        Path(path).write_text(json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: str | Path, model: str | None = None) -> Intrinsics:
        """The file at `path`; with `model`, a ValueError unless the file holds that model."""
        try:
            d = json.loads(Path(path).read_text())
            d["camera_matrix"] = np.asarray(d["camera_matrix"], float).reshape(3, 3)
            d["dist"] = np.asarray(d["dist"], float).reshape(-1)
            d["size"] = tuple(d["size"])
            intr = cls(**d)
        except (OSError, json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
            raise ValueError(f"{path}: not an intrinsics file ({e})") from None
        if model is not None and intr.model != model:
            hint = (
                " (rectify its images with mimic.calibration.intrinsics.rectify first)"
                if model == "pinhole"
                else ""
            )
            raise ValueError(f"{path}: {intr.model} intrinsics where {model} ones are needed{hint}")
        return intr


def _detect(images: list[np.ndarray], board: CharucoBoardSpec, min_corners: int):
    size = tuple(images[0].shape[:2])
    detector = CharucoDetector(board)
    dets, used = [], []
    for i, im in enumerate(images):
        if tuple(im.shape[:2]) != size:
            raise ValueError(f"intrinsics: image {i} is {im.shape[:2]}, the first one {size}")
        det = detector.detect(im, min_corners)
        if det is not None:
            dets.append(det)
            used.append(i)
    return size, dets, used


def calibrate_intrinsics(
    images: list[np.ndarray],
    board: CharucoBoardSpec,
    min_corners: int = 8,
    distortion: str | None = None,
    min_views: int | None = None,
    model: str = "pinhole",
) -> Intrinsics:
    """Intrinsics of `model` from uint8 images of `board`; ValueError naming the shortfall if too few views.

    `distortion` (pinhole only, default "standard") picks the OpenCV terms estimated; a fisheye always fits
    k1..k4. `min_views` defaults to MIN_VIEWS[model]. details["std"] holds each parameter's standard
    deviation from the fit's own covariance (residual variance x (J^T J)^-1, extrinsics eliminated).
    """
    if model not in MODELS:
        raise ValueError(f"intrinsics: model must be one of {list(MODELS)}, got {model!r}")
    if model == "fisheye" and distortion is not None:
        raise ValueError(
            f"intrinsics: distortion={distortion!r} picks pinhole terms; the fisheye model always fits k1..k4"
        )
    distortion = "standard" if distortion is None and model == "pinhole" else distortion
    if model == "pinhole" and distortion not in DISTORTION_FLAGS:
        hint = " (a fisheye lens is model='fisheye')" if distortion == "fisheye" else ""
        raise ValueError(
            f"intrinsics: distortion must be one of {sorted(DISTORTION_FLAGS)}, got {distortion!r}{hint}"
        )
    if not images:
        raise ValueError("intrinsics: no images given")
    min_views = MIN_VIEWS[model] if min_views is None else min_views
    size, dets, used = _detect(images, board, min_corners)
    if len(used) < min_views:
        raise ValueError(
            f"intrinsics: board found (>= {min_corners} corners) in {len(used)} of {len(images)} "
            f"images, need {min_views}" + (" for a fisheye" if model == "fisheye" else "")
        )
    details = {"views_used": used, "board": board.to_json()}
    if model == "fisheye":
        k, dist, rms, std = _fit_fisheye(dets, size)
    else:
        k, dist, rms, std = _fit_pinhole(dets, size, distortion)
        details["distortion"] = distortion
    details["std"] = std
    intr = Intrinsics(k, dist, size, rms, len(used), details, model=model)
    rays, _ = unproject(intr, np.concatenate([d.corners_px for d in dets]))
    details["corners_reach_deg"] = float(np.degrees(np.arccos(np.clip(rays[:, 2], -1, 1)).max()))
    return intr


def pixel_error(intr: Intrinsics, truth, max_angle_deg: float = 180.0) -> float:
    """Largest distance (px) between where `truth` (any model) and `intr` image the same ray, over the rays
    of truth's pixels up to `max_angle_deg` off-axis: how far off the calibration puts any pixel."""
    h, w = truth.size
    vv, uu = np.mgrid[0:h:2, 0:w:2].astype(float)
    px = np.stack([uu.ravel(), vv.ravel()], axis=1)
    rays, ok = unproject(truth, px)
    ok &= rays[:, 2] >= np.cos(np.deg2rad(max_angle_deg))
    return float(np.nanmax(np.linalg.norm(project(intr, rays[ok]) - px[ok], axis=1)))


def _fit_pinhole(dets, size, distortion: str):
    h, w = size
    obj = [d.object_points.astype(np.float32) for d in dets]
    img = [d.corners_px.astype(np.float32) for d in dets]
    k0 = np.array([[w, 0, (w - 1) / 2], [0, w, (h - 1) / 2], [0, 0, 1.0]])
    rms, k, dist, _, _, std, _, _ = cv2.calibrateCameraExtended(
        obj, img, (w, h), k0, np.zeros(5), flags=cv2.CALIB_USE_INTRINSIC_GUESS | DISTORTION_FLAGS[distortion]
    )
    dist = np.asarray(dist, float).reshape(-1)
    names = ("fx", "fy", "cx", "cy", *PINHOLE_TERMS[: len(dist)])
    return np.asarray(k, float), dist, float(rms), dict(zip(names, map(float, std.reshape(-1)), strict=False))


def _fit_fisheye(dets, size):
    """cv2.fisheye.calibrate (object points (N, 1, 3) float64, as its API wants), then the RMS reprojection
    error per corner (cv2's own figure is per coordinate) and the intrinsics' standard deviations."""
    h, w = size
    obj = [d.object_points.reshape(-1, 1, 3).astype(np.float64) for d in dets]
    img = [d.corners_px.reshape(-1, 1, 2).astype(np.float64) for d in dets]
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    try:
        _, k, dist, rvecs, tvecs = cv2.fisheye.calibrate(
            obj, img, (w, h), None, None, flags=FISHEYE_FLAGS, criteria=crit
        )
    except cv2.error as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else "cv2.error"
        raise ValueError(
            f"intrinsics: the fisheye fit failed on {len(dets)} views ({reason}); add views that tilt the "
            "board and put it near the image edges"
        ) from None
    k, dist = np.asarray(k, float), np.asarray(dist, float).reshape(-1)
    # Normal equations, extrinsics eliminated view by view (Schur complement): intrinsics' covariance.
    n_int = 8  # fx fy cx cy k1..k4 (skew fixed)
    normal = np.zeros((n_int, n_int))
    sq_err, n_pts = 0.0, 0
    for o, im, rv, tv in zip(obj, img, rvecs, tvecs, strict=True):
        proj, jac = cv2.fisheye.projectPoints(o, rv, tv, k, dist)
        sq_err += float(np.sum((proj.reshape(-1, 2) - im.reshape(-1, 2)) ** 2))
        n_pts += len(o)
        a, b = jac[:, :n_int], jac[:, 8:14]  # columns: f(2) c(2) k(4) rvec(3) tvec(3) alpha(1)
        normal += a.T @ a - a.T @ b @ np.linalg.solve(b.T @ b, b.T @ a)
    dof = max(2 * n_pts - n_int - 6 * len(obj), 1)
    try:
        cov = np.linalg.inv(normal) * sq_err / dof
        std = np.sqrt(np.maximum(np.diag(cov), 0))
    except np.linalg.LinAlgError:
        std = np.full(n_int, np.nan)
    names = ("fx", "fy", "cx", "cy", "k1", "k2", "k3", "k4")
    return k, dist, float(np.sqrt(sq_err / n_pts)), dict(zip(names, map(float, std), strict=True))


# ---- a pinhole image from either model ---------------------------------------------------------
_MAPS: OrderedDict[tuple, tuple[np.ndarray, np.ndarray]] = OrderedDict()


def rectify_maps(
    intr: Intrinsics, camera_matrix: np.ndarray | None = None, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (float32 x, y) from intr's image to a distortion-free pinhole image with
    `camera_matrix` (default: intr's own, which for a fisheye keeps the centre's scale and crops the edges)
    and `size` (h, w; default intr's). cv2.fisheye.initUndistortRectifyMap or cv2.initUndistortRectifyMap
    by intr.model; the last few are cached."""
    new_k = np.asarray(intr.camera_matrix if camera_matrix is None else camera_matrix, float)
    h, w = intr.size if size is None else size
    key = (intr.model, intr.camera_matrix.tobytes(), intr.dist.tobytes(), new_k.tobytes(), h, w)
    if key not in _MAPS:
        if intr.model == "fisheye":
            maps = cv2.fisheye.initUndistortRectifyMap(
                intr.camera_matrix, intr.dist, np.eye(3), new_k, (w, h), cv2.CV_32FC1
            )
        else:
            maps = cv2.initUndistortRectifyMap(
                intr.camera_matrix, intr.dist, None, new_k, (w, h), cv2.CV_32FC1
            )
        _MAPS[key] = maps
        while len(_MAPS) > 4:
            _MAPS.popitem(last=False)
    _MAPS.move_to_end(key)
    return _MAPS[key]


def rectify(
    image: np.ndarray,
    intr: Intrinsics,
    camera_matrix: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
    interpolation: int = cv2.INTER_LINEAR,
) -> np.ndarray:
    """`image` (taken with `intr`, either model) as the pinhole camera `rectified(intr, camera_matrix,
    size)` sees it; pixels outside the source image are black."""
    if tuple(image.shape[:2]) != tuple(intr.size):
        raise ValueError(f"rectify: image is {image.shape[:2]}, the intrinsics are for {tuple(intr.size)}")
    map_x, map_y = rectify_maps(intr, camera_matrix, size)
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT)


def rectified(
    intr: Intrinsics, camera_matrix: np.ndarray | None = None, size: tuple[int, int] | None = None
) -> Intrinsics:
    """The pinhole camera (no distortion) of `rectify(image, intr, camera_matrix, size)`'s output."""
    new_k = np.asarray(intr.camera_matrix if camera_matrix is None else camera_matrix, float).copy()
    return Intrinsics(
        new_k,
        np.zeros(5),
        tuple(intr.size if size is None else size),
        details={"rectified_from": intr.model},
    )


# ---- mimic calibrate intrinsics ----------------------------------------------------------------
TWIN_VIEWS = {"pinhole": 15, "fisheye": 40}


def configure(p) -> None:
    """`mimic calibrate intrinsics (--images GLOB | --twin) [--model fisheye] --out cam.json [--png v.png]`."""
    from mimic.calibration.charuco import add_board_args

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--images", help="glob of board images, e.g. 'calib/*.png'")
    src.add_argument(
        "--twin",
        action="store_true",
        help=f"render views of the board in the MuJoCo twin ({TWIN_VIEWS['pinhole']} pinhole; "
        f"{TWIN_VIEWS['fisheye']} through a UMI-like fisheye with --model fisheye)",
    )
    p.add_argument("--out", required=True, help="intrinsics JSON to write")
    p.add_argument("--png", help="mosaic of the views with detected corners and board axes")
    p.add_argument(
        "--model",
        default="pinhole",
        choices=MODELS,
        help="pinhole (default) or fisheye (Kannala-Brandt k1..k4)",
    )
    p.add_argument(
        "--distortion",
        default=None,
        choices=sorted(DISTORTION_FLAGS),
        help="pinhole distortion terms to estimate (default standard); not for --model fisheye",
    )
    add_board_args(p)


def _twin_views(board: CharucoBoardSpec, model: str):
    """(images, true lens) of the twin: BoardScene's pinhole camera, or the board seen through umi_fisheye."""
    if model == "fisheye":
        from mimic.sim.camera_model import LensBoardScene

        scene = LensBoardScene(board=board)
        try:
            images = [scene.render(v) for v in scene.random_views(TWIN_VIEWS[model], seed=0)]
        finally:
            scene.close()
        return images, scene.lens
    from mimic.sim.handheld import BoardScene

    scene = BoardScene(board)
    try:
        images = [scene.render(v) for v in scene.random_views(TWIN_VIEWS[model], seed=0)]
        truth = scene.camera_matrix()
    finally:
        scene.close()
    return images, Intrinsics(truth, np.zeros(5), scene.size)


def run(a) -> int:
    from mimic.calibration.charuco import board_from_args, load_images, write_detections

    if a.model == "fisheye" and a.distortion is not None:
        raise ValueError("--distortion picks pinhole terms; --model fisheye always fits k1..k4")
    board = board_from_args(a)
    truth = None
    if a.twin:
        images, truth = _twin_views(board, a.model)
    else:
        images = load_images(a.images)
    intr = calibrate_intrinsics(images, board, distortion=a.distortion, model=a.model)
    intr.save(a.out)
    reach = intr.details["corners_reach_deg"]
    k_text = f"k {np.array2string(intr.dist, precision=5)}, " if intr.model == "fisheye" else ""
    print(
        f"{a.out}: {intr.model} fx {intr.fx:.2f} fy {intr.fy:.2f} cx {intr.cx:.2f} cy {intr.cy:.2f} px, "
        f"{k_text}rms {intr.rms_px:.3f} px over {intr.n_views} views; corners reach {reach:.1f} deg off-axis"
    )
    if truth is not None:
        t = truth.camera_matrix
        line = (
            f"twin truth: f {t[0, 0]:.2f} cx {t[0, 2]:.2f} cy {t[1, 2]:.2f} px "
            f"(fx error {abs(intr.fx - t[0, 0]) / t[0, 0] * 100:.3f} %"
        )
        if intr.model == "fisheye":
            line += f", fy error {abs(intr.fy - t[1, 1]) / t[1, 1] * 100:.3f} %)"
            errs = ", ".join(
                f"k{i + 1} {want:+.5f} error {got - want:+.5f} ({abs(got - want) / abs(want) * 100:.1f} %, "
                f"std {intr.details['std'][f'k{i + 1}']:.5f})"
                for i, (got, want) in enumerate(zip(intr.dist, truth.dist, strict=True))
            )
            line += (
                f"\ntwin truth: {errs}"
                f"\ntwin truth: pixels off by <= {pixel_error(intr, truth, reach):.3f} px within the "
                f"{reach:.1f} deg the corners reach, {pixel_error(intr, truth):.3f} px anywhere in the image"
            )
        else:
            line += ")"
        print(line)
    if a.png:
        write_detections(a.png, images, board, intr)
    return 0
