"""Controller numbers: 500 Hz loop period error, chunk interpolation cost, and what latency matching buys.

Period error (|actual period - 2 ms| of a `Pacer` loop running the chunk controller on its own thread, as
the controller node runs it) is measured at normal priority and under SCHED_FIFO (`enable_realtime`, where
the OS allows it), first on the machine as it is ("idle": nothing started by the bench), then with the
teleop twin session running beside it (`mimic session up teleop_twin`: arm twin with two cameras,
controller at 500 Hz, recorder, scripted operator on an emulated GELLO bus, leader node), whose own
controller's period error is reported too (its node's stats, written on exit).

The matching rows are a controller-level proof with a scripted chunk source, in simulated time: a target
moves on joint 1; the "policy" sees it through a camera with latency `camera_s`, takes `inference_s` to
answer with a 16-point chunk at 10 Hz predicting the target from the time it believes the frame was
captured, and the arm executes each command `arm_s` after it is sent. With matching on, the frame is
stamped `t_arrival - camera_s` and the controller leads by `arm_s` (DESIGN.md 4); with it off, the frame
is taken as current and chunks start when they arrive. The score is the RMS error of the arm to the target.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import BenchResult, percentiles, time_calls
from mimic.robots.control import ChunkController
from mimic.robots.pacer import Pacer, enable_realtime
from mimic.robots.spec import ArmSpec, DHRow

RATE = 500.0


def bench_spec() -> ArmSpec:
    """Franka-like limits (Franka Emika datasheet joint and velocity limits), so the bench needs no other team."""
    return ArmSpec(
        name="franka-like",
        joint_names=tuple(f"joint{i}" for i in range(1, 8)),
        dh=tuple(DHRow(0.0, 0.0, 0.0) for _ in range(7)),
        dh_convention="modified",
        q_min=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
        q_max=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
        dq_max=np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
        home=np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]),
        control_rate_hz=1000.0,
        gripper_min=0.0,
        gripper_max=0.08,
        flange_offset=0.107,
        source="bench",
    )


@dataclass
class TrackingSetup:
    camera_s: float = 0.150
    arm_s: float = 0.100
    inference_s: float = 0.050
    policy_hz: float = 10.0
    horizon: int = 16
    amplitude_rad: float = 0.3
    freq_hz: float = 0.4
    duration_s: float = 10.0
    lead_error_s: float = 0.0  # calibrated minus true arm latency, to show what a bad calibration costs


def tracking_error(setup: TrackingSetup, matching: bool) -> float:
    """RMS joint-1 error (rad) of the arm to a moving target, simulated at the control rate."""
    spec = bench_spec()
    home = spec.home

    def target(t: float) -> float:
        return home[0] + setup.amplitude_rad * np.sin(2 * np.pi * setup.freq_hz * t)

    ctl = ChunkController(spec, RATE, lead_s=setup.arm_s + setup.lead_error_s if matching else 0.0)
    ctl.reset(home, 0.04, 0.0)
    dt_ctrl, dt_pol = 1.0 / RATE, 1.0 / setup.policy_hz
    in_flight: deque[tuple[float, float]] = deque()  # (t_execute, q0) commands travelling to the arm
    pending: deque[tuple[float, float, float, np.ndarray]] = deque()  # chunks being computed
    arm_q0, next_policy, errors = home[0], 0.0, []
    for k in range(int(setup.duration_s * RATE)):
        t = k * dt_ctrl
        if t >= next_policy:  # a frame arrives now; it was captured camera_s ago
            next_policy += dt_pol
            t_capture = t - setup.camera_s
            t_obs = t_capture if matching else t
            rows = np.tile(np.concatenate([home, [0.04]]), (setup.horizon, 1))
            rows[:, 0] = [target(t_capture + i * dt_pol) for i in range(setup.horizon)]
            t_ready = t + setup.inference_s
            pending.append((t_ready, t_obs if matching else t_ready, dt_pol, rows))
        while pending and pending[0][0] <= t:
            _, t_start, dt, rows = pending.popleft()
            ctl.set_chunk(t_start, dt, rows, t_now=t)
        out = ctl.target(t)
        if out is not None:
            in_flight.append((t + setup.arm_s, out[0][0]))
        while in_flight and in_flight[0][0] <= t:
            arm_q0 = in_flight.popleft()[1]
        if t > 2.0:
            errors.append(arm_q0 - target(t))
    return float(np.sqrt(np.mean(np.square(errors))))


def loop_period_errors(seconds: float, realtime: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Period errors and per-tick compute times of a 500 Hz loop running the chunk controller on its own
    thread (SCHED_FIFO when `realtime` and permitted), and the scheduling note."""
    out: dict = {}

    def loop() -> None:
        note = "normal priority"
        if realtime:
            _, note = enable_realtime(what="bench loop")
        spec = bench_spec()
        ctl = ChunkController(spec, RATE, lead_s=0.1)
        now = time.time()
        ctl.reset(spec.home, 0.04, now)
        rows = np.tile(np.concatenate([spec.home, [0.04]]), (int(seconds * 10) + 20, 1))
        rows[:, 0] += np.linspace(0, 0.5, len(rows))
        ctl.set_chunk(now, 0.1, rows)
        pacer = Pacer(RATE)
        errs, comp = [], []
        for _ in range(int(seconds * RATE)):
            err = pacer.wait()
            t0 = time.perf_counter()
            ctl.target(time.time())
            comp.append(time.perf_counter() - t0)
            if err is not None:
                errs.append(err)
        out.update(errs=np.array(errs), comp=np.array(comp), note=note)

    th = threading.Thread(target=loop, name="bench-loop")
    th.start()
    th.join()
    return out["errs"], out["comp"], out["note"]


class TeleopSession:
    """`mimic session up teleop_twin` in the background, bounded, its controller's stats written on exit."""

    def __init__(self, seconds_max: float) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_control_"))
        self.stats_path = self.tmp / "controller_stats.json"
        self.log_dir = self.tmp / "logs"
        self.seconds_max = seconds_max
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float = 120.0) -> None:
        cmd = [
            sys.executable, "-m", "mimic.cli", "session", "up", "teleop_twin",
            "--set", f"recorder.path={self.tmp / 'demos.zarr'}",
            "--set", "operator.episodes=1000",
            "--set", f"controller.stats_path={self.stats_path}",
            "--log-dir", str(self.log_dir),
            "--time-limit-s", str(self.seconds_max),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + ready_timeout_s
        leader_log = self.log_dir / "leader.log"
        while time.monotonic() < deadline:  # the leader node comes up last
            if leader_log.exists() and "MIMIC_NODE_READY" in leader_log.read_text(errors="replace"):
                time.sleep(3.0)  # the operator starts its first episode
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"teleop_twin session not running after {ready_timeout_s:.0f} s (logs: {self.log_dir})"
        )

    def stop(self) -> dict | None:
        """Ctrl-C the session; the controller's own loop statistics (None if it wrote none)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.stats_path.exists():
            return json.loads(self.stats_path.read_text())
        return None


def period_rows(seconds: float, load: str) -> tuple[list[dict], list[str]]:
    rows, notes = (
        [],
        [f"{load}: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the start"],
    )
    for realtime in (False, True):
        errs, comp, note = loop_period_errors(seconds, realtime)
        rows.append({"measure": f"500 Hz loop period error (ms), {load}, {note}", **percentiles(errs)})
        if not realtime:
            rows.append({"measure": f"target() per tick in loop (ms), {load}", **percentiles(comp)})
        else:
            notes.append(f"{load}: {note}")
    return rows, notes


def run(quick: bool) -> BenchResult:
    res = BenchResult("control")
    seconds = 2.0 if quick else 10.0
    rows, notes = period_rows(seconds, "idle")
    res.rows += rows
    res.notes += notes
    session = TeleopSession(seconds_max=4 * seconds + 240)
    try:
        session.start()
        rows, notes = period_rows(seconds, "teleop twin session beside")
        res.rows += rows
        res.notes += notes
    except RuntimeError as e:
        res.notes.append(f"loaded rows skipped: {e}")
    finally:
        stats = session.stop()
    if stats:
        res.rows.append(
            {
                "measure": "teleop twin session's own 500 Hz controller period error (ms)",
                "p50": stats["period_error_ms_p50"],
                "p99": stats["period_error_ms_p99"],
                "max": stats["period_error_ms_max"],
                "n": stats["ticks"],
            }
        )
    spec = bench_spec()
    ctl = ChunkController(spec, RATE)
    ctl.reset(spec.home, 0.04, 0.0)
    rows = np.tile(np.concatenate([spec.home, [0.04]]), (16, 1))
    ctl.set_chunk(0.0, 0.1, rows)
    ticks = iter(np.arange(0, 1.5, 1e-5))
    res.rows.append(
        {
            "measure": "target() interpolation (ms)",
            **percentiles(time_calls(lambda: ctl.target(next(ticks)), 2000)),
        }
    )
    res.rows.append(
        {
            "measure": "set_chunk 16x8 (ms)",
            **percentiles(time_calls(lambda: ctl.set_chunk(0.0, 0.1, rows), 2000)),
        }
    )
    setup = TrackingSetup(duration_s=6.0 if quick else 20.0)
    on, off = tracking_error(setup, True), tracking_error(setup, False)
    ideal = tracking_error(
        TrackingSetup(camera_s=0.0, arm_s=0.0, inference_s=0.0, duration_s=setup.duration_s), True
    )
    for name, v in (("no latency", ideal), ("matching on", on), ("matching off", off)):
        res.rows.append({"measure": f"tracking RMS error, {name} (rad)", "p50": v})
    res.ratios["tracking error off/on"] = off / on
    res.notes.append(
        f"tracking: camera {setup.camera_s * 1e3:.0f} ms, arm {setup.arm_s * 1e3:.0f} ms, inference "
        f"{setup.inference_s * 1e3:.0f} ms, target {setup.amplitude_rad} rad at {setup.freq_hz} Hz, simulated time"
    )
    return res
