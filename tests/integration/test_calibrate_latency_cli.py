"""`mimic calibrate latency` as a user runs it, on the Franka twin with known injected latencies: the arm's
command-to-motion delay and a camera's capture-to-arrival delay come back in the JSON the sessions read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mimic.calibration.latency import LatencyCalibration

REPO = Path(__file__).resolve().parents[2]


def calibrate(*args: str, mimic: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """`mimic calibrate latency ...`, or mimic.calibration.cli directly (`mimic` imports every verb's package)."""
    entry = ["-m", "mimic.cli", "calibrate"] if mimic else ["-m", "mimic.calibration.cli"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run(
        [sys.executable, *entry, "latency", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )


def test_latency_cli_recovers_injected_arm_and_camera_latency(tmp_path: Path) -> None:
    base = calibrate("--arm", "twin:franka", "--out", str(tmp_path / "base.json"))
    assert base.returncode == 0, base.stderr
    proc = calibrate(
        "--arm",
        "twin:franka",
        "--camera",
        "twin:scene",
        "--inject-arm-s",
        "0.1",
        "--inject-camera-s",
        "0.15",
        "--out",
        str(tmp_path / "lat.json"),
        mimic=True,
    )
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout)
    lat, lat0 = (
        LatencyCalibration.load(tmp_path / "lat.json"),
        LatencyCalibration.load(tmp_path / "base.json"),
    )
    # Command-to-motion is the injected delay plus the twin servo's own lag, which the base run measures alone.
    assert abs((lat.arm_s - lat0.arm_s) - 0.100) < 0.010, (lat.arm_s, lat0.arm_s)
    assert abs(lat.camera_s["camera0"] - 0.150) < 0.010, lat.camera_s
    assert lat.details["camera0"]["frames"] > 50 and lat0.camera_s == {}
    assert "arm_latency_s" in proc.stdout and "camera_latency_s" in proc.stdout


def test_bad_latency_requests_are_one_line_errors_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "lat.json"
    for args, words in [
        (["--arm", "ur:127.0.0.1", "--inject-arm-s", "0.1"], "only a twin arm injects latency"),
        (["--arm", "twin:franka", "--joint", "9"], "--joint 9: franka has joints 0..6"),
        (["--arm", "twin:franka", "--duration", "1"], "needs at least 2 periods"),
        (["--arm", "robotx:1"], "unknown backend 'robotx'"),
    ]:
        proc = calibrate(*args, "--out", str(out))
        text = proc.stderr.strip()
        assert proc.returncode == 1 and text.startswith("mimic calibrate latency: ") and words in text, text
        assert "\n" not in text and not out.exists()
