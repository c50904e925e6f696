"""Gripper width from finger markers: the per-gripper calibration, from images or from the twin.

    mimic calibrate gripper-width --open 'gw/open*.png' --closed 'gw/closed*.png' --intrinsics wrist.json \\
        --gripper franka --out gripper_width.json
    mimic calibrate gripper-width --twin --out gripper_width.json     # the twin's gripper, rendered

Take a few wrist-camera frames (full resolution, the size the capture will measure on) with the gripper
held fully open and a few fully closed; the widths default to the gripper's range in its arm spec
(`--gripper`), or give them (`--open-width`, `--closed-width`). "3d" (default) measures the distance
between the two marker centres in metres and needs the wrist camera's intrinsics (`mimic calibrate
intrinsics`); "pixel" measures it in pixels and holds only for the camera mount it was made with.
`--twin` renders the twin's gripper open and closed with the wrist camera at its nominal mount and then
checks the result on a sweep over the whole range at randomised mounts, hand poses and lighting.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimic.sim.handheld import FingerMarkerSpec, HandheldEnv
from mimic.teleop.marker_width import (
    MODES,
    FingerMarkerDetector,
    MarkerWidthCalibration,
    MarkerWidthSource,
)

DETECTION_SIZE = (240, 320)  # (h, w) the twin's wrist frames are rendered at for width detection


def calibrate_from_images(
    open_images: list[np.ndarray],
    closed_images: list[np.ndarray],
    open_width_m: float,
    closed_width_m: float,
    spec: FingerMarkerSpec,
    mode: str = "3d",
    camera_matrix: np.ndarray | None = None,
    dist: np.ndarray | None = None,
    gripper: str = "",
    camera_model: str = "pinhole",
) -> MarkerWidthCalibration:
    """Calibration from frames of the gripper open and closed; frames without both markers are skipped."""
    if open_width_m <= closed_width_m:
        raise ValueError(
            f"gripper width: open width {open_width_m} m must exceed closed width {closed_width_m} m"
        )
    detector = FingerMarkerDetector(spec, mode, camera_matrix, dist, camera_model)
    size = None
    obs, used = [], {}
    for label, images, width in (
        ("open", open_images, open_width_m),
        ("closed", closed_images, closed_width_m),
    ):
        if not images:
            raise ValueError(f"gripper width: no {label} images given")
        used[label] = 0
        for i, img in enumerate(images):
            if size is None:
                size = tuple(img.shape[:2])
            if tuple(img.shape[:2]) != size:
                raise ValueError(f"gripper width: {label} image {i} is {img.shape[:2]}, the first one {size}")
            feat = detector.feature(img)
            if feat is not None:
                obs.append((feat, width))
                used[label] += 1
        if used[label] == 0:
            raise ValueError(
                f"gripper width: markers {spec.left_id} and {spec.right_id} ({spec.dictionary}) not both "
                f"found in any of the {len(images)} {label} images"
            )
    return MarkerWidthCalibration.fit(
        obs,
        spec,
        mode,
        size,
        camera_matrix=camera_matrix,
        dist=dist,
        camera_model=camera_model,
        gripper=gripper,
        details={
            "frames_used": used,
            "frames_given": {"open": len(open_images), "closed": len(closed_images)},
        },
    )


# ---- the twin ----------------------------------------------------------------------------------
def twin_calibration(
    gripper: str = "franka",
    mode: str = "3d",
    spec: FingerMarkerSpec | None = None,
    size: tuple[int, int] = DETECTION_SIZE,
) -> tuple[MarkerWidthCalibration, list[np.ndarray]]:
    """Calibrate on the twin's gripper, rendered fully open and fully closed with the wrist camera at its
    nominal mount (no randomisation), hand pointing down above the table; returns it and the two frames."""
    from mimic.sim.env import Randomization

    spec = spec or FingerMarkerSpec()
    still = Randomization(object_pose=0.0, colors=False, light=0.0, camera_pos_m=0.0)
    env = HandheldEnv(
        seed=0, gripper_like=gripper, finger_markers=spec, marker_image_size=size, randomization=still
    )
    try:
        env.reset(seed=0, tcp_start=np.array([0.4, 0.0, 0.25]))
        frames = {}
        for label, width in (("open", env.spec.gripper_max), ("closed", env.spec.gripper_min)):
            env.set_gripper_width(width)
            frames[label] = env.render("wrist", size)
        k = env.wrist_camera_matrix(size) if mode == "3d" else None
        cal = calibrate_from_images(
            [frames["open"]],
            [frames["closed"]],
            env.spec.gripper_max,
            env.spec.gripper_min,
            spec,
            mode,
            k,
            None,
            gripper,
        )
        cal.details["source"] = "twin (mimic.calibration.gripper_width.twin_calibration)"
    finally:
        env.close()
    return cal, [frames["open"], frames["closed"]]


@dataclass
class SweepResult:
    """Per render: true width (m), measured width (m, NaN where None), and the pose index it was taken at."""

    truth: np.ndarray
    measured: np.ndarray
    pose: np.ndarray

    @property
    def errors_m(self) -> np.ndarray:
        ok = np.isfinite(self.measured)
        return np.abs(self.measured[ok] - self.truth[ok])

    @property
    def detected(self) -> float:
        return float(np.isfinite(self.measured).mean())

    def summary(self) -> str:
        e = self.errors_m * 1e3
        worst = f"max error {e.max():.2f} mm, mean {e.mean():.2f} mm" if len(e) else "no detections"
        poses = len(np.unique(self.pose))
        return f"{poses} poses x {len(self.truth) // max(1, poses)} widths: {worst}, detected {self.detected * 100:.1f} %"


def random_hand_poses(n: int, seed: int, max_tilt_rad: float = 0.5) -> list[tuple]:
    """(tcp position, rotation) above the table: fingers down, tilted up to `max_tilt_rad`, any yaw."""
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    down = np.diag([1.0, -1.0, -1.0])
    out = []
    for _ in range(n):
        pos = np.array([rng.uniform(0.3, 0.55), rng.uniform(-0.15, 0.15), rng.uniform(0.12, 0.3)])
        axis = np.r_[rng.normal(size=2), 0.0]
        tilt = Rotation.from_rotvec(axis / np.linalg.norm(axis) * rng.uniform(0, max_tilt_rad)).as_matrix()
        yaw = Rotation.from_rotvec([0, 0, rng.uniform(-np.pi, np.pi)]).as_matrix()
        out.append((pos, tilt @ yaw @ down))
    return out


def twin_width_sweep(
    calibration: MarkerWidthCalibration,
    n_widths: int = 30,
    n_poses: int = 4,
    seed: int = 1,
    gripper: str = "franka",
    randomization=None,
) -> SweepResult:
    """Measure the width over the whole opening range (`n_widths` from closed to open) at `n_poses` hand
    poses, each after a reset with its own seed: the wrist mount jittered, light intensity and direction,
    table and cube colours drawn (`randomization`, default the twin's defaults plus light direction and
    table colour)."""
    from mimic.sim.env import Randomization

    rand = randomization or Randomization(light_dir_rad=0.4, table_color=0.15)
    env = HandheldEnv(
        seed=seed,
        gripper_like=gripper,
        finger_markers=calibration.marker_spec(),
        marker_image_size=calibration.image_size,
        randomization=rand,
    )
    source = MarkerWidthSource(calibration)
    truth, measured, pose = [], [], []
    try:
        for k, (pos, rot) in enumerate(random_hand_poses(n_poses, seed)):
            env.reset(seed=seed + k)
            env.place_hand(pos, rot)
            for w in np.linspace(env.spec.gripper_min, env.spec.gripper_max, n_widths):
                env.set_gripper_width(w)
                m = source.measure(env.render("wrist", calibration.image_size))
                truth.append(env.gripper_width())
                measured.append(np.nan if m is None else m)
                pose.append(k)
    finally:
        env.close()
    return SweepResult(np.array(truth), np.array(measured), np.array(pose))


@dataclass
class EpisodeWidths:
    """One scripted handheld episode's width stream: per wrist frame its time (s), true width (m), measured
    width (m, NaN where missing) and whether a synthetic thumb covered a marker."""

    t: np.ndarray
    truth: np.ndarray
    measured: np.ndarray
    occluded: np.ndarray
    success: bool

    @property
    def completeness(self) -> float:
        return float(np.isfinite(self.measured).mean())

    @property
    def errors_m(self) -> np.ndarray:
        ok = np.isfinite(self.measured)
        return np.abs(self.measured[ok] - self.truth[ok])

    @property
    def longest_gap(self) -> int:
        """Most consecutive frames without a width."""
        run = best = 0
        for ok in np.isfinite(self.measured):
            run = 0 if ok else run + 1
            best = max(best, run)
        return best


def thumb_over_marker(detector: FingerMarkerDetector, image: np.ndarray) -> np.ndarray:
    """The frame with a skin-coloured disc over the right finger's marker, where that marker is (an occluder
    for testing that a hidden marker gives no width); unchanged if the markers are not found."""
    import cv2

    det = detector.detect(image)
    if det is None:
        return image
    centre = det.right_px.mean(axis=0)
    radius = int(0.6 * np.linalg.norm(det.right_px[0] - det.right_px[2]))
    return cv2.circle(image.copy(), (int(centre[0]), int(centre[1])), radius, (205, 160, 130), -1)


def twin_episode_widths(
    calibration: MarkerWidthCalibration,
    seed: int = 0,
    camera_hz: float = 30.0,
    occlude_every: int = 0,
    capture=None,
    gripper: str = "franka",
) -> EpisodeWidths:
    """A scripted pick-place on the handheld twin (default randomisation: the wrist mount jittered per
    episode) with the width read from every wrist frame at `camera_hz`; `occlude_every` > 0 covers a marker
    in one frame of every so many. Given a `capture` (mimic.teleop.handheld.HandheldCapture, episode open),
    the tracker poses, the policy-size frames and the marker widths (or their absence) are fed to it."""
    from mimic.sim.handheld import HandheldExpert

    env = HandheldEnv(
        seed=seed,
        gripper_like=gripper,
        camera_hz=camera_hz,
        finger_markers=calibration.marker_spec(),
        marker_image_size=calibration.image_size,
    )
    source = MarkerWidthSource(calibration)
    expert = HandheldExpert(env)
    t_frames, truth, measured, occluded = [], [], [], []
    success = False
    try:
        obs = env.reset(seed=seed)
        expert.reset()
        for _ in range(env.max_steps):
            obs, _, term, trunc, info = env.step(expert.act(obs))
            if capture is not None:
                for s in info["pose_samples"]:
                    capture.on_pose(s.t, s.position, s.quat)
            for (t, small), (_, big), (_, w_true) in zip(
                info["frames"], info["marker_frames"], info["marker_widths"], strict=True
            ):
                hide = occlude_every > 0 and len(t_frames) % occlude_every == occlude_every // 2
                if hide:
                    big = thumb_over_marker(source.detector, big)
                if capture is not None:
                    w = source.feed(capture, t, big)
                    capture.on_frame(t, small)
                else:
                    w = source(t, big)[1]
                t_frames.append(t)
                truth.append(w_true)
                measured.append(np.nan if w is None else w)
                occluded.append(hide)
            if term or trunc:
                success = bool(info["success"])
                break
    finally:
        env.close()
    return EpisodeWidths(
        np.array(t_frames), np.array(truth), np.array(measured), np.array(occluded, bool), success
    )


# ---- command line ------------------------------------------------------------------------------
def configure(p) -> None:
    """`mimic calibrate gripper-width (--open GLOB --closed GLOB | --twin) --out gripper_width.json`."""
    d = FingerMarkerSpec()
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--open", help="glob of wrist frames with the gripper fully open")
    src.add_argument("--twin", action="store_true", help="render the twin's gripper open and closed")
    p.add_argument("--closed", help="glob of wrist frames with the gripper fully closed")
    p.add_argument("--out", required=True, help="calibration JSON to write")
    p.add_argument("--mode", default="3d", choices=MODES, help="marker distance in metres (3d) or pixels")
    p.add_argument("--intrinsics", help="wrist camera intrinsics JSON (mimic calibrate intrinsics); for 3d")
    p.add_argument(
        "--gripper", default="franka", help="arm spec whose gripper range gives the default widths"
    )
    p.add_argument("--open-width", type=float, help="width (m) of the open frames (default: the spec's max)")
    p.add_argument(
        "--closed-width", type=float, help="width (m) of the closed frames (default: the spec's min)"
    )
    p.add_argument("--dictionary", default=d.dictionary, help="ArUco dictionary of the finger markers")
    p.add_argument("--ids", type=int, nargs=2, default=(d.left_id, d.right_id), metavar=("LEFT", "RIGHT"))
    p.add_argument("--marker-size", type=float, default=d.marker_m, help="side of the black square (m)")
    p.add_argument("--png", help="the calibration frames with the detected markers drawn")
    p.add_argument(
        "--episodes",
        type=int,
        default=0,
        help="with --twin: also read the width through N scripted 30 fps episodes (seeds 0..N-1)",
    )


def run(a) -> int:
    from mimic.calibration.charuco import load_images
    from mimic.robots.specs import get_spec

    spec = FingerMarkerSpec(a.dictionary, a.ids[0], a.ids[1], a.marker_size)
    if a.episodes < 0 or (a.episodes and not a.twin):
        raise ValueError("--episodes N (N >= 0) runs twin episodes: use it with --twin")
    try:
        arm = get_spec(a.gripper)
    except (KeyError, ValueError):
        raise ValueError(f"--gripper {a.gripper!r}: no such arm spec") from None
    if a.twin:
        if a.intrinsics or a.closed or a.open_width is not None or a.closed_width is not None:
            raise ValueError(
                "--twin renders its own frames at known widths: drop --closed/--intrinsics/--*-width"
            )
        cal, frames = twin_calibration(a.gripper, a.mode, spec)
    else:
        if not a.closed:
            raise ValueError("--open needs --closed (frames of the gripper fully closed)")
        k = dist = None
        model = "pinhole"
        opened, closed = load_images(a.open), load_images(a.closed)
        if a.intrinsics:
            from mimic.calibration.intrinsics import Intrinsics

            intr = Intrinsics.load(a.intrinsics)
            k, dist, model = intr.camera_matrix, intr.dist, getattr(intr, "model", "pinhole")
            if tuple(intr.size) != tuple(opened[0].shape[:2]):
                raise ValueError(
                    f"{a.intrinsics}: intrinsics for {intr.size[0]}x{intr.size[1]} images, the frames are "
                    f"{opened[0].shape[0]}x{opened[0].shape[1]}"
                )
        elif a.mode == "3d":
            raise ValueError("--mode 3d needs --intrinsics (or use --mode pixel)")
        frames = [opened[0], closed[0]]
        cal = calibrate_from_images(
            opened,
            closed,
            arm.gripper_max if a.open_width is None else a.open_width,
            arm.gripper_min if a.closed_width is None else a.closed_width,
            spec,
            a.mode,
            k,
            dist,
            a.gripper,
            model,
        )
    cal.save(a.out)
    unit = "m" if cal.mode == "3d" else "px"
    points = ", ".join(
        f"{w * 1e3:.1f} mm <- {f:.5g} {unit}" for f, w in zip(cal.features, cal.widths, strict=True)
    )
    print(f"{a.out}: {cal.mode} marker distance -> width: {points}")
    if a.twin:
        print(f"twin check, {twin_width_sweep(cal, gripper=a.gripper).summary()}")
        for seed in range(a.episodes):
            ep = twin_episode_widths(cal, seed=seed, gripper=a.gripper)
            e = ep.errors_m * 1e3
            print(
                f"twin episode seed {seed}: {len(ep.t)} frames at 30 fps, width in {ep.completeness * 100:.1f} % "
                f"(longest gap {ep.longest_gap} frames), max error {e.max():.2f} mm, mean {e.mean():.2f} mm"
            )
    if a.png:
        _write_png(a.png, frames, cal)
    return 0


def _write_png(path: str, frames: list[np.ndarray], cal: MarkerWidthCalibration) -> None:
    import cv2

    from mimic.calibration.charuco import mosaic, write_png

    spec, tiles = cal.marker_spec(), []
    detector = FingerMarkerDetector(spec, "pixel")
    for img in frames:
        out = img.copy()
        det = detector.detect(img)
        if det is not None:
            corners = [
                det.left_px.reshape(1, 4, 2).astype(np.float32),
                det.right_px.reshape(1, 4, 2).astype(np.float32),
            ]
            cv2.aruco.drawDetectedMarkers(out, corners, np.array([[spec.left_id], [spec.right_id]]))
        tiles.append(out)
    write_png(path, mosaic(tiles, cols=2))
