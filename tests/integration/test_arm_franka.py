"""Franka backend through franky-control against `franky-sim -s mujoco` (libfranka's wire protocol).

One simulator serves the whole module (it takes seconds to start); the disconnect test kills it, so it
runs last. Silence and disconnect are injected on the simulator process (SIGSTOP, SIGKILL); corrupt frames
by a relay between libfranka and the simulator that truncates the UDP state datagrams.
"""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

from mimic.robots.arm import ArmError, CommandRefused
from mimic.robots.factory import make_arm
from tests.peers.franky_sim import FrankaProxy, FrankySim

pytestmark = pytest.mark.timeout(240)

RATE_HZ = 100.0
# A loaded 2-core machine delays thread wake-ups; this is the slack on top of the stated detection bound.
SCHED_MARGIN_S = 0.15
# Staleness threshold for these tests: the backends default to 0.1 s (hardware), but peers and simulator share
# a 2-core machine whose load can starve them for longer; the detection bound below is derived from it.
STALE_S = 0.25
SETTLE_S = 6.0  # bound on settling at the last streamed target (a starved machine is slow; see the test)
MIN_RATE_FRACTION = (
    0.6  # of the backend's rate, achieved under load (bench/bench_arms.py reports the real rate)
)


@pytest.fixture(scope="module")
def sim():
    s = FrankySim()
    s.start()
    yield s
    s.stop()


def stream(
    arm, seconds: float, amplitude: float = 0.15, freq_hz: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Sine on joint 1 around the current pose at the backend's rate; returns (start pose, last target)."""
    q0 = arm.state().q.copy()
    t0 = time.time()
    target = q0
    next_tick = time.perf_counter()
    while (t := time.time() - t0) < seconds:
        target = q0.copy()
        target[0] += amplitude * np.sin(2 * np.pi * freq_hz * t)
        arm.command(target)
        next_tick += 1.0 / RATE_HZ
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    return q0, target


def test_connect_state_stream_and_track(sim):
    arm = make_arm(f"franka:{sim.host}", rate_hz=RATE_HZ, stale_after_s=STALE_S)
    arm.connect()
    try:
        s = arm.state()
        assert s.q.shape == (7,) and s.dq.shape == (7,)
        assert abs(s.t - time.time()) < 0.5
        assert 0.0 <= s.gripper <= 0.08
        q0, target = stream(arm, 2.0)
        # 2 s of targets at 100 Hz reached franky; with scheduling slack at least MIN_RATE_FRACTION of them.
        assert arm.commands_sent >= MIN_RATE_FRACTION * 2.0 * RATE_HZ
        # Then settle on the last target, within 0.03 rad. Unloaded this takes under 0.3 s; a starved machine
        # makes franky-sim follow the velocity stream slowly (a 1 s wait fell 0.063 rad short in CI; with the
        # test process frozen 10-80 ms every 0.1-0.3 s it settled in a median 2.2 s, at most 4.6 s of 40).
        deadline = time.time() + SETTLE_S
        while (err := np.abs(arm.state().q - target).max()) >= 0.03 and time.time() < deadline:
            time.sleep(0.05)
        s = arm.state()
        assert err < 0.03, (
            f"not within 0.03 rad of the last target {SETTLE_S:.0f} s after it: {s.q} vs {target}"
        )
        assert np.abs(s.q[1:] - q0[1:]).max() < 0.03
        stamps = []
        for _ in range(20):
            stamps.append(arm.state().t)
            time.sleep(0.011)
        # State keeps being refreshed (every 10 ms) with system-clock stamps; a read may repeat a sample.
        assert np.all(np.diff(stamps) >= 0) and len(set(stamps)) >= 10
    finally:
        arm.stop()
        arm.disconnect()


def test_gripper_moves(sim):
    arm = make_arm(f"franka:{sim.host}", stale_after_s=STALE_S)
    arm.connect()
    try:
        q = arm.state().q
        arm.command(q, gripper=0.02)
        deadline = time.time() + 5.0
        while time.time() < deadline and abs(arm.state().gripper - 0.02) > 0.003:
            time.sleep(0.05)
        assert abs(arm.state().gripper - 0.02) <= 0.003
    finally:
        arm.disconnect()


def test_refuses_out_of_limit_and_too_fast(sim):
    arm = make_arm(f"franka:{sim.host}", stale_after_s=STALE_S)
    arm.connect()
    try:
        q0 = arm.state().q.copy()
        sent = arm.commands_sent
        bad = q0.copy()
        bad[3] = 0.5  # panda_joint4 must stay below -0.0698
        with pytest.raises(CommandRefused, match="panda_joint4 target 0.5000 rad outside"):
            arm.command(bad)
        jump = q0.copy()
        jump[0] += 0.5  # 0.5 rad within one 10 ms period is far above 2.175 rad/s
        with pytest.raises(CommandRefused, match="exceeds"):
            arm.command(jump)
        time.sleep(0.3)
        assert arm.commands_sent == sent  # nothing was handed to franky
        assert np.abs(arm.state().q - q0).max() < 2e-3  # and the simulated arm did not move
    finally:
        arm.disconnect()


def _fault_test(host: str, inject, observable_s: float, **kwargs) -> None:
    """Stream, inject, keep commanding: ArmError within a period of the fault being observable, then quiet."""
    arm = make_arm(f"franka:{host}", rate_hz=RATE_HZ, stale_after_s=STALE_S, **kwargs)
    arm.connect()
    try:
        q0 = arm.state().q.copy()
        stream(arm, 0.5, amplitude=0.05)
        t_fault = time.time()
        inject()
        raised_at = None
        deadline = t_fault + 3.0
        k = 0
        while time.time() < deadline:
            target = q0.copy()
            target[0] += 0.05 * np.sin(2 * np.pi * 0.5 * (0.5 + k / RATE_HZ))
            k += 1
            try:
                arm.command(target)
            except ArmError as e:
                raised_at = time.time()
                message = str(e)
                break
            time.sleep(1.0 / RATE_HZ)
        assert raised_at is not None, "no ArmError within 3 s of the fault"
        assert "franka:" in message and "stopped commanding" in message
        # Silence is observable once the robot clock has been frozen for stale_after_s, a corrupt frame at
        # once; the error comes within one control period of that (plus scheduling slack on this machine).
        bound = observable_s + 1.0 / RATE_HZ + SCHED_MARGIN_S
        assert arm.fault_time - t_fault <= bound, (arm.fault_time - t_fault, bound)
        sent = arm.commands_sent
        time.sleep(0.2)
        assert arm.commands_sent == sent  # no further commands after the fault
        with pytest.raises(ArmError):
            arm.state()
    finally:
        arm.disconnect()


def test_silence_raises_within_a_period(sim):
    try:
        _fault_test(sim.host, sim.pause, STALE_S)
    finally:
        sim.resume()
    # The simulator is usable again by a fresh connection once it answers.
    time.sleep(1.5)
    arm = make_arm(f"franka:{sim.host}", stale_after_s=STALE_S)
    arm.connect()
    arm.disconnect()


def test_corrupt_frames_raise_within_a_period(sim):
    proxy = FrankaProxy(sim.host)
    proxy.start()
    try:
        _fault_test(
            proxy.host, lambda: proxy.inject("corrupt"), 0.0, gripper=False
        )  # the proxy relays no gripper
        assert proxy.datagrams_to_client > 0  # the arm really ran through the proxy
    finally:
        proxy.stop()
    time.sleep(1.5)  # the simulator notices its client left


def _free_loopback(port: int) -> str:
    """A 127.0.x.y address where nothing listens on `port` (franky-sim and the proxy take their own)."""
    for x in range(200, 250):
        host = f"127.0.{x}.{x}"
        probe = socket.socket()
        try:
            probe.bind((host, port))
            return host
        except OSError:
            continue
        finally:
            probe.close()
    raise RuntimeError("no free loopback address")


def test_wrong_address_errors_within_5_s_naming_address_and_cause():
    host = _free_loopback(1337)
    t0 = time.monotonic()
    with pytest.raises(ArmError, match=rf"{host}:1337: connection refused: .*FCI is not running"):
        make_arm(f"franka:{host}").connect()
    assert time.monotonic() - t0 < 5.0
    # an address that accepts the TCP connection and then says nothing (not a Franka's FCI): libfranka alone
    # would wait about a minute for its handshake
    host = _free_loopback(1337)
    listener = socket.create_server((host, 1337))
    try:
        arm = make_arm(f"franka:{host}", connect_timeout_s=2.0)
        t0 = time.monotonic()
        with pytest.raises(
            ArmError, match=rf"{host}:1337 accepted a connection but libfranka's handshake did not"
        ):
            arm.connect()
        took = time.monotonic() - t0
        assert 1.5 < took < 5.0, took
        assert not arm.is_connected
    finally:
        listener.close()


def test_disconnect_raises_within_a_period(sim):
    _fault_test(sim.host, sim.kill, STALE_S)  # last: the simulator is gone afterwards
