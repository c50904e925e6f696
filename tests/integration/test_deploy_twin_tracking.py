"""Latency matching on the twin at the controller level: a scripted chunk source, the chunk controller at
500 Hz, and the Franka twin with 100 ms injected command latency; the source sees the moving target
through 150 ms of camera latency and takes 50 ms to answer. The arm latency used for matching is the one
calibration measures on this twin (command delay plus servo lag). The policy and ROS deploy session are
not in this loop: the full-session proof waits for the policies team's checkpoints.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from mimic.calibration.latency import measure_arm_latency
from mimic.robots.control import ChunkController
from mimic.robots.pacer import Pacer
from mimic.sim.latency import LatencyConfig
from mimic.sim.twin import TwinArm

CAMERA_S, COMMAND_S, INFERENCE_S = 0.150, 0.100, 0.050
AMP, FREQ = 0.2, 0.4


def run(arm: TwinArm, lead_s: float | None, seconds: float = 6.0) -> float:
    """RMS joint-1 error of the twin to the target; lead_s None = matching off."""
    q0 = arm.state().q.copy()

    def target(t: float) -> float:
        return q0[0] + AMP * np.sin(2 * np.pi * FREQ * t)

    ctl = ChunkController(arm.spec, 500.0, lead_s=lead_s or 0.0)
    ctl.reset(q0, 0.04, time.time())
    pending: deque[tuple[float, float, np.ndarray]] = deque()
    pacer, next_obs, errors = Pacer(500.0), 0.0, []
    t_begin = time.time()
    while (t := time.time()) - t_begin < seconds:
        pacer.wait()
        if t >= next_obs:
            next_obs = t + 0.1
            t_capture = t - CAMERA_S
            rows = np.tile(np.concatenate([q0, [0.04]]), (16, 1))
            rows[:, 0] = [target(t_capture + 0.1 * i) for i in range(16)]
            pending.append((t + INFERENCE_S, t_capture if lead_s is not None else t + INFERENCE_S, rows))
        while pending and pending[0][0] <= t:
            _, t_start, rows = pending.popleft()
            ctl.set_chunk(t_start, 0.1, rows, t_now=t)
        out = ctl.target(t)
        if out is not None:
            arm.command(out[0], out[1])
        if t - t_begin > 2.5 and len(errors) < (t - t_begin) * 100:
            s = arm.state()
            errors.append(s.q[0] - target(s.t))
    return float(np.sqrt(np.mean(np.square(errors))))


def test_matching_on_the_twin_tracks_a_moving_target() -> None:
    arm = TwinArm("franka", latency=LatencyConfig(command_s=COMMAND_S))
    arm.connect()
    try:
        l_arm, _ = measure_arm_latency(
            arm, joint=0, freq_hz=FREQ, duration_s=5.0, rate_hz=100, max_delay_s=0.5
        )
        on = run(arm, lead_s=l_arm)
        off = run(arm, lead_s=None)
    finally:
        arm.disconnect()
    print(
        f"twin tracking RMS (calibrated L_arm {l_arm * 1e3:.0f} ms): matching on {on:.4f} rad, off {off:.4f} rad"
    )
    assert off > 4 * on
