"""Latency calibration against the MuJoCo twin's injected latencies (mimic.sim.latency.LatencyConfig ground truth)."""

from __future__ import annotations

import time

import numpy as np

from mimic.calibration.latency import camera_latency_from_motion, measure_arm_latency
from mimic.sim.latency import LatencyConfig
from mimic.sim.twin import TwinArm


def arm_latency(command_s: float) -> float:
    arm = TwinArm("franka", latency=LatencyConfig(command_s=command_s, joint_state_s=0.03))
    arm.connect()
    try:
        return measure_arm_latency(arm, joint=0, freq_hz=1.0, duration_s=4.0, rate_hz=100, max_delay_s=0.4)[0]
    finally:
        arm.disconnect()


def test_arm_latency_recovers_injected_command_delay_within_5ms() -> None:
    # Command-to-motion = injected delay + the twin's position-servo lag; the difference isolates the delay.
    base, delayed = arm_latency(0.0), arm_latency(0.100)
    print(
        f"twin franka command-to-motion: {base * 1e3:.1f} ms servo lag alone, {delayed * 1e3:.1f} ms with 100 ms"
    )
    assert abs((delayed - base) - 0.100) < 0.005


def test_camera_latency_from_arm_motion_recovers_injected_150ms_within_5ms() -> None:
    arm = TwinArm("franka", latency=LatencyConfig(camera_s=0.150, joint_state_s=0.03))
    arm.connect()
    q0 = arm.state().q.copy()
    t_arrival, images, t_joint, q_joint = [], [], [], []
    try:
        t_begin = time.time()
        while (t := time.time()) - t_begin < 5.0:
            q = q0.copy()
            q[0] += min(1.0, (t - t_begin) * 0.5) * 0.3 * np.sin(np.pi * (t - t_begin))
            arm.command(q)
            s = arm.state()
            t_joint.append(s.t)
            q_joint.append(s.q[0])
            if len(t_arrival) < (t - t_begin) * 30:
                images.append(arm.capture("scene", (96, 96))[1])
                t_arrival.append(time.time())
            time.sleep(0.005)
    finally:
        arm.disconnect()
    assert np.ptp(np.array(images, dtype=float), axis=0).max() > 0, (
        "the twin's frames do not show the arm moving"
    )
    lat = camera_latency_from_motion(
        np.array(t_joint), np.array(q_joint), np.array(t_arrival), np.array(images)
    )
    print(f"twin camera latency estimate {lat * 1e3:.1f} ms (injected 150 ms)")
    assert abs(lat - 0.150) < 0.005
