"""xArm backend through xarm-python-sdk against the xArm protocol peer (ports 502 and 30003 on 127.0.0.1).

The peer runs in a thread of the test process so the test can count what reached it; it takes a file lock
because the SDK hard-codes its ports.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from mimic.robots.arm import ArmError, CommandRefused
from mimic.robots.factory import make_arm
from mimic.robots.specs import get_spec
from tests.peers.xarm_peer import XArmPeer

pytestmark = pytest.mark.timeout(300)

SPEC = get_spec("xarm7")
RATE_HZ = SPEC.control_rate_hz
SCHED_MARGIN_S = 0.15  # slack for thread wake-ups on a loaded 2-core machine
# Staleness for the tests that are not about silence: the backend defaults to 3 report periods (12 ms), but the
# peer shares this process and a loaded 2-core machine, whose scheduling stalls its report stream past that
# now and then; 62 periods (~250 ms) keep those tests about what they test.
STALE_PERIODS = 62
MIN_RATE_FRACTION = (
    0.6  # of the backend's rate, achieved under load (bench/bench_arms.py reports the real rate)
)


@pytest.fixture
def peer():
    p = XArmPeer(q0=SPEC.home).start()
    yield p
    p.stop()


def stream(arm, seconds: float, amplitude: float = 0.2, freq_hz: float = 0.5):
    q0 = arm.state().q.copy()
    t0 = time.time()
    target = q0
    next_tick = time.perf_counter()
    n = 0
    while (t := time.time() - t0) < seconds:
        target = q0.copy()
        target[0] += amplitude * np.sin(2 * np.pi * freq_hz * t)
        arm.command(target)
        n += 1
        next_tick += 1.0 / RATE_HZ
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    return q0, target, n


def test_connect_state_stream_and_track(peer):
    arm = make_arm("xarm:127.0.0.1", stale_periods=STALE_PERIODS)
    arm.connect()
    try:
        s = arm.state()
        assert np.allclose(s.q, SPEC.home, atol=1e-5)  # fp32 on the wire
        assert abs(s.t - time.time()) < 0.5
        assert peer.mode == 1 and peer.state == 0 and peer.enabled  # servo mode, ready
        q0, target, n = stream(arm, 2.0)
        assert n >= MIN_RATE_FRACTION * 2.0 * RATE_HZ
        assert (
            peer.servoj_count >= MIN_RATE_FRACTION * n
        )  # targets reached the controller at (nearly) the backend rate
        time.sleep(0.2)
        assert np.allclose(peer.servoj_last, target, atol=1e-5)
        assert np.abs(arm.state().q - target).max() < 0.01
        s1 = arm.state()
        time.sleep(0.05)
        assert arm.state().t > s1.t  # reports keep arriving with system-clock stamps
    finally:
        arm.stop()
        arm.disconnect()


def test_gripper_through_the_tool_rs485_port(peer):
    arm = make_arm("xarm:127.0.0.1", gripper=True, stale_periods=STALE_PERIODS)
    arm.connect()
    try:
        assert arm.gripper_supported and peer.gripper_enabled  # enabled over Modbus-RTU at connect
        assert arm.state().gripper == pytest.approx(SPEC.gripper_max)  # 850 pulses = open
        q = arm.state().q
        writes = peer.gripper_writes
        with pytest.raises(CommandRefused, match="gripper target 0.2000 m outside"):
            arm.command(q, gripper=0.2)
        time.sleep(0.2)
        assert peer.gripper_writes == writes  # the refused width never reached the tool bus
        deadline = time.time() + 5.0
        while time.time() < deadline and abs(arm.state().gripper - 0.03) > 0.0002:
            arm.command(q, gripper=0.03)
            time.sleep(0.02)
        assert arm.state().gripper == pytest.approx(0.03, abs=0.0002)
        assert peer.gripper_target == 300
    finally:
        arm.disconnect()


def test_refuses_out_of_limit_and_too_fast(peer):
    arm = make_arm("xarm:127.0.0.1", stale_periods=STALE_PERIODS)
    arm.connect()
    try:
        q0 = arm.state().q.copy()
        before = peer.servoj_count
        bad = q0.copy()
        bad[1] = 2.5  # joint2 max is 2.0944
        with pytest.raises(CommandRefused, match="joint2 target 2.5000 rad outside"):
            arm.command(bad)
        jump = q0.copy()
        jump[0] += 0.3  # 0.3 rad in one 4 ms period is ~75 rad/s
        with pytest.raises(CommandRefused, match="exceeds"):
            arm.command(jump)
        with pytest.raises(CommandRefused, match="gripper target"):
            arm.command(q0, gripper=0.5)
        time.sleep(0.2)
        assert peer.servoj_count == before  # nothing reached the controller
        assert np.abs(arm.state().q - q0).max() < 1e-6
    finally:
        arm.disconnect()


@pytest.mark.parametrize("fault", ["corrupt", "disconnect"])
def test_fault_raises_within_a_period_and_stops_commanding(peer, fault):
    arm = make_arm("xarm:127.0.0.1", stale_periods=STALE_PERIODS)
    arm.connect()
    try:
        q0, _, _ = stream(arm, 0.3, amplitude=0.05)
        t_fault = time.time()
        peer.inject(fault)
        raised_at, message, k = None, "", 0
        while time.time() < t_fault + 3.0:
            target = q0.copy()
            target[0] += 0.05 * np.sin(2 * np.pi * 0.5 * (0.3 + k / RATE_HZ))
            k += 1
            try:
                arm.command(target)
            except ArmError as e:
                raised_at, message = time.time(), str(e)
                break
            time.sleep(1.0 / RATE_HZ)
        assert raised_at is not None, f"no ArmError within 3 s of {fault}"
        assert message.startswith("xarm:127.0.0.1:") and "stopped commanding" in message
        bound = 1.0 / RATE_HZ + SCHED_MARGIN_S  # seen at the next report frame or servo command
        assert arm.fault_time - t_fault <= bound, (fault, arm.fault_time - t_fault, bound)
        sent, received = arm.commands_sent, peer.servoj_count
        time.sleep(0.2)
        assert arm.commands_sent == sent and peer.servoj_count == received  # nothing after the fault
        with pytest.raises(ArmError):
            arm.state()
    finally:
        arm.disconnect()


def test_silent_controller_latches_after_three_report_periods(peer):
    """The controller stops reporting and answering without closing anything: the fault is latched from the
    report stream (one frame per controller tick) missing 3 periods (the default), after which no state is
    returned and no command accepted; disconnect still returns within 1 s. The wall-clock detection time is
    measured in bench/bench_arms.py: the peer shares this process, and a stall of its stream past 12 ms on
    a loaded machine is, rightly, a fault for the backend, so such an attempt (a fault before the injection)
    is repeated, at most 5 times."""
    arm = None
    for _attempt in range(5):
        arm = make_arm("xarm:127.0.0.1")
        assert arm.config.stale_periods == 3
        arm.connect()
        try:
            q0 = arm.state().q.copy()
            for k in range(10):
                arm.command(q0 + np.eye(7)[0] * 0.001 * k)
                time.sleep(1.0 / RATE_HZ)
        except ArmError as e:
            assert "controller silent" in str(e), str(e)
            arm.disconnect()
            continue
        reports_before = arm.reports
        t_inject = time.time()
        peer.inject("silence")
        break
    else:
        pytest.fail("the peer never reported for 40 ms without stalling past 3 periods")
    try:
        deadline = time.time() + 2.0
        while arm.fault_time is None and time.time() < deadline:
            time.sleep(0.001)
        assert arm.fault_time is not None and arm.fault_time >= t_inject
        message = arm._fault
        m = re.search(
            r"controller silent.* no report frame after #(\d+) for ([0-9.]+) control periods", message
        )
        assert m, message
        assert int(m.group(1)) >= reports_before and float(m.group(2)) >= 3.0
        print(f"silence latched {(arm.fault_time - t_inject) * 1e3:.1f} ms after the injection: {message}")
        sent, received = arm.commands_sent, peer.servoj_count
        with pytest.raises(ArmError, match="controller silent"):
            arm.state()
        with pytest.raises(ArmError, match="controller silent"):
            arm.command(q0)
        time.sleep(0.1)
        assert arm.commands_sent == sent and peer.servoj_count == received
    finally:
        t0 = time.monotonic()
        arm.disconnect()
        assert time.monotonic() - t0 < 1.0


def test_controller_error_latches_while_no_target_is_sent(peer):
    """A controller error is seen from the polled error code even when the arm is only holding (no commands)."""
    arm = make_arm("xarm:127.0.0.1", stale_periods=STALE_PERIODS)
    arm.connect()
    try:
        q0 = arm.state().q.copy()
        time.sleep(0.1)
        t_error = time.time()
        peer.set_error(31, 0)  # a collision, say
        deadline = time.time() + 2.0
        while arm.fault_time is None and time.time() < deadline:
            time.sleep(0.005)
        assert arm.fault_time is not None
        took = arm.fault_time - t_error
        print(f"controller error latched {took * 1e3:.0f} ms after it was raised")
        assert took <= 1.0 / arm.config.error_poll_hz + SCHED_MARGIN_S
        with pytest.raises(ArmError, match="controller error code 31"):
            arm.command(q0)
        with pytest.raises(ArmError, match="controller error code 31"):
            arm.state()
    finally:
        arm.disconnect()
    peer.set_error(0, 0)
