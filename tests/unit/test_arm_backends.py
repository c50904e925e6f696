"""Hardware backends without a robot: factory schemes, specs, clear errors, and the peers' port lock.

Connecting to 127.0.0.99 (nothing listens there) goes through each real SDK and must fail fast with one
line naming the backend and the host, never a traceback from inside the SDK.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from mimic.robots import arm as arm_module
from mimic.robots.arm import Arm, ArmError, CommandRefused, FaultLatch
from mimic.robots.factory import make_arm, parse_uri
from tests.peers import tcp_peer

pytestmark = pytest.mark.timeout(60)

BACKENDS = [("franka", "franka"), ("ur", "ur5e"), ("xarm", "xarm7")]


@pytest.mark.parametrize("scheme, spec_name", BACKENDS)
def test_factory_builds_unconnected_backend(scheme, spec_name):
    arm = make_arm(f"{scheme}:10.0.0.2")
    assert isinstance(arm, Arm) and not arm.is_connected
    assert arm.spec.name == spec_name
    assert arm.observation_features["robot0_joint_pos"] == (arm.spec.dof,)
    with pytest.raises(ArmError, match=rf"^{scheme}:10\.0\.0\.2: not connected"):
        arm.state()
    with pytest.raises(ArmError, match="not connected"):
        arm.command(arm.spec.home)


@pytest.mark.parametrize("scheme", ["franka", "ur", "xarm"])
def test_missing_host_is_a_clear_error(scheme):
    with pytest.raises(ValueError, match=rf"^{scheme}: give the"):
        make_arm(f"{scheme}:")


def test_unknown_scheme_names_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown backend 'kuka'.*franka:<\.\.\.>.*ur:<\.\.\.>.*xarm:<\.\.\.>"
    ):
        parse_uri("kuka:1.2.3.4")


def _loaded_after(code: str) -> set[str]:
    """The mimic.* modules a fresh interpreter has loaded after running `code`."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nimport sys; print(*sorted(m for m in sys.modules if m.startswith('mimic')))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(out.stdout.split())


def test_hardware_arms_and_ik_load_no_simulator():
    """A real arm with IK (the eef mode) must not drag MuJoCo scenes, tasks or the twin in."""
    loaded = _loaded_after(
        "from mimic.robots.factory import make_arm\nfrom mimic.robots.ik import IKSolver\n"
        "[make_arm(f'{s}:10.0.0.2') for s in ('franka', 'ur', 'xarm')]\nIKSolver.for_arm('franka')"
    )
    assert "mimic.robots.ik" in loaded and not any(m.startswith("mimic.sim") for m in loaded), loaded


def test_twin_registers_itself_on_first_use():
    """`twin:` is found by module name the first time a twin URI is made; a bare `twin:` is the Franka twin."""
    loaded = _loaded_after(
        "from mimic.robots.factory import make_arm\narm = make_arm('twin:')\n"
        "assert type(arm).__module__ == 'mimic.sim.twin' and arm.spec.name == 'franka', type(arm)"
    )
    assert "mimic.sim.twin" in loaded


def test_unknown_option_is_rejected():
    with pytest.raises(TypeError, match="rate"):
        make_arm("ur:10.0.0.2", rate=5)


@pytest.mark.parametrize("scheme", ["franka", "ur", "xarm"])
def test_connect_to_nothing_fails_fast_with_one_line(scheme):
    arm = make_arm(f"{scheme}:127.0.0.99")
    t0 = time.monotonic()
    with pytest.raises(ArmError) as info:
        arm.connect()
    assert time.monotonic() - t0 < 10.0
    message = str(info.value)
    assert message.startswith(f"{scheme}:127.0.0.99: cannot connect") and "\n" not in message
    assert not arm.is_connected


def test_guard_refuses_before_anything_is_sent():
    """The refusal happens in the shared CommandGuard, so it needs no connection to prove the limits used."""
    arm = make_arm("xarm:10.0.0.2")
    arm.guard.reset(arm.spec.home, t=0.0)
    bad = arm.spec.home.copy()
    bad[3] = 4.5
    with pytest.raises(CommandRefused, match="joint4 target 4.5000 rad outside"):
        arm.guard.check(bad, t=0.1)
    assert np.allclose(arm.guard._q_ref, arm.spec.home)  # the refused target did not become the reference


def test_port_lock_is_exclusive_and_names_the_holder():
    held = tcp_peer.acquire_port_lock("holder")
    try:
        t0 = time.monotonic()
        with pytest.raises(tcp_peer.PeerError, match=r"still held by pid \d+ \(holder\) after 0 s"):
            tcp_peer.acquire_port_lock("second", wait_s=0.3)
        assert time.monotonic() - t0 >= 0.3
    finally:
        tcp_peer.release_port_lock(held)
    tcp_peer.release_port_lock(tcp_peer.acquire_port_lock("third", wait_s=1.0))  # free again


def test_busy_port_is_a_clear_error():
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    try:
        with pytest.raises(tcp_peer.PeerError, match=rf"xArm peer: port 127\.0\.0\.1:{port} is busy"):
            tcp_peer.bind_fixed("127.0.0.1", port, "xArm peer", retry_s=0.2)
    finally:
        squatter.close()


class _Loops(FaultLatch):
    """The thread handling every streaming backend shares, with one loop that may be stuck inside its 'SDK'."""

    name = "test:arm"

    def __init__(self) -> None:
        self._init_latch()
        self.sdk_returns = threading.Event()

    def _stream(self) -> None:
        while not self._stop.wait(0.001):
            pass

    def _sdk_call(self) -> None:  # stands for ur_rtde's servoJ reconnecting after a lost connection
        self.sdk_returns.wait(10.0)


def test_stop_threads_stops_every_loop_and_names_them_after_the_arm():
    loops = _Loops()
    loops._start_threads(loops._stream, loops._sdk_call)
    assert sorted(th.name for th in loops._threads) == ["test:arm-sdk_call", "test:arm-stream"]
    loops.sdk_returns.set()
    assert loops._stop_threads(timeout_s=2.0)
    assert loops._threads == []


def test_a_loop_stuck_in_the_sdk_is_reported_and_its_sdk_objects_are_kept_alive():
    loops = _Loops()
    loops._start_threads(loops._stream, loops._sdk_call)
    t0 = time.monotonic()
    with pytest.warns(RuntimeWarning, match=r"test:arm: test:arm-sdk_call still inside the SDK"):
        assert not loops._stop_threads(timeout_s=0.2)
    assert time.monotonic() - t0 < 1.0  # bounded: one timeout for all loops together
    sdk = object()
    loops._orphan(sdk, None)
    assert any(o is sdk for o in arm_module._ORPHANED_SDK_OBJECTS)
    assert not any(o is None for o in arm_module._ORPHANED_SDK_OBJECTS)
    loops.sdk_returns.set()


def test_backend_options_ride_in_the_uri():
    arm = make_arm("ur:10.0.0.2?stale_periods=5&gain=500&gripper=true")
    assert arm.config.host == "10.0.0.2" and arm.name == "ur:10.0.0.2"
    assert (arm.config.stale_periods, arm.config.gain, arm.config.gripper) == (5.0, 500.0, True)
    assert make_arm("xarm:10.0.0.3?stale_periods=10").config.stale_periods == 10.0
    with pytest.raises(ValueError, match=r"arm 'ur:10.0.0.2\?stale=5': unknown option 'stale'; options are"):
        make_arm("ur:10.0.0.2?stale=5")
    with pytest.raises(ValueError, match="option stale_periods='x' is not a float"):
        make_arm("xarm:10.0.0.2?stale_periods=x")


def test_realtime_scheduling_applies_to_the_calling_thread_or_says_why_not():
    import os

    from mimic.robots.pacer import enable_realtime

    result: dict = {}

    def loop() -> None:
        result["done"], result["note"] = enable_realtime(what="test loop")
        result["policy"] = os.sched_getscheduler(0)

    interval = sys.getswitchinterval()
    th = threading.Thread(target=loop)
    th.start()
    th.join()
    sys.setswitchinterval(interval)
    assert "\n" not in result["note"] and result["note"].startswith("test loop: ")
    if result["done"]:
        assert result["policy"] == os.SCHED_FIFO and "SCHED_FIFO priority" in result["note"]
    else:
        assert "normal priority" in result["note"]
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the process and its other threads are untouched


def test_a_crashed_sdk_process_becomes_a_message_not_a_dead_parent():
    import os
    import signal

    from mimic.robots.sdk_process import ChildGone, SdkProcess

    exits: list[str] = []
    proc = SdkProcess("mimic.robots.ur_worker", "ur_rtde process", lambda k, p: None, exits.append)
    proc.start()
    os.kill(proc.pid, signal.SIGSEGV)
    deadline = time.monotonic() + 10.0
    while not exits and time.monotonic() < deadline:
        time.sleep(0.01)
    assert exits and exits[0].startswith("died of SIGSEGV")
    with pytest.raises(ChildGone, match="died of SIGSEGV"):
        proc.send(b"T", b"")
    proc.close()
