"""Rendering the twin through a real camera model: pinhole with OpenCV distortion or fisheye (Kannala-Brandt).

MuJoCo renders only an ideal pinhole (square pixels, principal point at the image centre). To see the twin
through a lens described by intrinsics (`camera_matrix`, `dist`, `size` (h, w), `model` "pinhole" |
"fisheye": mimic.calibration.intrinsics.Intrinsics, or `Lens` here), `CameraRemap` renders one wider,
finer pinhole image that covers every ray of the target camera and resamples it: for each target pixel it
unprojects with the target model (a ray), projects the ray with the render's pinhole, and `cv2.remap`s.

Accuracy (measured by tests/unit/test_fisheye_calibration.py on `umi_fisheye()`):
- geometry: the map is exact to float64 (target pixel -> render pixel -> ray -> target pixel: 2e-13 px);
  stored as float32 (8e-5 render px) and read by cv2.remap at 1/32 render pixel, so a sample is at most
  1/64 render px = 1/(64 * supersample) target px from where it belongs (0.016 px at the centre with the
  default supersample 1.0, less off-axis where the render is denser). End to end, ChArUco corners detected
  in a remapped render lie 0.07 px RMS (max 0.22 px) from the true board corners projected through the
  lens, the detector's own error included; a fisheye render rectified back to a pinhole matches MuJoCo's
  direct pinhole render to 0.04 px RMS in corner positions and 2 grey levels on average.
- image: a render is `supersample` x as dense as the target at the image centre and up to 1 / cos^2(theta)
  x denser towards the edge (theta off-axis). Each target pixel reads a Gaussian pyramid level chosen from
  the map's local footprint (trilinear mip-mapping), so the denser periphery is low-passed, not aliased.

Limit: one pinhole render covers rays up to `MAX_HALF_FOV_DEG` (75 deg) off-axis along each of its axes,
and its pixel count grows with tan^2 of that angle. The default `umi_fisheye()` (640x480, 120 deg
horizontal, 88 deg vertical, 152 deg diagonal) needs 72.8 deg horizontally and 67.6 vertically: a
2074x1556 render (0.1 s on a CPU). A wider lens (a GoPro's max-lens modes, anything near 180 deg) needs a
cube map, which this module does not do: `CameraRemap` refuses such a lens with one line.

Sources: `render_through(source, lens)` takes either a callable `(height, width, fovy_deg) -> HxWx3 uint8`
that renders the twin camera as a centred square-pixel pinhole (what MuJoCo does), or a `MujocoPinhole`
(model, data, camera name) which is exactly that callable for any MuJoCo camera, e.g. an arm twin's wrist
camera. `LensBoardScene` is BoardScene (mimic.sim.handheld) photographed through a lens, for calibration.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from mimic.sim.boards import CharucoBoardSpec, board_center  # noqa: E402

MODELS = ("pinhole", "fisheye")
MAX_HALF_FOV_DEG = 75.0  # per render axis: tan(75 deg) = 3.7 focal lengths either side of the centre
MAX_RENDER_PX = 8192  # per side; GL's renderbuffer limit is >= 16384 on the drivers we use


@dataclass(eq=False)
class Lens:
    """A camera model: 3x3 `camera_matrix` (px), `dist` (pinhole: OpenCV k1 k2 p1 p2 [k3 ...]; fisheye:
    k1 k2 k3 k4 of theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)), `size` (h, w).
    Field for field what mimic.calibration.intrinsics.Intrinsics holds, so either works everywhere here."""

    camera_matrix: np.ndarray
    dist: np.ndarray
    size: tuple[int, int]
    model: str = "pinhole"

    def __post_init__(self) -> None:
        self.camera_matrix = np.asarray(self.camera_matrix, float).reshape(3, 3)
        self.dist = np.asarray(self.dist, float).reshape(-1)
        self.size = (int(self.size[0]), int(self.size[1]))
        check_lens(self)


def check_lens(lens) -> None:
    """ValueError (one line) unless `lens` has a known model and a distortion vector that model reads."""
    model = getattr(lens, "model", "pinhole")
    if model not in MODELS:
        raise ValueError(f"camera model must be one of {list(MODELS)}, got {model!r}")
    n = np.asarray(lens.dist).size
    if model == "fisheye" and n != 4:
        raise ValueError(f"fisheye model needs 4 distortion coefficients (k1..k4), got {n}")
    if model == "pinhole" and n not in (0, 4, 5, 8, 12, 14):
        raise ValueError(f"pinhole model needs 0, 4, 5, 8, 12 or 14 distortion coefficients, got {n}")


def umi_fisheye(size: tuple[int, int] = (480, 640)) -> Lens:
    """A UMI-like wrist fisheye at 640x480: 120 deg horizontal, 88 deg vertical, 152 deg diagonal view.

    k1..k4 = -0.06, 0.02, -0.004, 0.0004: a real fisheye's sizes and alternating signs (an equisolid lens
    has k1 = -1/24, k2 = 1/1920; UMI's GoPro calibration reads -0.022, -0.019, 0.0017, -0.00017), each
    alone moving the horizontal image edge by 22, 8, 1.8 and 0.2 px. The focal length (320.46 px at 640
    wide) puts that edge 60 deg off-axis. `size` scales the same lens to another resolution.
    """
    h, w = size
    k = np.array([-0.06, 0.02, -0.004, 0.0004])
    theta = np.deg2rad(60.0)
    t2 = theta * theta
    f = (w / 2) / (theta * (1 + k[0] * t2 + k[1] * t2**2 + k[2] * t2**3 + k[3] * t2**4))
    return Lens(np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]]), k, (h, w), "fisheye")


# ---- projection --------------------------------------------------------------------------------
def fisheye_theta_max(dist: np.ndarray) -> float:
    """Largest off-axis angle (rad, <= pi) up to which theta -> theta_d is increasing: the model's domain."""
    return _theta_max(tuple(float(k) for k in np.asarray(dist, float).reshape(-1)))


@functools.lru_cache(maxsize=64)
def _theta_max(dist: tuple[float, ...]) -> float:
    k1, k2, k3, k4 = dist
    th = np.linspace(0, np.pi, 200001)
    t2 = th * th
    slope = 1 + 3 * k1 * t2 + 5 * k2 * t2**2 + 7 * k3 * t2**3 + 9 * k4 * t2**4
    bad = np.flatnonzero(slope <= 0)
    return float(th[bad[0] - 1]) if bad.size else float(np.pi)


def _fisheye_theta_d(theta: np.ndarray, k: np.ndarray) -> np.ndarray:
    t2 = theta * theta
    return theta * (1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))))


def project(lens, points_cam: np.ndarray) -> np.ndarray:
    """Pixels [N, 2] of points [N, 3] in the OpenCV camera frame (x right, y down, z forward); NaN where the
    model does not image the point (behind a pinhole, beyond a fisheye's monotonic range)."""
    p = np.asarray(points_cam, float).reshape(-1, 3)
    k_mat = lens.camera_matrix
    dist = np.asarray(lens.dist, float).reshape(-1)
    out = np.full((len(p), 2), np.nan)
    if getattr(lens, "model", "pinhole") == "fisheye":
        r = np.hypot(p[:, 0], p[:, 1])
        theta = np.arctan2(r, p[:, 2])
        theta_d = _fisheye_theta_d(theta, dist)
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(r > 1e-15, theta_d / r, 1.0 / p[:, 2])
        xd, yd = p[:, 0] * scale, p[:, 1] * scale
        ok = (theta <= fisheye_theta_max(dist)) & ((r > 1e-15) | (p[:, 2] > 0))
    else:
        dist = dist if dist.size else np.zeros(5)
        ok = p[:, 2] > 1e-12
        if not ok.any():
            return out
        xy, _ = cv2.projectPoints(p[ok].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), np.eye(3), dist)
        xd = np.full(len(p), np.nan)
        yd = np.full(len(p), np.nan)
        xd[ok], yd[ok] = xy.reshape(-1, 2).T
    out[ok, 0] = k_mat[0, 0] * xd[ok] + k_mat[0, 1] * yd[ok] + k_mat[0, 2]
    out[ok, 1] = k_mat[1, 1] * yd[ok] + k_mat[1, 2]
    return out


def unproject(lens, pixels: np.ndarray, tol_px: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """(unit rays [N, 3] in the OpenCV camera frame, valid [N]) for pixels [N, 2]. A pixel is valid when
    the model images some ray there and projecting that ray lands back within `tol_px`."""
    px = np.asarray(pixels, float).reshape(-1, 2)
    k_mat = lens.camera_matrix
    dist = np.asarray(lens.dist, float).reshape(-1)
    yd = (px[:, 1] - k_mat[1, 2]) / k_mat[1, 1]
    xd = (px[:, 0] - k_mat[0, 2] - k_mat[0, 1] * yd) / k_mat[0, 0]
    if getattr(lens, "model", "pinhole") == "fisheye":
        theta_d = np.hypot(xd, yd)
        theta = theta_d.copy()
        t_max = fisheye_theta_max(dist)
        for _ in range(30):  # Newton on theta_d(theta) = theta_d: monotonic there, converges in < 10
            t2 = theta * theta
            g = _fisheye_theta_d(theta, dist) - theta_d
            dg = 1 + t2 * (3 * dist[0] + t2 * (5 * dist[1] + t2 * (7 * dist[2] + t2 * 9 * dist[3])))
            theta = np.clip(theta - g / np.where(np.abs(dg) > 1e-9, dg, 1e-9), 0.0, t_max)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where(theta_d > 1e-15, np.sin(theta) / theta_d, 1.0)
        rays = np.stack([xd * s, yd * s, np.cos(theta)], axis=1)
    else:
        crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
        dist = dist if dist.size else np.zeros(5)
        norm = cv2.undistortPointsIter(px.reshape(-1, 1, 2), k_mat, dist, None, None, crit).reshape(-1, 2)
        rays = np.concatenate([norm, np.ones((len(px), 1))], axis=1)
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    back = project(lens, rays)
    valid = np.all(np.isfinite(rays), axis=1) & (np.linalg.norm(back - px, axis=1) < tol_px)
    return rays, valid


# ---- target <- wide pinhole render -------------------------------------------------------------
class CameraRemap:
    """Maps from one wide centred pinhole render to the pixels of `lens` (module docstring: accuracy, limit).

    `render_size` (h, w) and `render_fovy_deg` say what to render; `remap(image)` (or calling the object)
    resamples such a render into the lens's image. Target pixels the model does not image are black.
    """

    def __init__(self, lens, supersample: float = 1.0, max_half_fov_deg: float = MAX_HALF_FOV_DEG) -> None:
        check_lens(lens)
        self.lens = lens
        self.supersample = float(supersample)
        h, w = (int(s) for s in lens.size)
        vv, uu = np.mgrid[0:h, 0:w].astype(float)
        rays, valid = unproject(lens, np.stack([uu.ravel(), vv.ravel()], axis=1))
        min_z = np.cos(np.deg2rad(89.9))
        valid &= rays[:, 2] > min_z
        if not valid.any():
            raise ValueError("camera model: no pixel of the lens images a ray in front of the camera")
        a = np.where(valid, rays[:, 0] / np.maximum(rays[:, 2], min_z), 0.0)
        b = np.where(valid, rays[:, 1] / np.maximum(rays[:, 2], min_z), 0.0)
        half_x, half_y = np.degrees(np.arctan([np.abs(a).max(), np.abs(b).max()]))
        if max(half_x, half_y) > max_half_fov_deg:
            raise ValueError(
                f"camera model: this lens needs a pinhole render {max(half_x, half_y):.1f} deg off-axis, one "
                f"render covers <= {max_half_fov_deg:g} deg (use a narrower lens or a cube map)"
            )
        # Render focal length: `supersample` x the lens's own at the image centre (its least dense place).
        f = self.supersample * max(lens.camera_matrix[0, 0], lens.camera_matrix[1, 1])
        rw = 2 * int(np.ceil(f * np.abs(a).max() + 2))  # + 2 px: bilinear reads never hit the border
        rh = 2 * int(np.ceil(f * np.abs(b).max() + 2))
        if max(rw, rh) > MAX_RENDER_PX:
            raise ValueError(
                f"camera model: the render would be {rw}x{rh} px, over {MAX_RENDER_PX} (lower supersample)"
            )
        self.render_size = (rh, rw)
        self.render_focal = f
        self.render_fovy_deg = float(np.degrees(2 * np.arctan((rh / 2) / f)))
        self.half_fov_deg = (float(half_x), float(half_y))
        u = (f * a + (rw - 1) / 2).reshape(h, w)  # MuJoCo: principal point at the centre, pixel centres
        v = (f * b + (rh - 1) / 2).reshape(h, w)
        self.valid = valid.reshape(h, w)
        # Footprint of a target pixel in render pixels -> pyramid level (OpenGL's lambda = log2 rho).
        du_y, du_x = np.gradient(u)
        dv_y, dv_x = np.gradient(v)
        rho = np.maximum(np.hypot(du_x, dv_x), np.hypot(du_y, dv_y))
        lam = np.log2(np.maximum(rho, 1.0))
        self.levels = int(np.ceil(lam[self.valid].max()))
        self._maps = []  # (level, map_x, map_y, weight) for the levels some pixel reads
        for lev in range(self.levels + 1):
            weight = np.clip(1 - np.abs(lam - lev), 0, 1) * self.valid
            if lev == self.levels:
                weight = np.where(lam >= lev, self.valid, weight)
            if weight.any():
                s = 2.0**lev  # cv2.pyrDown centres level-l pixel i on level-0 pixel 2^l i
                self._maps.append(
                    (lev, (u / s).astype(np.float32), (v / s).astype(np.float32), weight.astype(np.float32))
                )
        self.map_x, self.map_y = u, v  # float64, for tests and for whoever composes further maps

    def render_camera_matrix(self) -> np.ndarray:
        rh, rw = self.render_size
        f = self.render_focal
        return np.array([[f, 0, (rw - 1) / 2], [0, f, (rh - 1) / 2], [0, 0, 1.0]])

    def remap(self, render: np.ndarray) -> np.ndarray:
        """The lens's image (same dtype and channels as `render`) from a render of `render_size`."""
        if tuple(render.shape[:2]) != self.render_size:
            raise ValueError(
                f"camera model: render is {render.shape[:2]}, the remap was built for {self.render_size}"
            )
        h, w = self.lens.size
        out = np.zeros((h, w, *render.shape[2:]), np.float32)
        level, img = 0, render
        for lev, mx, my, weight in self._maps:
            while level < lev:
                img, level = cv2.pyrDown(img), level + 1
            sampled = cv2.remap(img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            out += (weight if sampled.ndim == 2 else weight[..., None]) * sampled
        if np.issubdtype(render.dtype, np.integer):
            info = np.iinfo(render.dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(render.dtype)
        return out.astype(render.dtype)

    __call__ = remap


_REMAPS: OrderedDict[tuple, CameraRemap] = OrderedDict()


def cached_remap(lens, supersample: float = 1.0) -> CameraRemap:
    """`CameraRemap(lens, supersample)`, built once per distinct lens (a few recent ones are kept)."""
    key = (
        getattr(lens, "model", "pinhole"),
        np.asarray(lens.camera_matrix, float).tobytes(),
        np.asarray(lens.dist, float).tobytes(),
        tuple(lens.size),
        float(supersample),
    )
    if key in _REMAPS:
        _REMAPS.move_to_end(key)
        return _REMAPS[key]
    remap = CameraRemap(lens, supersample)
    _REMAPS[key] = remap
    while len(_REMAPS) > 4:
        _REMAPS.popitem(last=False)
    return remap


class MujocoPinhole:
    """`(height, width, fovy_deg) -> image` for one MuJoCo camera, as `render_through` wants it: renders the
    camera (where `data` has it now) at that size and vertical field of view; `model.cam_fovy` is restored
    afterwards. One renderer per size is kept; close() frees them."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, camera: str) -> None:
        self.model, self.data, self.camera = model, data, camera
        self._cam = model.camera(camera).id
        if np.any(model.cam_sensorsize[self._cam] > 0):
            raise ValueError(f"camera {camera!r} is defined by sensorsize/focal; render_through needs fovy")
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def __call__(self, height: int, width: int, fovy_deg: float) -> np.ndarray:
        key = (int(height), int(width))
        if key not in self._renderers:
            glob = self.model.vis.global_
            glob.offheight = max(glob.offheight, key[0])  # read when a renderer is created, not after
            glob.offwidth = max(glob.offwidth, key[1])
            self._renderers[key] = mujoco.Renderer(self.model, height=key[0], width=key[1])
        renderer = self._renderers[key]
        old = float(self.model.cam_fovy[self._cam])
        self.model.cam_fovy[self._cam] = fovy_deg
        try:
            renderer.update_scene(self.data, camera=self.camera)
            return renderer.render().copy()
        finally:
            self.model.cam_fovy[self._cam] = old

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def render_through(
    source: Callable[[int, int, float], np.ndarray], lens, supersample: float = 1.0
) -> np.ndarray:
    """The twin camera's image as `lens` (pinhole + distortion, or fisheye) sees it.

    `source(height, width, fovy_deg)` renders the camera as a centred square-pixel pinhole (a MujocoPinhole,
    or a scene's own render function); the render it is asked for covers every ray of `lens`.
    """
    remap = cached_remap(lens, supersample)
    h, w = remap.render_size
    img = source(h, w, remap.render_fovy_deg)
    return remap(img)


# ---- the calibration board through a lens ------------------------------------------------------
def lens_views(
    lens,
    board: CharucoBoardSpec,
    board_pose: np.ndarray,
    n: int,
    seed: int = 0,
    distance_m: tuple[float, float] = (0.22, 0.45),
    max_tilt_deg: float = 45.0,
    min_inside: float = 0.5,
    margin_px: float = 4.0,
) -> list[np.ndarray]:
    """Camera poses for calibrating `lens` on `board` (at 4x4 `board_pose`): BoardScene's random views
    (distance, tilt, azimuth, roll), each turned about the camera's centre to move the board towards a
    pixel drawn uniformly over the image, as far as the whole board stays `margin_px` inside it.

    A wide lens's distortion lives at its edges and corners, and the views must put the board there;
    turning the camera leaves the board's obliqueness to the ray unchanged, and a whole board keeps the
    edge rows of corners detectable (ChArUco needs the markers beside a corner)."""
    from mimic.sim.handheld import random_views

    rng = np.random.default_rng(seed + 7919)
    h, w = lens.size
    sq = board.square_m
    gx, gy = np.meshgrid(np.arange(board.squares_x + 1) * sq, np.arange(board.squares_y + 1) * sq)
    grid = (board_pose @ np.stack([gx.ravel(), gy.ravel(), 0 * gx.ravel(), 1 + 0 * gx.ravel()]))[:3].T

    def inside(t: np.ndarray) -> bool:
        px = project(lens, (grid - t[:3, 3]) @ t[:3, :3])
        ok = np.all((px >= margin_px) & (px <= [w - 1 - margin_px, h - 1 - margin_px]), axis=1)
        return bool(np.mean(ok) >= min_inside)

    out = []
    for t in random_views(board_center(board, board_pose), n, seed, distance_m, max_tilt_deg):
        ray, ok = unproject(lens, [[rng.uniform(0, w - 1), rng.uniform(0, h - 1)]])
        ray = ray[0] if ok[0] else np.array([0.0, 0.0, 1.0])
        axis = np.cross([0.0, 0.0, 1.0], ray)  # turning z onto `ray` moves the board centre there
        angle = np.arctan2(np.linalg.norm(axis), ray[2])
        axis /= max(np.linalg.norm(axis), 1e-12)

        def turned(frac: float, t=t, axis=axis, angle=angle) -> np.ndarray:
            out_t = t.copy()
            out_t[:3, :3] = t[:3, :3] @ cv2.Rodrigues(axis * angle * frac)[0].T
            return out_t

        lo, hi = 0.0, 1.0
        if inside(turned(1.0)):
            lo = 1.0
        else:
            for _ in range(12):  # bisect the largest turn that keeps the whole board in the image
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if inside(turned(mid)) else (lo, mid)
        out.append(turned(lo))
    return out


class LensBoardScene:
    """BoardScene (mimic.sim.handheld) photographed through `lens` (default `umi_fisheye()`): the ground
    truth for fisheye calibration. `render(t_world_cam)` is the lens's image; `render_pinhole` the plain
    MuJoCo pinhole image at the same pose (BoardScene's own at the lens's size, `pinhole_fovy_deg`
    defaulting to the lens's focal length), `pinhole_camera_matrix()` its camera."""

    def __init__(
        self,
        lens=None,
        board: CharucoBoardSpec | None = None,
        supersample: float = 1.0,
        pinhole_fovy_deg: float | None = None,
        board_pose: np.ndarray | None = None,
    ) -> None:
        from mimic.sim.handheld import BoardScene

        self.lens = lens if lens is not None else umi_fisheye()
        self.remap = CameraRemap(self.lens, supersample)
        if pinhole_fovy_deg is None:  # the lens's own focal length: rectified and pinhole images compare 1:1
            pinhole_fovy_deg = float(
                np.degrees(2 * np.arctan(self.lens.size[0] / 2 / self.lens.camera_matrix[1, 1]))
            )
        self.scene = BoardScene(board, pinhole_fovy_deg, self.lens.size, board_pose)
        self.board, self.board_pose, self.size = self.scene.board, self.scene.board_pose, self.lens.size
        self.model, self.data = self.scene.model, self.scene.data
        self._pinhole = MujocoPinhole(self.model, self.data, "calib")

    def _place(self, t_world_cam: np.ndarray) -> None:
        from mimic.sim.handheld import MJ_TO_CV

        q = np.zeros(4)
        mujoco.mju_mat2Quat(q, np.ascontiguousarray(t_world_cam[:3, :3] @ MJ_TO_CV).reshape(-1))
        self.data.mocap_pos[0], self.data.mocap_quat[0] = t_world_cam[:3, 3], q
        mujoco.mj_forward(self.model, self.data)

    def render(self, t_world_cam: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 image through the lens from a camera at `t_world_cam` (OpenCV convention)."""
        self._place(t_world_cam)
        h, w = self.remap.render_size
        return self.remap(self._pinhole(h, w, self.remap.render_fovy_deg))

    def render_pinhole(self, t_world_cam: np.ndarray) -> np.ndarray:
        return self.scene.render(t_world_cam)

    def pinhole_camera_matrix(self) -> np.ndarray:
        return self.scene.camera_matrix()

    def board_center(self) -> np.ndarray:
        return self.scene.board_center()

    def random_views(self, n: int, seed: int = 0, **kwargs) -> list[np.ndarray]:
        """`lens_views` of the board for this lens (kwargs: distance_m, max_tilt_deg, margin_px)."""
        return lens_views(self.lens, self.board, self.board_pose, n, seed, **kwargs)

    def close(self) -> None:
        self._pinhole.close()
        self.scene.close()
