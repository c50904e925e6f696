"""Latency calibration: arm command-to-motion and camera capture-to-arrival, saved as a small JSON file.

Arm: command a sinusoid on one joint, record measured positions, and take the lag that maximises the
cross-correlation of commanded and measured motion (refined below the sample spacing by a parabola
through the peak). This is the `L_arm` the chunk controller leads by (DESIGN.md 4), tracking lag included,
since that lag is also part of "command to motion".

Camera: a display in view shows the current time as a binary time code (Gray-coded milliseconds, big
cells so JPEG survives); each frame's latency is its arrival time minus the time it shows.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from robots.arm import Arm

CODE_BITS = 20  # milliseconds modulo 2**20 (~17 min): far longer than any latency
CELL_PX = 4  # 22 cells x 4 px fit across a 96 px twin camera image


@dataclass
class LatencyCalibration:
    """What sessions and dataset attrs carry: one arm latency and one latency per camera, in seconds."""

    arm_s: float | None = None
    camera_s: dict[str, float] = field(default_factory=dict)
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
) -> tuple[float, dict]:
    """Drive `joint` of a connected arm with a sinusoid around its current pose; return (L_arm, samples).

    The sinusoid ramps in over its first period so its velocity stays far below any limit at start.
    """
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
