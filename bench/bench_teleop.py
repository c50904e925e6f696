"""Teleop numbers: GELLO leader read rate through the real dynamixel-sdk on the emulated bus, and camera fps.

Leader: 7 joint servos + trigger (Franka GELLO), one GroupSyncRead (or Fast Sync Read) of Present Position per read, with the
bus emulating the wire time of every byte at 57,600 baud (GELLO's default) and at 1 Mbaud, and the
servos' Return Delay Time as the driver leaves it (0 us) or at the factory default (500 us). The ideal
column is what the bytes alone allow: (instruction + 8 status packets) * 10 bits / baud + return delays;
the rest is the SDK's polling and the emulator sharing this machine's cores.

Tracking: the Franka twin following the leader (FollowController at 200 Hz) while the emulated person
sweeps four joints; RMS/max joint error of the arm to the person's pose, and a PNG of the run
(bench/results/teleop_tracking_<baud>.png).

Camera: the driver reading the MJPEG peer (tests/peers/mjpeg_server.py, 320x240 JPEG) on loopback at the
peer's 30 fps and at 120 fps (the receive ceiling).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import BenchResult, percentiles
from mimic.robots.camera import Camera, CameraConfig
from mimic.robots.specs import get_spec
from mimic.teleop.emulated_bus import EmulatedDynamixelBus
from mimic.teleop.gello import GelloConfig, GelloLeader
from mimic.teleop.gello_calibration import example_calibration


def _ideal_hz(baud: int, n_servos: int, return_delay_s: float, fast: bool = False) -> float:
    byte_s = 10.0 / baud
    instruction = 14 + n_servos
    if fast:  # one packet: 8 bytes of framing + (error, id, 4 data, crc) per servo, one return delay
        return 1.0 / ((instruction + 8 + 8 * n_servos) * byte_s + return_delay_s)
    status = 15 * n_servos  # 11 bytes + 4 data bytes each
    return 1.0 / ((instruction + status) * byte_s + n_servos * return_delay_s)


def leader_rate(baud: int, return_delay_us: float | None, seconds: float, fast: bool = False) -> dict:
    spec = get_spec("franka")
    cal = example_calibration("franka", baudrate=baud)
    with tempfile.TemporaryDirectory() as tmp, EmulatedDynamixelBus(cal, start_pose=spec.home) as bus:
        path = cal.save(Path(tmp) / "gello.json")
        bus.follow(lambda t: (spec.home + 0.2 * math.sin(t) * np.ones(7), 0.04))
        leader = GelloLeader(
            GelloConfig(
                port=bus.port,
                calibration=path,
                follower="franka",
                return_delay_us=return_delay_us,
                fast_sync_read=fast,
            )
        )
        with leader:
            delay_s = bus.servos[1].return_delay_s
            durations, errors = [], 0
            t_end = time.perf_counter() + seconds
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                try:
                    leader.read()
                except Exception:  # counted, not fatal: the rate is what matters here
                    errors += 1
                durations.append(time.perf_counter() - t0)
    p = percentiles(durations)
    return {
        "what": "gello fast sync read" if fast else "gello sync read",
        "baud": baud,
        "return_delay_us": round(delay_s * 1e6),
        "reads_per_s": len(durations) / seconds,
        "ideal_per_s": _ideal_hz(baud, 8, delay_s, fast),
        "read_p50_ms": p["p50"],
        "read_p99_ms": p["p99"],
        "errors": errors,
    }


def tracking(baud: int, seconds: float) -> dict:
    from mimic.robots.factory import make_arm
    from mimic.teleop.follow import follow, plot_follow

    spec = get_spec("franka")
    cal = example_calibration("franka", baudrate=baud)
    amp = np.array([0.25, 0.25, 0.0, 0.25, 0.0, 0.25, 0.0])

    def person(t: float) -> tuple[np.ndarray, float]:
        return spec.home + min(t, 1.0) * amp * np.sin(2 * np.pi * 0.25 * t), 0.04

    with tempfile.TemporaryDirectory() as tmp, EmulatedDynamixelBus(cal, start_pose=spec.home) as bus:
        path = cal.save(Path(tmp) / "gello.json")
        leader = GelloLeader(GelloConfig(port=bus.port, calibration=path, follower="franka"))
        with leader, make_arm("twin:franka") as arm:
            t0 = time.time()
            bus.follow(person)
            flog = follow(leader, arm, 200.0, seconds)
    png = plot_follow(
        flog,
        Path(__file__).parent / "results" / f"teleop_tracking_{baud}.png",
        spec.joint_names,
        title=f"Franka twin following the GELLO leader ({baud} baud)",
    )
    a = flog.arrays()
    keep = a["arm_t"] - t0 > 2.0
    truth = np.array([person(t - t0)[0] for t in a["arm_t"][keep]])
    err = np.abs(a["arm_q"][keep] - truth)
    return {
        "what": "twin tracking",
        "baud": baud,
        "rms_error_rad": float(np.sqrt(np.mean(err**2))),
        "max_error_rad": float(err.max()),
        "loop_hz": len(a["t"]) / seconds,
        "arm_refused": flog.counters["arm_refused"],
        "leader_errors": len(flog.leader_errors),
        "plot": png.name,
    }


def camera_rate(fps: float, seconds: float) -> dict:
    from tests.peers.mjpeg_server import MjpegServer

    with MjpegServer(fps=fps, size=(240, 320), max_seconds=seconds + 20) as server:
        with Camera(CameraConfig(source=server.url, name="bench", fps=fps)) as cam:
            n0, s0, t0 = cam.frames, server.sent, time.perf_counter()
            time.sleep(seconds)
            dt = time.perf_counter() - t0
            received, sent = (cam.frames - n0) / dt, (server.sent - s0) / dt
            dropped = cam.dropped
    # sent < peer_fps: the peer itself (JPEG encoding on this shared machine) could not keep up
    return {
        "what": "mjpeg camera",
        "peer_fps": fps,
        "sent_fps": sent,
        "received_fps": received,
        "dropped_estimate": dropped,
    }


def run(quick: bool) -> BenchResult:
    seconds = 1.5 if quick else 5.0
    result = BenchResult("teleop")
    for baud in (57_600, 1_000_000):
        for delay in (0.0, None):
            result.rows.append(leader_rate(baud, delay, seconds))
        result.rows.append(leader_rate(baud, 0.0, seconds, fast=True))
    for baud in (57_600, 1_000_000):
        result.rows.append(tracking(baud, 4.0 if quick else 10.0))
    for fps in (30.0, 120.0):
        result.rows.append(camera_rate(fps, seconds))
    rates = {
        (r["what"], r["baud"], r["return_delay_us"]): r["reads_per_s"]
        for r in result.rows
        if r["what"].startswith("gello")
    }
    sync, fast = "gello sync read", "gello fast sync read"
    result.ratios["1M_vs_57600_read_rate"] = rates[(sync, 1_000_000, 0)] / rates[(sync, 57_600, 0)]
    result.ratios["57600_return_delay_0_vs_500us"] = rates[(sync, 57_600, 0)] / rates[(sync, 57_600, 500)]
    result.ratios["57600_fast_vs_sync"] = rates[(fast, 57_600, 0)] / rates[(sync, 57_600, 0)]
    result.notes.append(
        "the emulated servos are a thread of this process: at 1 Mbaud the rate is bounded by "
        "scheduling on this shared machine, not by the wire (ideal column)"
    )
    return result
