"""ChArUco detection: finding the printed target shared by intrinsics and hand-eye calibration in images.

The board itself is `CharucoBoardSpec` (mimic.sim.boards): one description of the physical board (metres)
that renders the texture the twin shows and builds OpenCV's board model the detector here uses, so the
twin's board and the detector's model never disagree. This module adds detection, PnP pose, the report
images and the board's command-line arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mimic.sim.boards import CharucoBoardSpec


@dataclass
class CharucoDetection:
    """Corners found in one image: pixel positions [n, 2], their ids, and the matching board points [n, 3]."""

    corners_px: np.ndarray
    ids: np.ndarray
    object_points: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


class CharucoDetector:
    """Finds ChArUco corners (sub-pixel refined by OpenCV) in uint8 RGB or grey images."""

    def __init__(self, spec: CharucoBoardSpec) -> None:
        self.spec = spec
        self._board = spec.board()
        params = cv2.aruco.CharucoParameters()
        self._detector = cv2.aruco.CharucoDetector(self._board, params)
        self._points = spec.corner_points()

    def detect(self, image: np.ndarray, min_corners: int = 6) -> CharucoDetection | None:
        """Corners in `image`, or None when fewer than `min_corners` are found (too few for a pose)."""
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        corners, ids, _, _ = self._detector.detectBoard(grey)
        if ids is None or len(ids) < min_corners:
            return None
        ids = ids.reshape(-1)
        return CharucoDetection(corners.reshape(-1, 2).astype(np.float64), ids, self._points[ids])


def board_pose(
    det: CharucoDetection, camera_matrix: np.ndarray, dist: np.ndarray | None = None, model: str = "pinhole"
) -> np.ndarray:
    """T_cam_board (4x4, OpenCV camera frame: x right, y down, z forward) from one detection by PnP.

    model "fisheye" (dist = k1..k4): the corners are first undistorted to the pinhole image with the same
    camera matrix, where PnP runs without distortion."""
    corners = det.corners_px
    if model == "fisheye":
        from mimic.sim.camera_model import Lens, unproject

        rays, _ = unproject(Lens(camera_matrix, dist, (1, 1), "fisheye"), corners)
        corners = (camera_matrix @ (rays / rays[:, 2:]).T).T[:, :2]
        dist = None
    d = np.zeros(5) if dist is None else dist
    ok, rvec, tvec = cv2.solvePnP(det.object_points, corners, camera_matrix, d, flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("charuco: solvePnP failed on a detection")
    rvec, tvec = cv2.solvePnPRefineLM(det.object_points, corners, camera_matrix, d, rvec, tvec)
    t = np.eye(4)
    t[:3, :3] = cv2.Rodrigues(rvec)[0]
    t[:3, 3] = tvec.reshape(3)
    return t


def draw_detection(
    image: np.ndarray,
    det: CharucoDetection | None,
    camera_matrix: np.ndarray | None = None,
    dist: np.ndarray | None = None,
    t_cam_board: np.ndarray | None = None,
    model: str = "pinhole",
) -> np.ndarray:
    """A copy of `image` (RGB) with the detected corners and, given a pose, the board's axes drawn on it."""
    out = np.ascontiguousarray(image.copy() if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB))
    if det is None:
        cv2.putText(out, "no board", (10, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 0, 0), 2)
        return out
    cv2.aruco.drawDetectedCornersCharuco(
        out, det.corners_px.reshape(-1, 1, 2).astype(np.float32), det.ids.reshape(-1, 1), (0, 255, 0)
    )
    if camera_matrix is not None and t_cam_board is not None and model == "fisheye":
        from mimic.sim.camera_model import Lens, project

        axes = np.array([[0, 0, 0], [0.05, 0, 0], [0, 0.05, 0], [0, 0, 0.05]])
        px = project(
            Lens(camera_matrix, dist, (1, 1), "fisheye"), axes @ t_cam_board[:3, :3].T + t_cam_board[:3, 3]
        )
        if np.all(np.isfinite(px)):  # cv2.drawFrameAxes' colours: x (0, 0, 255), y (0, 255, 0), z (255, 0, 0)
            o = tuple(int(round(v)) for v in px[0])
            for end, colour in zip(px[1:], [(0, 0, 255), (0, 255, 0), (255, 0, 0)], strict=True):
                cv2.line(out, o, tuple(int(round(v)) for v in end), colour, 2)
    elif camera_matrix is not None and t_cam_board is not None:
        rvec = cv2.Rodrigues(t_cam_board[:3, :3])[0]
        cv2.drawFrameAxes(
            out, camera_matrix, np.zeros(5) if dist is None else dist, rvec, t_cam_board[:3, 3], 0.05, 2
        )
    return out


def mosaic(images: list[np.ndarray], cols: int = 5, width: int = 320) -> np.ndarray:
    """Images scaled to `width` and tiled row by row (uint8 RGB), for a calibration report PNG."""
    tiles = []
    for img in images:
        h = int(round(img.shape[0] * width / img.shape[1]))
        tiles.append(cv2.resize(img, (width, h), interpolation=cv2.INTER_AREA))
    h = max(t.shape[0] for t in tiles)
    rows = []
    for i in range(0, len(tiles), cols):
        row = [np.pad(t, ((0, h - t.shape[0]), (0, 0), (0, 0))) for t in tiles[i : i + cols]]
        row += [np.zeros_like(row[0])] * (cols - len(row))
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def write_png(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"{path}: could not write PNG (does the folder exist?)")


def write_detections(path: str, images: list[np.ndarray], board: CharucoBoardSpec, intr) -> None:
    """A PNG mosaic of the views with detected corners and, where solvable, the board's axes under `intr`
    (mimic.calibration.intrinsics.Intrinsics, either model): what a user looks at to trust a calibration."""
    det = CharucoDetector(board)
    model = getattr(intr, "model", "pinhole")
    tiles = []
    for img in images:
        d = det.detect(img)
        pose = board_pose(d, intr.camera_matrix, intr.dist, model) if d is not None else None
        tiles.append(draw_detection(img, d, intr.camera_matrix, intr.dist, pose, model))
    write_png(path, mosaic(tiles))


def add_board_args(parser) -> None:
    """--squares X Y --square M --marker M --dictionary NAME: the printed board, shared by the calibration CLIs."""
    d = CharucoBoardSpec()
    parser.add_argument(
        "--squares", type=int, nargs=2, default=(d.squares_x, d.squares_y), metavar=("X", "Y")
    )
    parser.add_argument("--square", type=float, default=d.square_m, help="square side (m)")
    parser.add_argument("--marker", type=float, default=d.marker_m, help="marker side (m)")
    parser.add_argument("--dictionary", default=d.dictionary)


def board_from_args(a) -> CharucoBoardSpec:
    return CharucoBoardSpec(a.squares[0], a.squares[1], a.square, a.marker, a.dictionary)


def load_images(pattern: str) -> list[np.ndarray]:
    """RGB images matching a glob, sorted by name; ValueError naming the pattern/file when unusable."""
    import glob

    paths = sorted(glob.glob(pattern))
    if not paths:
        raise ValueError(f"{pattern}: no image files match")
    out = []
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"{p}: not a readable image")
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out
