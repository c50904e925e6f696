"""Latency calibration: arm command-to-motion and camera capture-to-arrival, saved as a small JSON file.

Arm: command a sinusoid on one joint, record measured positions, and take the lag that maximises the
cross-correlation of commanded and measured motion (refined below the sample spacing by a parabola
through the peak). This is the `L_arm` the chunk controller leads by (DESIGN.md 4), tracking lag included,
since that lag is also part of "command to motion".

Camera: a display in view shows the current time as a binary time code (Gray-coded milliseconds, big
cells so JPEG survives); each frame's latency is its arrival time minus the time it shows.

Pose stream (a handheld gripper's tracker): the tracker rides on the arm while the arm moves one joint; its
positions, projected on their main direction, are cross-correlated with the joint's capture-stamped motion
(`pose_latency_from_motion`, plain Python: any pose source hands it arrival times and positions). On a twin
`--pose twin` is a tracker on the flange whose samples arrive `--inject-pose-s` late, the check against truth.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from mimic.robots.arm import Arm

CODE_BITS = 20  # milliseconds modulo 2**20 (~17 min): far longer than any latency
CELL_PX = 4  # 22 cells x 4 px fit across a 96 px twin camera image


@dataclass
class LatencyCalibration:
    """What sessions and dataset attrs carry: one arm latency and one latency per camera, in seconds."""

    arm_s: float | None = None
    camera_s: dict[str, float] = field(default_factory=dict)
    pose_s: float | None = None  # a handheld pose stream's capture-to-arrival latency
    details: dict = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LatencyCalibration:
        try:
            d = json.loads(Path(path).read_text())
            return cls(**d)
        except (OSError, json.JSONDecodeError, TypeError) as e:
            raise ValueError(f"{path}: not a latency calibration file ({e})") from None


def estimate_delay(
    t_ref: np.ndarray,
    x_ref: np.ndarray,
    t_out: np.ndarray,
    x_out: np.ndarray,
    max_delay_s: float,
    grid_s: float = 1e-3,
) -> float:
    """Delay (s) of `x_out` behind `x_ref`, both irregularly sampled, by cross-correlation on a common grid."""
    return _xcorr_delay(t_ref, x_ref, t_out, x_out, max_delay_s, grid_s)[0]


def _xcorr_delay(t_ref, x_ref, t_out, x_out, max_delay_s: float, grid_s: float = 1e-3) -> tuple[float, float]:
    """(delay, peak correlation in [-1, 1])."""
    t_ref, x_ref, t_out, x_out = (np.asarray(a, float) for a in (t_ref, x_ref, t_out, x_out))
    t0, t1 = max(t_ref[0], t_out[0]), min(t_ref[-1], t_out[-1])
    if t1 - t0 < 4 * max_delay_s:
        raise ValueError(
            f"latency: {t1 - t0:.2f} s of overlapping data is too short for lags up to {max_delay_s} s"
        )
    grid = np.arange(t0, t1, grid_s)
    a = np.interp(grid, t_ref, x_ref)
    b = np.interp(grid, t_out, x_out)
    n_lag = int(round(max_delay_s / grid_s))
    m = len(grid) - n_lag
    # Pearson correlation per lag (each window's own mean and scale): a plain dot product is biased
    # towards lags where the shifted window happens to hold more energy on short records.
    ref = (a[:m] - a[:m].mean()) / (a[:m].std() + 1e-12)
    scores = np.empty(n_lag + 1)
    for k in range(n_lag + 1):
        w = b[k : k + m]
        scores[k] = np.dot(ref, w - w.mean()) / (m * (w.std() + 1e-12))
    k = int(np.argmax(scores))
    shift = 0.0
    if 0 < k < n_lag:
        y0, y1, y2 = scores[k - 1 : k + 2]
        denom = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / denom if denom != 0 else 0.0
    return (k + shift) * grid_s, float(scores[k])


def measure_arm_latency(
    arm: Arm,
    joint: int = 0,
    amplitude_rad: float = 0.05,
    freq_hz: float = 0.5,
    duration_s: float = 6.0,
    rate_hz: float | None = None,
    max_delay_s: float = 0.5,
    on_tick: Callable[[], None] | None = None,
) -> tuple[float, dict]:
    """Drive `joint` of a connected arm with a sinusoid around its current pose; return (L_arm, samples).

    The sinusoid ramps in over its first period so its velocity stays far below any limit at start, and runs
    whole periods (`duration_s` rounded up), so the joint ends where it started. `on_tick` runs once per
    control period on this thread (camera sampling during the motion).
    """
    duration_s = np.ceil(duration_s * freq_hz - 1e-9) / freq_hz
    rate = rate_hz or min(arm.spec.control_rate_hz, 500.0)
    s0 = arm.state()
    q0 = np.array(s0.q, float)
    period = 1.0 / rate
    t_cmd, x_cmd, t_meas, x_meas = [], [], [], []
    t_begin = time.time()
    next_t = time.perf_counter()
    while (t := time.time()) - t_begin < duration_s:
        ramp = min(1.0, (t - t_begin) * freq_hz)
        q = q0.copy()
        q[joint] += ramp * amplitude_rad * np.sin(2 * np.pi * freq_hz * (t - t_begin))
        arm.command(q, s0.gripper)
        t_cmd.append(t)
        x_cmd.append(q[joint])
        st = arm.state()
        t_meas.append(st.t)
        x_meas.append(st.q[joint])
        if on_tick is not None:
            on_tick()
        next_t += period
        time.sleep(max(0.0, next_t - time.perf_counter()))
    lat = estimate_delay(np.array(t_cmd), np.array(x_cmd), np.array(t_meas), np.array(x_meas), max_delay_s)
    return lat, {"t_cmd": t_cmd, "x_cmd": x_cmd, "t_meas": t_meas, "x_meas": x_meas}


def motion_signal(images: np.ndarray) -> np.ndarray:
    """One number per frame that follows the arm: the frames' projection on their first principal component.

    For small motions of one joint the pixels change nearly linearly with the angle, so the leading
    component is that joint's motion; it was steadier than a centroid of changed pixels on the twin.
    """
    x = np.asarray(images, float).reshape(len(images), -1)
    x -= x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, 0] * s[0]


def camera_latency_from_motion(
    t_joint: np.ndarray,
    q_joint: np.ndarray,
    t_arrival: np.ndarray,
    images: np.ndarray,
    max_delay_s: float = 0.5,
) -> float:
    """Camera latency (s) from frames of the arm moving one joint, against joint readings stamped at capture.

    Needs no marker in the scene: the arm itself is the time code. Whether the image signal rises or falls
    with the joint depends on the view, so both signs are tried and the stronger correlation wins.
    """
    sig = motion_signal(images)
    fits = [_xcorr_delay(t_joint, q_joint, t_arrival, sign * sig, max_delay_s) for sign in (1.0, -1.0)]
    return max(fits, key=lambda f: f[1])[0]


def pose_latency_from_motion(
    t_ref: np.ndarray,
    x_ref: np.ndarray,
    t_pose_arrival: np.ndarray,
    positions: np.ndarray,
    max_delay_s: float = 0.5,
) -> float:
    """Capture-to-arrival latency (s) of a pose stream, against a 1-D reference motion stamped at capture.

    The tracked positions move along one main direction when the reference is one joint's small sinusoid;
    their displacement along it (sign unknown: both are tried, the stronger correlation wins) is delayed
    behind the reference by the pose stream's latency.
    """
    p = np.asarray(positions, float)
    if p.ndim != 2 or p.shape[1] != 3 or len(p) != len(t_pose_arrival) or len(p) < 10:
        raise ValueError(
            f"pose latency: positions must be [n >= 10, 3] matching {len(t_pose_arrival)} arrival times, "
            f"got {p.shape}"
        )
    centred = p - p.mean(axis=0)
    x = centred @ np.linalg.svd(centred, full_matrices=False)[2][0]
    fits = [_xcorr_delay(t_ref, x_ref, t_pose_arrival, sign * x, max_delay_s) for sign in (1.0, -1.0)]
    return max(fits, key=lambda f: f[1])[0]


def _gray(n: int) -> int:
    return n ^ (n >> 1)


def _from_gray(g: int) -> int:
    n = 0
    while g:
        n ^= g
        g >>= 1
    return n


def draw_time_code(image: np.ndarray, t: float, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Paint `t` (ms, Gray-coded) as a strip of black/white cells with a white-black guard cell pair."""
    out = image.copy()
    r, c = origin
    bits = [1, 0] + [(_gray(int(round(t * 1e3)) % (1 << CODE_BITS)) >> i) & 1 for i in range(CODE_BITS)]
    for i, bit in enumerate(bits):
        out[r : r + CELL_PX, c + i * CELL_PX : c + (i + 1) * CELL_PX] = 255 if bit else 0
    return out


def read_time_code(image: np.ndarray, origin: tuple[int, int] = (0, 0)) -> float | None:
    """The time (s, modulo 2**CODE_BITS ms) shown by `draw_time_code`, or None if the guard cells are unreadable."""
    r, c = origin
    img = image.mean(axis=2) if image.ndim == 3 else image
    m = CELL_PX // 4
    cells = [
        img[r + m : r + CELL_PX - m, c + i * CELL_PX + m : c + (i + 1) * CELL_PX - m].mean()
        for i in range(CODE_BITS + 2)
    ]
    hi, lo = cells[0], cells[1]
    if hi - lo < 64:
        return None
    thresh = 0.5 * (hi + lo)
    g = sum(1 << i for i, v in enumerate(cells[2:]) if v > thresh)
    return _from_gray(g) * 1e-3


def camera_latency(
    frames: list[tuple[float, np.ndarray]], origin: tuple[int, int] = (0, 0)
) -> tuple[float, int]:
    """Median capture-to-arrival latency (s) over (t_arrival, image) pairs, and how many frames were readable."""
    wrap = (1 << CODE_BITS) * 1e-3
    lats = []
    for t_arrival, img in frames:
        shown = read_time_code(img, origin)
        if shown is not None:
            lats.append((t_arrival - shown) % wrap)
    if not lats:
        raise ValueError("latency: no frame showed a readable time code (is the code in view at the origin?)")
    return float(np.median(lats)), len(lats)


# ---- `mimic calibrate latency` ---------------------------------------------------------------------------
SIGNAL_SIZE = (64, 48)  # frames shrink to this before the motion signal's SVD (memory, not accuracy)
TWIN_CAMERA_FPS = 30.0


class FrameLog:
    """One camera's frames (arrival time, small grey image), sampled once per control tick of the motion."""

    def __init__(self, name: str, grab: Callable[[], tuple[float, np.ndarray] | None]) -> None:
        self.name, self.grab = name, grab
        self.t_arrival: list[float] = []
        self.images: list[np.ndarray] = []

    def tick(self) -> None:
        got = self.grab()
        if got is not None:
            import cv2

            t_arrival, rgb = got
            self.t_arrival.append(t_arrival)
            self.images.append(cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), SIGNAL_SIZE))


def twin_grabber(arm, camera: str) -> Callable[[], tuple[float, np.ndarray] | None]:
    """A twin camera, rendered on the motion's own thread (the GL context belongs to it), at most 30 fps."""
    last = [-np.inf]

    def grab() -> tuple[float, np.ndarray] | None:
        if time.time() - last[0] < 1.0 / TWIN_CAMERA_FPS:
            return None
        last[0] = time.time()
        image = arm.capture(camera, (96, 96))[1]  # returns when the frame "arrives" (injected latency slept)
        return time.time(), image

    return grab


def camera_grabber(camera) -> Callable[[], tuple[float, np.ndarray] | None]:
    """A connected mimic.robots.camera.Camera (its own capture thread): each new frame once."""
    last = [-1]

    def grab() -> tuple[float, np.ndarray] | None:
        f = camera.latest()
        if f is None or f.index == last[0]:
            return None
        last[0] = f.index
        return f.t_arrival, f.image

    return grab


class PoseLog:
    """A pose stream's samples (arrival time, position), sampled once per control tick of the motion."""

    def __init__(self, name: str, grab: Callable[[], tuple[float, np.ndarray] | None]) -> None:
        self.name, self.grab = name, grab
        self.t_arrival: list[float] = []
        self.positions: list[np.ndarray] = []

    def tick(self) -> None:
        got = self.grab()
        if got is not None:
            self.t_arrival.append(got[0])
            self.positions.append(np.asarray(got[1], float))


def twin_tracker(arm, latency_s: float, jitter_s: float = 0.0, seed: int = 0):
    """A tracker on the twin's flange: the flange position of each joint reading, arriving `latency_s` after
    its capture (+ uniform jitter in [0, jitter_s], never reordering samples)."""
    from mimic.robots.kinematics import forward_kinematics

    rng = np.random.default_rng(seed)
    last = [-np.inf]

    def grab() -> tuple[float, np.ndarray] | None:
        st = arm.state()
        t = max(st.t + latency_s + (rng.uniform(0, jitter_s) if jitter_s > 0 else 0.0), last[0])
        if t == last[0]:
            return None
        last[0] = t
        return t, forward_kinematics(arm.spec, st.q)[:3, 3]

    return grab


def configure(p) -> None:
    """`mimic calibrate latency --arm URI [--camera SOURCE ...] --out latency.json`."""
    p.description = (
        "Moves one joint in a small sinusoid about the arm's current pose and measures command-to-motion "
        "(L_arm) by cross-correlation; with --camera, moves it again (--camera-amplitude) and measures each "
        "camera's capture-to-arrival latency from the arm's motion in its frames (no marker needed); with "
        "--pose, a pose stream's (a handheld tracker riding on the arm) from the same arm pass. "
        "Keep the arm's surroundings clear; a real arm asks before it moves unless --yes."
    )
    p.add_argument("--arm", required=True, help="arm URI: twin:franka, franka:<ip>, ur:<ip>, xarm:<ip>")
    p.add_argument("--joint", type=int, default=0, help="joint to move (0-based)")
    p.add_argument("--amplitude", type=float, default=0.05, help="arm pass: sinusoid amplitude (rad)")
    p.add_argument("--freq", type=float, default=0.5, help="sinusoid frequency (Hz)")
    p.add_argument("--duration", type=float, default=6.0, help="seconds per pass")
    p.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="SOURCE",
        help="a camera to time: device index, video URL, or twin:scene / twin:wrist on a twin arm "
        "(repeatable; named camera0, camera1, ...)",
    )
    p.add_argument(
        "--camera-amplitude",
        type=float,
        default=0.2,
        help="camera pass: amplitude (rad), large enough to show in the frames",
    )
    p.add_argument("--inject-arm-s", type=float, default=0.0, help="twin only: command latency to inject (s)")
    p.add_argument(
        "--inject-camera-s", type=float, default=0.0, help="twin only: camera latency to inject (s)"
    )
    p.add_argument(
        "--pose",
        choices=("twin",),
        help="also time a pose stream during the arm pass: twin = a tracker on the twin's flange",
    )
    p.add_argument(
        "--inject-pose-s", type=float, default=0.0, help="twin tracker: pose latency to inject (s)"
    )
    p.add_argument(
        "--pose-jitter-s",
        type=float,
        default=0.0,
        help="twin tracker: arrival jitter, uniform in [0, this] (s)",
    )
    p.add_argument("--yes", action="store_true", help="move a real arm without asking first")
    p.add_argument("--out", required=True, help="latency JSON to write")


def run(a) -> int:
    from mimic.robots.factory import make_arm, parse_uri

    twin = parse_uri(a.arm)[0] == "twin"
    if not twin and (a.inject_arm_s or a.inject_camera_s):
        raise ValueError("--inject-arm-s / --inject-camera-s: only a twin arm injects latency")
    if a.pose == "twin" and not twin:
        raise ValueError("--pose twin: the twin tracker rides on a twin arm (--arm twin:<arm>)")
    if min(a.inject_pose_s, a.pose_jitter_s) < 0:
        raise ValueError("--inject-pose-s / --pose-jitter-s must be >= 0")
    if a.duration * a.freq < 2:
        raise ValueError(f"--duration {a.duration} s at --freq {a.freq} Hz: needs at least 2 periods")
    kwargs = {}
    if twin:
        from mimic.sim.latency import LatencyConfig

        kwargs["latency"] = LatencyConfig(command_s=a.inject_arm_s, camera_s=a.inject_camera_s)
    arm = make_arm(a.arm, **kwargs)
    if not 0 <= a.joint < arm.spec.dof:
        raise ValueError(f"--joint {a.joint}: {arm.spec.name} has joints 0..{arm.spec.dof - 1}")
    if not twin and not a.yes:
        amp = max(a.amplitude, a.camera_amplitude if a.camera else 0.0)
        answer = input(
            f"{a.arm}: joint {a.joint} will move +-{amp:.2f} rad about its current pose for "
            f"{a.duration * (2 if a.camera else 1):.0f} s. Arm clear? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            raise ValueError("not confirmed; nothing moved")
    cams = []
    arm.connect()
    try:
        for i, source in enumerate(a.camera):
            name = f"camera{i}"
            if source.startswith("twin:"):
                if not twin:
                    raise ValueError(f"--camera {source}: twin cameras need a twin arm")
                cams.append((FrameLog(name, twin_grabber(arm, source[5:])), None))
            else:
                from mimic.robots.camera import Camera, CameraConfig

                cam = Camera(CameraConfig(source=source, name=name))
                cam.connect()
                cams.append((FrameLog(name, camera_grabber(cam)), cam))
        pose_log = (
            PoseLog("pose", twin_tracker(arm, a.inject_pose_s, a.pose_jitter_s)) if a.pose == "twin" else None
        )
        lat, arm_pass = measure_arm_latency(
            arm, a.joint, a.amplitude, a.freq, a.duration, on_tick=pose_log.tick if pose_log else None
        )
        print(f"{a.arm}: command-to-motion L_arm = {lat * 1e3:.1f} ms (joint {a.joint}, +-{a.amplitude} rad)")
        result = LatencyCalibration(
            arm_s=lat,
            details={
                "arm": a.arm,
                "joint": a.joint,
                "amplitude_rad": a.amplitude,
                "freq_hz": a.freq,
                "duration_s": a.duration,
            },
        )
        if pose_log is not None:
            result.pose_s = pose_latency_from_motion(
                np.array(arm_pass["t_meas"]),
                np.array(arm_pass["x_meas"]),
                np.array(pose_log.t_arrival),
                np.array(pose_log.positions),
            )
            result.details["pose"] = {"source": a.pose, "samples": len(pose_log.t_arrival)}
            print(
                f"pose ({a.pose}): capture-to-arrival {result.pose_s * 1e3:.1f} ms over "
                f"{len(pose_log.t_arrival)} samples"
            )
        if cams:
            _, motion = measure_arm_latency(
                arm,
                a.joint,
                a.camera_amplitude,
                a.freq,
                a.duration,
                on_tick=lambda: [log.tick() for log, _ in cams],
            )
            for (log, _), source in zip(cams, a.camera, strict=True):
                if len(log.images) < 10:
                    raise ValueError(f"--camera {source}: {len(log.images)} frames in {a.duration} s")
                lat_cam = camera_latency_from_motion(
                    np.array(motion["t_meas"]),
                    np.array(motion["x_meas"]),
                    np.array(log.t_arrival),
                    np.array(log.images),
                )
                result.camera_s[log.name] = lat_cam
                result.details[log.name] = {"source": source, "frames": len(log.images)}
                print(
                    f"{log.name} ({source}): capture-to-arrival {lat_cam * 1e3:.1f} ms over {len(log.images)} frames"
                )
    finally:
        for _, cam in cams:
            if cam is not None:
                cam.disconnect()
        arm.disconnect()
    result.save(a.out)
    cam_s = ", ".join(f"{v:.3f}" for v in result.camera_s.values())
    print(
        f"{a.out}: session YAML, policy node: arm_latency_s: {result.arm_s:.3f}"
        + (f", camera_latency_s: {cam_s}" if cam_s else "")
        + (f"; handheld recorder: pose_latency_s: {result.pose_s:.3f}" if result.pose_s is not None else "")
    )
    return 0
