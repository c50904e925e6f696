"""Arm backends against their protocol peers: command streaming rate, state rate, tracking, fault detection.

For each backend (franka via franky-sim, ur via the RTDE peer process, xarm via the xArm peer) the caller
commands a 0.5 Hz sine on the first joint at the backend's control rate, through `mimic.robots.factory.make_arm`,
exactly as a controller node would. Reported per backend:
- `cmd_hz`: commands the backend handed to its SDK per second (franka: asynchronous motions to franky, which
  runs libfranka's own 1 kHz loop; ur: servoJ; xarm: set_servo_angle_j),
- `peer_hz`: commands the peer received per second (ur, xarm; franky-sim has no counter),
- `state_hz`: distinct state samples per second seen through `state()`,
- `track_rms_rad`: RMS of (target - measured) on the moving joint over the run (includes the servo lag),
- `silence_detect_ms`: time from the peer going silent to the backend's ArmError latch (STALE_S + a period),
- `corrupt_detect_ms`, `disconnect_detect_ms`: the same for corrupt frames and a dropped connection, on a
  fresh connection holding its pose (franka: truncated UDP state through `FrankaProxy`; SIGKILL),
- `sdk_max_hz` (ur, xarm): the SDK's own unpaced command call rate against the same peer.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from bench.common import BenchResult
from mimic.robots.arm import ArmError
from mimic.robots.factory import make_arm
from mimic.robots.specs import get_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The backends default to 0.1 s (a dedicated control machine); peers and simulator share this machine with
# everything else, whose load starves them for longer, so the benchmark uses the same threshold as the tests.
STALE_S = 0.25


def _drive(arm, seconds: float, rate_hz: float) -> dict:
    q0 = arm.state().q.copy()
    errs, stamps, trace = [], set(), []
    sent0 = arm.commands_sent
    t0 = time.time()
    next_tick = time.perf_counter()
    prev_target = q0
    while (t := time.time() - t0) < seconds:
        s = arm.state()
        stamps.add(s.t)
        errs.append(prev_target[0] - s.q[0])
        trace.append((t, prev_target[0] - q0[0], s.q[0] - q0[0]))
        target = q0.copy()
        target[0] += 0.2 * np.sin(2 * np.pi * 0.5 * t)
        arm.command(target)
        prev_target = target
        next_tick += 1.0 / rate_hz
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    elapsed = time.time() - t0
    return {
        "cmd_hz": round((arm.commands_sent - sent0) / elapsed, 1),
        "state_hz": round(len(stamps) / elapsed, 1),
        "track_rms_rad": round(float(np.sqrt(np.mean(np.square(errs)))), 4),
        "elapsed": elapsed,
        "trace": np.array(trace),
    }


def _detect(arm, inject) -> float:
    t = time.time()
    inject()
    while arm.fault_time is None and time.time() - t < 5.0:
        try:
            arm.state()
        except ArmError:
            break
        time.sleep(0.0005)
    return round(((arm.fault_time or float("nan")) - t) * 1e3, 1)


def _fresh_detect(uri: str, inject, clear, **kwargs) -> float:
    """Connect anew, hold the pose for 0.2 s of commands, inject a fault, return the detection time (ms)."""
    clear()
    arm = make_arm(uri, stale_after_s=STALE_S, **kwargs)
    arm.connect()
    try:
        q = arm.state().q
        for _ in range(20):
            arm.command(q)
            time.sleep(0.01)
        return _detect(arm, inject)
    finally:
        arm.disconnect()


def _xarm(seconds: float) -> dict:
    from tests.peers.xarm_peer import XArmPeer

    spec = get_spec("xarm7")
    with XArmPeer(q0=spec.home) as peer:
        arm = make_arm("xarm:127.0.0.1", stale_after_s=STALE_S, command_timeout_s=STALE_S)
        arm.connect()
        n0 = peer.servoj_count
        row = _drive(arm, seconds, spec.control_rate_hz)
        row["peer_hz"] = round((peer.servoj_count - n0) / row.pop("elapsed"), 1)
        row["silence_detect_ms"] = _detect(arm, lambda: peer.inject("silence"))
        arm.disconnect()
        for fault in ("corrupt", "disconnect"):
            row[f"{fault}_detect_ms"] = _fresh_detect(
                "xarm:127.0.0.1", lambda f=fault: peer.inject(f), lambda: peer.inject(None),
                command_timeout_s=STALE_S,
            )  # fmt: skip
        peer.inject(None)
        from xarm.wrapper import XArmAPI

        api = XArmAPI("127.0.0.1", is_radian=True, report_type="real", check_joint_limit=False)
        api.motion_enable(True), api.set_mode(1), api.set_state(0)
        q = list(spec.home)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min(seconds, 1.0):
            api.set_servo_angle_j(q, is_radian=True)
            n += 1
        row["sdk_max_hz"] = round(n / (time.perf_counter() - t0))
        api.disconnect()
    return row


def _ur(seconds: float) -> dict:
    from tests.peers.ur_rtde_peer import URPeerClient

    spec = get_spec("ur5e")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peers.ur_rtde_peer", "--q0", *map(str, spec.home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
        start_new_session=True,
    )
    try:
        peer = URPeerClient(proc)
        arm = make_arm("ur:127.0.0.1", stale_after_s=STALE_S)
        arm.connect()
        n0 = peer.stats()["servoj_count"]
        row = _drive(arm, seconds, spec.control_rate_hz)
        row["peer_hz"] = round((peer.stats()["servoj_count"] - n0) / row.pop("elapsed"), 1)
        row["silence_detect_ms"] = _detect(arm, lambda: peer.inject("silence"))
        arm.disconnect()
        for fault in ("corrupt", "disconnect"):
            row[f"{fault}_detect_ms"] = _fresh_detect(
                "ur:127.0.0.1", lambda f=fault: peer.inject(f), lambda: peer.inject(None)
            )
        peer.inject(None)
        import rtde_control

        ctrl = rtde_control.RTDEControlInterface("127.0.0.1", 500.0)
        q = list(spec.home)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < min(seconds, 1.0):
            ctrl.servoJ(q, 0.0, 0.0, 0.002, 0.1, 300.0)
            n += 1
        row["sdk_max_hz"] = round(n / (time.perf_counter() - t0))
        ctrl.servoStop()
        ctrl.stopScript()
        ctrl.disconnect()
        peer.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return row


def _franka(seconds: float) -> dict:
    from tests.peers.franky_sim import FrankaProxy, FrankySim

    sim = FrankySim()
    host = sim.start()
    try:
        arm = make_arm(f"franka:{host}", stale_after_s=STALE_S)
        arm.connect()
        row = _drive(arm, seconds, arm.config.rate_hz)
        row.pop("elapsed")
        row["silence_detect_ms"] = _detect(arm, sim.pause)
        sim.resume()
        arm.disconnect()
        time.sleep(1.5)  # the simulator notices its client left
        proxy = FrankaProxy(host)
        proxy.start()
        try:
            row["corrupt_detect_ms"] = _fresh_detect(
                f"franka:{proxy.host}",
                lambda: proxy.inject("corrupt"),
                lambda: proxy.inject(None),
                gripper=False,
            )
        finally:
            proxy.stop()
        time.sleep(1.5)
        row["disconnect_detect_ms"] = _fresh_detect(f"franka:{host}", sim.kill, lambda: None)
    finally:
        sim.stop()
    return row


def _plot(traces: dict[str, np.ndarray], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(traces), 1, figsize=(8, 2.4 * len(traces)), sharex=True, squeeze=False)
    for ax, (name, tr) in zip(axes[:, 0], traces.items(), strict=True):
        ax.plot(tr[:, 0], tr[:, 1], label="commanded target", lw=1.2)
        ax.plot(tr[:, 0], tr[:, 2], label="measured (state())", lw=1.2)
        ax.set_ylabel(f"{name}\njoint 1 (rad)")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("Arm backends through their SDKs against protocol peers")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(quick: bool) -> BenchResult:
    res = BenchResult(name="arms")
    traces: dict[str, np.ndarray] = {}
    seconds = 2.0 if quick else 10.0
    for name, fn, rate in (
        ("xarm", _xarm, get_spec("xarm7").control_rate_hz),
        ("ur", _ur, get_spec("ur5e").control_rate_hz),
        ("franka", _franka, 100.0),
    ):
        try:
            row = fn(seconds)
        except Exception as e:  # one backend's SDK missing must not hide the others
            res.notes.append(f"{name}: {type(e).__name__}: {e}")
            continue
        traces[name] = row.pop("trace")
        res.rows.append({"backend": name, "target_hz": rate, **row})
    if traces:
        path = os.path.join(REPO, "bench", "results", "arms_tracking.png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _plot(traces, path)
        res.notes.append(f"tracking plot: {os.path.relpath(path, REPO)}")
    res.notes.append(
        f"{seconds:.0f} s of a 0.2 rad 0.5 Hz sine per backend, peers on 127.0.0.1; "
        f"silence_detect_ms = peer silenced -> ArmError latched "
        f"(stale_after_s {STALE_S * 1e3:.0f} ms + one period)"
    )
    return res
