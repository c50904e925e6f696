"""Gripper width from the wrist image: two ArUco markers on the fingers, for grippers with no encoder.

UMI's handheld gripper has no width sensor; a marker printed on each finger is seen by the wrist camera
and the width follows from how far apart the two markers are. Two ways to measure that distance:

- "3d" (default): each marker's pose by PnP from its four corners, the known marker size and the camera
  intrinsics; the feature is the distance (m) between the two marker centres. It does not depend on where
  exactly the camera sits, so a mount that shifts a little (remounted, knocked) does not bias the width.
- "pixel": the distance (px) between the two marker centres in the image; no intrinsics needed, but it
  holds only for the camera mount (and lens) the calibration was made with.

`MarkerWidthCalibration` maps the feature to metres from observations of the same gripper at known
widths, at least fully open and fully closed (linear between two; with more, a monotone piecewise-linear
map), and is saved as JSON next to the other calibration files. `MarkerWidthSource` is the width stream of
a capture: frame in, (capture time, width or None) out. A frame where either marker is not found, or
where the width lands outside the calibrated range by more than a margin (a misdetection), gives None:
a missing sample is reported as missing (`HandheldCapture.on_gripper_missing`), never invented.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mimic.sim.handheld import FingerMarkerSpec
from mimic.teleop.handheld import HandheldCapture, raw_stream, read_raw_arrivals

MODES = ("3d", "pixel")
CAMERA_MODELS = ("pinhole", "fisheye")


@dataclass
class MarkerDetection:
    """The two finger markers in one image: corners [4, 2] (px, OpenCV's order: clockwise from top-left)."""

    left_px: np.ndarray
    right_px: np.ndarray


def marker_centre_px(corners: np.ndarray) -> np.ndarray:
    """The marker's centre in the image: where its diagonals cross (the projective centre, not the mean)."""
    p0, p1, p2, p3 = np.asarray(corners, float).reshape(4, 2)
    d1, d2 = p2 - p0, p3 - p1
    den = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(den) < 1e-12:
        return np.mean([p0, p1, p2, p3], axis=0)
    s = ((p1[0] - p0[0]) * d2[1] - (p1[1] - p0[1]) * d2[0]) / den
    return p0 + s * d1


EDGE_RESIDUAL_PX = 0.4  # an edge point further than this from its side's fitted line: the side is not clean
CORNER_SHIFT_PX = 1.5  # refined corners this far from ArUco's: something else's edge was found


def refine_corners(grey: np.ndarray, corners: np.ndarray, cells: int, samples: int = 12) -> np.ndarray | None:
    """The black square's corners from straight lines fitted to sub-pixel edge points along its four sides.

    ArUco's own corner refinement (cornerSubPix) is made for chessboard saddles; on the outer corner of a
    blurred black square it pulls inwards, so the marker looks small and its PnP depth (and every lateral
    distance with it) comes out large, by more the further off-axis the marker sits. Edges blur symmetrically: the half-way grey level between the
    black border and the white quiet zone, found along short profiles across each side, lies on the true
    edge. Profiles stay within one cell each way (the border inside, the quiet zone outside).

    None when the square's outline is not clean: a side with too few edge points, edge points off their
    line by more than EDGE_RESIDUAL_PX, or corners that moved more than CORNER_SHIFT_PX (an object covering
    part of the quiet zone puts its own edge there): such a marker is not measured rather than mismeasured.
    """
    c = np.asarray(corners, np.float64).reshape(4, 2)
    cell = np.mean([np.linalg.norm(c[i] - c[(i + 1) % 4]) for i in range(4)]) / cells
    offsets = np.linspace(-0.9 * cell, 0.9 * cell, 17)
    centre = c.mean(axis=0)
    g = np.asarray(grey, np.float32)
    lines = []
    for i in range(4):
        a, b = c[i], c[(i + 1) % 4]
        d = (b - a) / np.linalg.norm(b - a)
        n = np.array([-d[1], d[0]])
        n = -n if np.dot(centre - a, n) > 0 else n  # outwards
        base = a + np.linspace(0.15, 0.85, samples)[:, None] * (b - a)  # clear of the corners
        xy = (base[:, None, :] + offsets[None, :, None] * n).astype(np.float32)  # [samples, profile, 2]
        prof = cv2.remap(g, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR)
        pts = []
        for p, row in zip(base, prof, strict=True):
            lo, hi = float(row.min()), float(row.max())
            if hi - lo < 20:  # no clean dark-to-light edge here
                continue
            thr = (lo + hi) / 2
            k = np.flatnonzero((row[:-1] < thr) & (row[1:] >= thr))
            if len(k) == 0:
                continue
            k = int(k[0])
            f = (thr - row[k]) / (row[k + 1] - row[k])
            pts.append(p + (offsets[k] + f * (offsets[k + 1] - offsets[k])) * n)
        if len(pts) < samples // 2:
            return None
        pts = np.asarray(pts)
        vx, vy, x0, y0 = cv2.fitLine(pts.astype(np.float32), cv2.DIST_L2, 0, 0.01, 0.01).reshape(-1)
        residual = np.abs((pts[:, 0] - x0) * vy - (pts[:, 1] - y0) * vx)
        if residual.max() > EDGE_RESIDUAL_PX:
            return None
        lines.append((np.array([x0, y0], float), np.array([vx, vy], float)))
    out = []
    for i in range(4):  # corner i joins side i-1 (ending at it) and side i (starting at it)
        (p1, d1), (p2, d2) = lines[i - 1], lines[i]
        a = np.array([d1, -d2]).T
        if abs(np.linalg.det(a)) < 1e-9:
            return None
        s = np.linalg.solve(a, p2 - p1)
        out.append(p1 + s[0] * d1)
    out = np.array(out)
    return out if np.linalg.norm(out - c, axis=1).max() <= CORNER_SHIFT_PX else None


class FingerMarkerDetector:
    """Finds the two finger markers (ArUco, corners refined on the edges) and measures their distance.

    `camera_matrix`/`dist`/`camera_model` (the wrist camera's intrinsics at this image size, "pinhole":
    OpenCV's distortion, or "fisheye": Kannala-Brandt as mimic.calibration.intrinsics writes them) are
    needed for "3d" only: the corners are undistorted with them before PnP.
    """

    def __init__(
        self,
        spec: FingerMarkerSpec,
        mode: str = "3d",
        camera_matrix: np.ndarray | None = None,
        dist: np.ndarray | None = None,
        camera_model: str = "pinhole",
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"marker width: mode must be one of {MODES}, got {mode!r}")
        if mode == "3d" and camera_matrix is None:
            raise ValueError("marker width: mode '3d' needs the camera intrinsics (camera_matrix)")
        if camera_model not in CAMERA_MODELS:
            raise ValueError(
                f"marker width: camera model must be one of {CAMERA_MODELS}, got {camera_model!r}"
            )
        self.spec, self.mode, self.camera_model = spec, mode, camera_model
        self.camera_matrix = None if camera_matrix is None else np.asarray(camera_matrix, float).reshape(3, 3)
        self.dist = np.zeros(5) if dist is None else np.asarray(dist, float).reshape(-1)
        if camera_model == "fisheye" and len(self.dist) != 4:
            raise ValueError(f"marker width: fisheye distortion has 4 terms (k1..k4), got {len(self.dist)}")
        params = cv2.aruco.DetectorParameters()
        params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
        self._detector = cv2.aruco.ArucoDetector(spec.aruco_dictionary(), params)
        h = spec.marker_m / 2  # IPPE_SQUARE's corner order: top-left, top-right, bottom-right, bottom-left
        self._object = np.array([[-h, h, 0], [h, h, 0], [h, -h, 0], [-h, -h, 0]], np.float64)

    def detect(self, image: np.ndarray) -> MarkerDetection | None:
        """Both markers' corners, or None when either is missing, seen twice (ambiguous) or not clean."""
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ValueError(f"marker width: image must be uint8 HxW or HxWx3, got {img.dtype} {img.shape}")
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
        corners, ids, _ = self._detector.detectMarkers(grey)
        if ids is None:
            return None
        ids = ids.reshape(-1)
        found = []
        for marker_id in (self.spec.left_id, self.spec.right_id):
            hits = np.flatnonzero(ids == marker_id)
            if len(hits) != 1:
                return None
            refined = refine_corners(grey, corners[hits[0]], self.spec.cells)
            if refined is None:
                return None
            found.append(refined)
        return MarkerDetection(*found)

    def centre_3d(self, corners: np.ndarray) -> np.ndarray | None:
        """The marker centre in the camera frame (m) by PnP on its four corners; None if PnP fails."""
        px = np.asarray(corners, np.float64).reshape(-1, 1, 2)
        if self.camera_model == "fisheye":
            norm = cv2.fisheye.undistortPoints(px, self.camera_matrix, self.dist)
        else:
            norm = cv2.undistortPoints(px, self.camera_matrix, self.dist)
        ok, _, tvec = cv2.solvePnP(
            self._object, norm.reshape(-1, 2), np.eye(3), None, flags=cv2.SOLVEPNP_IPPE_SQUARE
        )
        return tvec.reshape(3) if ok and np.all(np.isfinite(tvec)) else None

    def feature(self, image: np.ndarray) -> float | None:
        """The markers' centre distance: metres ("3d") or pixels ("pixel"); None if not measurable."""
        det = self.detect(image)
        if det is None:
            return None
        if self.mode == "pixel":
            return float(np.linalg.norm(marker_centre_px(det.left_px) - marker_centre_px(det.right_px)))
        left, right = self.centre_3d(det.left_px), self.centre_3d(det.right_px)
        if left is None or right is None:
            return None
        return float(np.linalg.norm(left - right))


@dataclass
class MarkerWidthCalibration:
    """Per-gripper map from the marker distance (`mode`'s unit) to the gripper width (m).

    `features`/`widths`: the calibration points, sorted by width, the feature strictly monotone in it.
    Between them the width is interpolated linearly, beyond them extrapolated along the end segments.
    `image_size` (h, w) is the frame size the features were measured on; `camera_matrix`/`dist`/
    `camera_model` the intrinsics used by "3d".
    """

    marker: dict
    mode: str
    features: list[float]
    widths: list[float]
    image_size: tuple[int, int]
    camera_matrix: list[list[float]] | None = None
    dist: list[float] | None = None
    camera_model: str = "pinhole"
    gripper: str = ""
    details: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"marker width calibration: mode must be one of {MODES}, got {self.mode!r}")
        f, w = np.asarray(self.features, float), np.asarray(self.widths, float)
        if f.shape != w.shape or f.ndim != 1 or len(f) < 2:
            raise ValueError(
                "marker width calibration: needs >= 2 (feature, width) points of equal count, "
                f"got {len(f)} features and {len(w)} widths"
            )
        if not (np.all(np.isfinite(f)) and np.all(np.isfinite(w))):
            raise ValueError("marker width calibration: features and widths must be finite")
        if np.any(np.diff(w) <= 0):
            raise ValueError("marker width calibration: widths must be strictly increasing")
        df = np.diff(f)
        if not (np.all(df > 0) or np.all(df < 0)):
            raise ValueError(
                "marker width calibration: the marker distance is not monotone in the width "
                f"(features {np.round(f, 6).tolist()} at widths {np.round(w, 4).tolist()})"
            )
        if self.mode == "3d" and self.camera_matrix is None:
            raise ValueError("marker width calibration: mode '3d' needs camera_matrix")
        if self.camera_model not in CAMERA_MODELS:
            raise ValueError(
                f"marker width calibration: camera_model must be one of {CAMERA_MODELS}, got {self.camera_model!r}"
            )
        self.features, self.widths = f.tolist(), w.tolist()
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.marker_spec()  # validates the marker description

    @classmethod
    def fit(
        cls,
        observations: list[tuple[float, float]],
        spec: FingerMarkerSpec,
        mode: str,
        image_size: tuple[int, int],
        camera_matrix: np.ndarray | None = None,
        dist: np.ndarray | None = None,
        camera_model: str = "pinhole",
        gripper: str = "",
        details: dict | None = None,
    ) -> MarkerWidthCalibration:
        """From (feature, true width) observations; several at one width are averaged."""
        if not observations:
            raise ValueError("marker width calibration: no observations")
        by_width: dict[float, list[float]] = {}
        for feat, width in observations:
            by_width.setdefault(round(float(width), 9), []).append(float(feat))
        widths = sorted(by_width)
        if len(widths) < 2:
            raise ValueError(
                f"marker width calibration: all observations are at width {widths[0]} m; "
                "need the gripper open and closed"
            )
        return cls(
            marker=spec.to_json(),
            mode=mode,
            features=[float(np.mean(by_width[w])) for w in widths],
            widths=widths,
            image_size=tuple(image_size),
            camera_matrix=None if camera_matrix is None else np.asarray(camera_matrix, float).tolist(),
            dist=None if dist is None else np.asarray(dist, float).reshape(-1).tolist(),
            camera_model=camera_model,
            gripper=gripper,
            details={"n_observations": len(observations), **(details or {})},
        )

    def marker_spec(self) -> FingerMarkerSpec:
        try:
            return FingerMarkerSpec(**self.marker)
        except TypeError as e:
            raise ValueError(f"marker width calibration: bad 'marker' entry {self.marker} ({e})") from None

    def detector(self) -> FingerMarkerDetector:
        k = None if self.camera_matrix is None else np.asarray(self.camera_matrix, float)
        d = None if self.dist is None else np.asarray(self.dist, float)
        return FingerMarkerDetector(self.marker_spec(), self.mode, k, d, self.camera_model)

    def width(self, feature: float) -> float:
        """Width (m) for one feature value: piecewise linear through the points, extrapolated at the ends."""
        f, w = np.asarray(self.features), np.asarray(self.widths)
        if f[0] > f[-1]:
            f, w = f[::-1], w[::-1]
        x = float(feature)
        if x < f[0]:
            return float(w[0] + (x - f[0]) * (w[1] - w[0]) / (f[1] - f[0]))
        if x > f[-1]:
            return float(w[-1] + (x - f[-1]) * (w[-1] - w[-2]) / (f[-1] - f[-2]))
        return float(np.interp(x, f, w))

    def save(self, path: str | Path) -> None:
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        Path(path).write_text(json.dumps(d, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> MarkerWidthCalibration:
        try:
            d = json.loads(Path(path).read_text())
            return cls(**d)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a gripper-width calibration file ({e})") from None
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None


class MarkerWidthSource:
    """The gripper-width stream of a handheld capture, read from wrist frames: (t, image) -> (t, width | None).

    None when either marker is not found or the width falls more than `margin_m` outside the calibrated
    range (a misdetection, not a width). The time passed in is passed through: a width measured from a
    frame has the frame's capture time, so the capture's gripper latency is the camera's.
    """

    def __init__(self, calibration: MarkerWidthCalibration, margin_m: float = 0.01) -> None:
        self.calibration = calibration
        self.detector = calibration.detector()
        self.margin_m = float(margin_m)
        self.lo = min(calibration.widths) - self.margin_m
        self.hi = max(calibration.widths) + self.margin_m
        self.n_frames = 0
        self.n_missing = 0

    def measure(self, image: np.ndarray) -> float | None:
        img = np.asarray(image)
        if tuple(img.shape[:2]) != self.calibration.image_size:
            raise ValueError(
                f"marker width: frame is {img.shape[0]}x{img.shape[1]}, the calibration was made on "
                f"{self.calibration.image_size[0]}x{self.calibration.image_size[1]} frames"
            )
        feat = self.detector.feature(img)
        if feat is None:
            return None
        w = self.calibration.width(feat)
        return w if self.lo <= w <= self.hi else None

    def __call__(self, t: float, image: np.ndarray) -> tuple[float, float | None]:
        w = self.measure(image)
        self.n_frames += 1
        self.n_missing += w is None
        return float(t), w

    def feed(
        self, capture: HandheldCapture, t_arrival: float, image: np.ndarray, gripper: int = 0
    ) -> float | None:
        """Measure one frame into a capture: `on_gripper` with the width, `on_gripper_missing` without one."""
        _, w = self(t_arrival, image)
        if w is None:
            capture.on_gripper_missing(t_arrival, gripper)
        else:
            capture.on_gripper(t_arrival, w, gripper)
        return w

    @property
    def completeness(self) -> float:
        """Fraction of frames so far that gave a width."""
        return 1.0 - self.n_missing / self.n_frames if self.n_frames else 0.0


def read_missing_widths(path: str | Path, episode: int, gripper: int = 0) -> np.ndarray:
    """Arrival times (s) of the frames of one committed episode that gave no width (empty if none)."""
    name = f"{raw_stream('gripper', gripper)}_missing"
    return read_raw_arrivals(path, episode).get(name, np.zeros(0))
