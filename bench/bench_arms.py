"""Arm backends against their protocol peers: command streaming rate, state rate, tracking, fault detection.

For each backend (franka via franky-sim, ur via the RTDE peer process, xarm via the xArm peer) the caller
commands a 0.5 Hz sine on the first joint at the backend's control rate, through `mimic.robots.factory.make_arm`,
exactly as a controller node would. Reported per backend:
- `cmd_hz`: commands the backend handed to its SDK per second (franka: asynchronous motions to franky, which
  runs libfranka's own 1 kHz loop; ur: servoJ, from the ur_rtde child process; xarm: set_servo_angle_j),
- `peer_hz`: commands the peer received per second (ur, xarm; franky-sim has no counter),
- `state_hz`: distinct state samples per second seen through `state()`,
- `track_rms_rad`: RMS of (target - measured) on the moving joint over the run (includes the servo lag),
- `silence_ms_p50` / `silence_ms_max`: the peer going silent (sockets left open) -> the backend's fault
  latch, over `SILENCE_TRIALS` fresh connections holding their pose, with the backend's default staleness
  (ur, xarm: 3 control periods; franka: its `stale_after_s`, 100 ms); `silence_retries`: connections that
  faulted before the injection because the peer itself stalled past that limit (the peers are Python
  processes on this machine); `corrupt_*`, `disconnect_*` (ur, xarm): the same for corrupt frames and
  dropped connections; franka's `corrupt_detect_ms`, `disconnect_detect_ms`: once each, truncated UDP state
  through `FrankaProxy` and SIGKILL of the simulator,
- ur: `crash_detect_ms` (the ur_rtde child process killed with SIGSEGV -> latch) and `stop_hang_ms`
  (disconnect() while the controller never ends the program); xarm: `error_ms_*` (a controller error
  raised while only holding -> latch) and `stop_hang_ms` (disconnect() from a silent controller); franka:
  `wrong_address_ms` (nothing listening -> ArmError) and `no_handshake_ms` (a listener that never answers),
- `sdk_max_hz` (ur, xarm): the SDK's own unpaced command call rate against the same peer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np

from bench.common import BenchResult
from mimic.robots.arm import ArmError, CommandRefused
from mimic.robots.factory import make_arm
from mimic.robots.specs import get_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# For the streaming and corrupt/disconnect rows: peers and simulator share this machine with everything else,
# whose load stalls them past the backends' defaults now and then, so those rows use the tests' thresholds.
STALE_S = 0.25
LENIENT = {"ur": {"stale_periods": 125}, "xarm": {"stale_periods": 62}, "franka": {"stale_after_s": STALE_S}}
SILENCE_TRIALS = 5


def _drive(arm, seconds: float, rate_hz: float) -> dict:
    q0 = arm.state().q.copy()
    errs, stamps, trace = [], set(), []
    sent0 = arm.commands_sent
    t0 = time.time()
    next_tick = time.perf_counter()
    prev_target = q0
    refused, fault = 0, ""
    while (t := time.time() - t0) < seconds:
        s = arm.state()
        stamps.add(s.t)
        errs.append(prev_target[0] - s.q[0])
        trace.append((t, prev_target[0] - q0[0], s.q[0] - q0[0]))
        target = q0.copy()
        target[0] += 0.2 * np.sin(2 * np.pi * 0.5 * (time.time() - t0))  # the time it is sent at
        try:
            arm.command(target)
            prev_target = target
        except CommandRefused:  # preempted between stamping and sending: the guard saw a fast step
            refused += 1
        except ArmError as e:  # the peer stalled past even the lenient limit: report, keep the other rows
            fault = f"{time.time() - t0:.1f} s: {e}"
            break
        next_tick += 1.0 / rate_hz
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    elapsed = time.time() - t0
    return {
        "cmd_hz": round((arm.commands_sent - sent0) / elapsed, 1),
        "state_hz": round(len(stamps) / elapsed, 1),
        "track_rms_rad": round(float(np.sqrt(np.mean(np.square(errs)))), 4),
        "refused": refused,
        "drive_fault": fault[:160],
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
    arm = make_arm(uri, **{**LENIENT[uri.split(":")[0]], **kwargs})
    arm.connect()
    try:
        q = arm.state().q
        for _ in range(20):
            arm.command(q)
            time.sleep(0.01)
        return _detect(arm, inject)
    finally:
        arm.disconnect()


def _trials(name: str, uri: str, inject, clear, trials: int = SILENCE_TRIALS, **kwargs) -> dict:
    """Detection of a fault with the backend's default staleness, on fresh connections holding their pose
    for 0.1 s; a connection that faults before the injection (the peer stalled past that limit) is counted
    in `<name>_retries` and redone."""
    times, retries = [], 0
    while len(times) < trials and retries < 5 * trials:
        clear()
        arm = make_arm(uri, **kwargs)
        arm.connect()
        try:
            q = arm.state().q
            try:
                for _ in range(10):
                    arm.command(q)
                    time.sleep(0.01)
            except ArmError:
                retries += 1
                continue
            times.append(_detect(arm, inject))
        finally:
            arm.disconnect()
    clear()
    a = np.array(times) if times else np.array([np.nan])
    return {
        f"{name}_ms_p50": round(float(np.median(a)), 1),
        f"{name}_ms_max": round(float(a.max()), 1),
        f"{name}_retries": retries,
    }


def _timed(fn) -> float:
    t = time.monotonic()
    fn()
    return round((time.monotonic() - t) * 1e3, 1)


def _xarm(seconds: float) -> dict:
    from tests.peers.xarm_peer import XArmPeer

    spec = get_spec("xarm7")
    with XArmPeer(q0=spec.home) as peer:
        arm = make_arm("xarm:127.0.0.1", **LENIENT["xarm"])
        arm.connect()
        n0 = peer.servoj_count
        row = _drive(arm, seconds, spec.control_rate_hz)
        row["peer_hz"] = round((peer.servoj_count - n0) / row.pop("elapsed"), 1)
        arm.disconnect()
        for fault in ("silence", "corrupt", "disconnect"):
            row.update(
                _trials(fault, "xarm:127.0.0.1", lambda f=fault: peer.inject(f), lambda: peer.inject(None))
            )
        peer.inject(None)
        row.update(_trials("error", "xarm:127.0.0.1", lambda: peer.set_error(31), lambda: peer.set_error(0)))
        peer.set_error(0)
        arm = make_arm("xarm:127.0.0.1", **LENIENT["xarm"])
        arm.connect()
        peer.inject("silence")
        row["stop_hang_ms"] = _timed(arm.disconnect)
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
        arm = make_arm("ur:127.0.0.1", **LENIENT["ur"])
        arm.connect()
        n0 = peer.stats()["servoj_count"]
        row = _drive(arm, seconds, spec.control_rate_hz)
        row["peer_hz"] = round((peer.stats()["servoj_count"] - n0) / row.pop("elapsed"), 1)
        arm.disconnect()
        for fault in ("silence", "corrupt", "disconnect"):
            row.update(
                _trials(fault, "ur:127.0.0.1", lambda f=fault: peer.inject(f), lambda: peer.inject(None))
            )
        peer.inject(None)
        arm = make_arm("ur:127.0.0.1", **LENIENT["ur"])
        arm.connect()
        time.sleep(0.2)
        row["crash_detect_ms"] = _detect(arm, lambda: os.kill(arm.sdk_pid, signal.SIGSEGV))
        arm.disconnect()
        arm = make_arm("ur:127.0.0.1", **LENIENT["ur"])
        arm.connect()
        peer.script_never_stops()
        row["stop_hang_ms"] = _timed(arm.disconnect)
        peer.script_never_stops(False)
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
        arm.disconnect()
        time.sleep(1.5)  # the simulator notices its client left

        def pause_then_resume_later() -> None:
            sim.pause()

        def resume() -> None:
            sim.resume()
            time.sleep(1.5)

        row.update(_trials("silence", f"franka:{host}", pause_then_resume_later, resume, trials=3))
        proxy = FrankaProxy(host)
        proxy.start()
        try:
            row["corrupt_detect_ms"] = _fresh_detect(
                f"franka:{proxy.host}",
                lambda: proxy.inject("corrupt"),
                lambda: proxy.inject(None),
                gripper=False,
                stale_after_s=0.1,
            )
        finally:
            proxy.stop()
        time.sleep(1.5)
        row["disconnect_detect_ms"] = _fresh_detect(
            f"franka:{host}", sim.kill, lambda: None, stale_after_s=0.1
        )
    finally:
        sim.stop()
    nobody = "127.0.251.251"  # nothing listens there
    row["wrong_address_ms"] = _timed(lambda: _expect_arm_error(f"franka:{nobody}"))
    listener = socket.create_server((nobody, 1337))  # accepts, never answers
    try:
        row["no_handshake_ms"] = _timed(lambda: _expect_arm_error(f"franka:{nobody}"))
    finally:
        listener.close()
    return row


def _expect_arm_error(uri: str) -> None:
    try:
        make_arm(uri).connect()
    except ArmError:
        return
    raise RuntimeError(f"{uri}: connected where nothing should answer")


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
        f"{seconds:.0f} s of a 0.2 rad 0.5 Hz sine per backend, peers on 127.0.0.1; silence_ms = peer "
        "silenced -> fault latched with each backend's default staleness (ur 3 x 2 ms, xarm 3 x 4 ms, "
        f"franka 100 ms), as are every *_ms row; the streaming rows use {LENIENT}"
    )
    return res
