"""Latency estimation against known injected delays: arm cross-correlation and the camera time code."""

from __future__ import annotations

import threading
import time
from collections import deque

import cv2
import numpy as np
import pytest

from mimic.calibration.latency import (
    LatencyCalibration,
    camera_latency,
    draw_time_code,
    estimate_delay,
    measure_arm_latency,
    read_time_code,
)
from mimic.robots.arm import Arm, ArmState
from tests.unit.test_control_chunk import make_spec


@pytest.mark.parametrize("delay", [0.0, 0.037, 0.1, 0.25])
def test_cross_correlation_recovers_pure_delay_within_5ms(delay: float) -> None:
    rng = np.random.default_rng(0)
    t_cmd = np.sort(rng.uniform(0, 6, 3000))
    x = lambda t: 0.05 * np.sin(2 * np.pi * 0.7 * t) + 0.02 * np.sin(2 * np.pi * 1.9 * t)  # noqa: E731
    t_meas = np.sort(rng.uniform(0, 6, 2500))
    x_meas = x(t_meas - delay) + rng.normal(0, 1e-3, t_meas.size)
    est = estimate_delay(t_cmd, x(t_cmd), t_meas, x_meas, max_delay_s=0.4)
    assert abs(est - delay) < 0.005


def test_too_little_data_is_a_one_line_error() -> None:
    t = np.linspace(0, 0.5, 50)
    with pytest.raises(ValueError, match="too short"):
        estimate_delay(t, t, t, t, max_delay_s=0.3)


class DelayLineArm(Arm):
    """Executes each command exactly `latency` seconds after it was sent, with the measurement stamped then."""

    def __init__(self, latency: float) -> None:
        self.spec = make_spec()
        self.latency = latency
        self.history: deque[tuple[float, np.ndarray]] = deque(maxlen=10000)
        self.q0 = self.spec.home.copy()
        self.lock = threading.Lock()

    @property
    def is_connected(self) -> bool:
        return True

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def stop(self) -> None: ...

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        with self.lock:
            self.history.append((time.time(), np.array(q_target, float)))

    def state(self) -> ArmState:
        now = time.time()
        q = self.q0
        with self.lock:
            for t, qc in self.history:
                if t <= now - self.latency:
                    q = qc
                else:
                    break
        return ArmState(t=now, q=q.copy(), dq=np.zeros(7), gripper=0.04)


def test_measure_arm_latency_on_a_delay_line_arm(tmp_path) -> None:
    arm = DelayLineArm(latency=0.1)
    lat, samples = measure_arm_latency(
        arm, joint=0, freq_hz=1.0, duration_s=2.5, rate_hz=200, max_delay_s=0.3
    )
    assert abs(lat - 0.1) < 0.005, lat
    assert max(np.abs(np.array(samples["x_cmd"]) - arm.spec.home[0])) <= 0.05 + 1e-12
    cal = LatencyCalibration(arm_s=lat, camera_s={"scene": 0.15})
    cal.save(tmp_path / "latency.json")
    assert LatencyCalibration.load(tmp_path / "latency.json").arm_s == lat
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="bad.json"):
        LatencyCalibration.load(tmp_path / "bad.json")


def jpeg(img: np.ndarray, quality: int = 75) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def test_time_code_survives_jpeg_in_a_96px_image_and_gives_camera_latency() -> None:
    rng = np.random.default_rng(1)
    frames = []
    t0 = 1_763_000_000.123
    for k in range(30):
        t_cap = t0 + k / 30
        scene = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
        img = jpeg(draw_time_code(scene, t_cap, origin=(4, 2)))
        assert read_time_code(img, origin=(4, 2)) == pytest.approx(
            round(t_cap * 1e3) % (1 << 20) * 1e-3, abs=1e-9
        )
        frames.append((t_cap + 0.150 + rng.normal(0, 0.002), img))
    lat, n = camera_latency(frames, origin=(4, 2))
    assert n == 30 and abs(lat - 0.150) < 0.005


def test_no_time_code_in_view_is_reported() -> None:
    with pytest.raises(ValueError, match="readable time code"):
        camera_latency([(0.0, np.full((96, 96, 3), 128, np.uint8))])
