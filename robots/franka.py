"""Franka (Panda / FR3) backend on franky-control: joint-velocity streaming toward the commanded targets.

franky runs libfranka's 1 kHz loop in its own C++ thread. Every `rate_hz` our streaming thread turns the
newest accepted target into a joint velocity, `dq = dq_ff + kp * (q_target - q)` (feed-forward from the
last two targets, clipped to `velocity_scale * dq_max`), and hands it to franky as an asynchronous
`JointVelocityMotion` lasting `hold_periods` periods, so the arm brakes to a stop by itself if the stream
ever ends. (Replacing asynchronous `JointMotion`s at 100 Hz was tried first: on franky-sim the arm then
barely moved while targets kept arriving, 0.14 rad RMS error on a 0.2 rad sine, and overshot a repeated
target; velocity streaming tracks the same sine at ~0.05 rad RMS, most of it the simulator's lag.)

A watchdog thread notices when the robot's own clock (`RobotState.time`) stops advancing, because
libfranka itself only gives up on a silent robot after about 1 s and blocks state reads meanwhile. After
a fault nothing more is sent and every call raises ArmError.

Connecting gives up within `connect_timeout_s` (4 s) with the address and the likely cause, where libfranka
alone waits about a minute on an address that does not answer: a TCP probe of the FCI port (1337) first
tells "nothing answers" (wrong address, robot off, another network) from "refused" (FCI not activated),
then libfranka's handshake runs on a helper thread (franky releases the GIL) that is abandoned, not
waited for, if it does not finish in time (an address that accepts TCP but is not a Franka's FCI).

Works against a real robot or `franky-sim -s mujoco` (tests/peers/franky_sim.py). The gripper (Franka
Hand) is driven with `Gripper.move_async` when the width target changes by more than `gripper_deadband_m`.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mimic.robots.arm import Arm, ArmError, ArmState, CommandGuard, FaultLatch
from mimic.robots.factory import register
from mimic.robots.specs import get_spec


@dataclass
class FrankaConfig:
    host: str
    rate_hz: float = 100.0  # how often a new velocity is handed to franky (its own loop runs at 1 kHz)
    kp: float = 10.0  # 1/s: position error -> velocity gain
    velocity_scale: float = 0.8  # fraction of the spec's dq_max the stream may ask for
    hold_periods: int = 3  # each velocity motion lasts this many periods, then franky brakes to a stop
    dynamics_factor: float = 0.5  # franky's relative velocity/acceleration/jerk scaling
    stale_after_s: float = 0.1  # robot clock frozen this long = connection lost
    gripper: bool = True
    gripper_speed_mps: float = 0.05
    gripper_deadband_m: float = 0.001
    gripper_read_every: int = 5  # read the hand's width every N streaming ticks (one UDP read, ~1 ms)
    connect_timeout_s: float = 4.0  # a wrong address errors within this (under 5 s), naming the likely cause


FCI_PORT = 1337  # libfranka's command port (the hand's is 1338)


def probe_fci(name: str, host: str, timeout_s: float) -> None:
    """ArmError naming the address and the likely cause unless a TCP connection to the FCI port opens."""
    where = f"{host}:{FCI_PORT}"
    try:
        with socket.create_connection((host, FCI_PORT), timeout=timeout_s):
            return
    except TimeoutError:
        cause = (
            f"no answer within {timeout_s:.1f} s: wrong address, robot switched off, or not on this "
            "network (the FCI cable goes to the control box, not the arm base)"
        )
    except ConnectionRefusedError:
        cause = "connection refused: the address answers but FCI is not running (activate FCI in Desk)"
    except OSError as e:  # unreachable network or host, bad name
        cause = f"{e.strerror or e}: check the address and this machine's network settings"
    raise ArmError(f"{name}: cannot connect to {where}: {cause}")


class FrankaArm(FaultLatch, Arm):
    """`franka:<host>`: a Franka arm (or franky-sim) behind the Arm interface."""

    def __init__(self, host: str, **kwargs: Any):
        if not host:
            raise ValueError("franka: give the robot's FCI host, e.g. franka:172.16.0.2")
        self.config = FrankaConfig(host=host, **kwargs)
        self.spec = get_spec("franka")
        self.name = f"franka:{host}"
        self.guard = CommandGuard(self.spec)
        self._robot: Any = None
        self._gripper: Any = None
        self._state: ArmState | None = None
        self._target: np.ndarray | None = None
        self._target_prev: tuple[float, np.ndarray] | None = None
        self._target_t = 0.0
        self._gripper_target: float | None = None
        self._gripper_sent: float | None = None
        self._robot_time_ms = -1
        self._fresh_wall = 0.0
        self._init_latch()
        self.commands_sent = 0

    # --- Arm interface ------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._robot is not None:
            return
        import franky  # lazy: the hw extra is optional

        cfg = self.config
        deadline = time.monotonic() + cfg.connect_timeout_s
        probe_fci(self.name, cfg.host, cfg.connect_timeout_s)
        made: dict[str, Any] = {}

        def handshake() -> None:  # libfranka's connect; runs on a thread that may be abandoned
            try:
                robot = franky.Robot(cfg.host, realtime_config=franky.RealtimeConfig.Ignore)
                robot.relative_dynamics_factor = cfg.dynamics_factor
                if robot.has_errors:
                    robot.recover_from_errors()
                made["gripper"] = franky.Gripper(cfg.host) if cfg.gripper else None
                made["robot"] = robot
            except Exception as e:  # franky raises NetworkException/IncompatibleVersionException/RuntimeError
                made["error"] = e

        th = threading.Thread(target=handshake, name=f"{self.name}-connect", daemon=True)
        th.start()
        th.join(timeout=max(0.0, deadline - time.monotonic()))
        if th.is_alive():
            raise ArmError(
                f"{self.name}: {cfg.host}:{FCI_PORT} accepted a connection but libfranka's handshake did not "
                f"finish within {cfg.connect_timeout_s:.1f} s: not a Franka's FCI, or FCI busy with another client"
            )
        if "error" in made:
            raise ArmError(f"{self.name}: cannot connect to {cfg.host}: {made['error']}") from None
        robot, gripper = made["robot"], made["gripper"]
        self._robot, self._gripper = robot, gripper
        self._fault, self.fault_time = None, None
        self._state, self._robot_time_ms = None, -1
        self._read_state(read_gripper=True)
        self.guard.reset(self._state.q, self._state.t)
        self._start_threads(self._stream, self._watchdog)

    def disconnect(self) -> None:
        if not self._stop_threads():  # a loop is still inside franky: its objects must not go under it
            self._orphan(self._robot, self._gripper)
        self._robot = self._gripper = None  # franky closes the connection when the objects go

    def state(self) -> ArmState:
        self._require()
        with self._lock:
            return self._state

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        self._require()
        q = self.guard.check(q_target, gripper)
        now = time.time()
        with self._lock:
            self._raise_if_fault()
            if self._target is not None:
                self._target_prev = (self._target_t, self._target)
            self._target, self._target_t = q, now
            if gripper is not None:
                self._gripper_target = float(gripper)

    def stop(self) -> None:
        if self._robot is None:
            return
        with self._send_lock:  # no velocity motion toward the old target can follow the stop
            with self._lock:
                self._target, self._target_prev, self._gripper_target = None, None, None
                faulted = self._fault is not None
            if not faulted:
                try:
                    self._robot.stop()  # decelerates the running motion and holds
                except Exception as e:
                    self._latch(f"{self.name}: stop failed: {e}")
        if not faulted:
            self.guard.reset(self._state.q)

    # --- internals -----------------------------------------------------------------------------------
    def _sdk_open(self) -> bool:
        return self._robot is not None

    def _drop_target(self) -> None:
        self._target, self._target_prev = None, None

    def _read_state(self, read_gripper: bool) -> None:
        """One state sample; blocks up to libfranka's timeout when no motion runs and the robot is silent."""
        rs = self._robot.state
        now = time.time()
        width = self._gripper.width if (read_gripper and self._gripper is not None) else None
        robot_ms = int(rs.time.to_msec())
        with self._lock:
            prev = self._state
            if robot_ms != self._robot_time_ms:  # a new sample: stamp it with its arrival on the system clock
                self._robot_time_ms, self._fresh_wall = robot_ms, now
                g = width if width is not None else (prev.gripper if prev else 0.0)
                self._state = ArmState(
                    t=now, q=np.array(rs.q, dtype=float), dq=np.array(rs.dq, dtype=float), gripper=float(g)
                )
            elif width is not None and prev is not None:  # same arm sample, newer hand reading
                self._state = ArmState(t=prev.t, q=prev.q, dq=prev.dq, gripper=float(width))

    def _velocity(self, q: np.ndarray, now: float) -> np.ndarray | None:
        """The streamed joint velocity for measured `q`, or None when there is no target to track."""
        cfg = self.config
        with self._lock:
            target, t_target, prev = self._target, self._target_t, self._target_prev
        if target is None:
            return None
        feed_forward = np.zeros_like(target)
        if prev is not None and now - t_target < 0.1 and t_target > prev[0]:
            feed_forward = (target - prev[1]) / (t_target - prev[0])
        limit = cfg.velocity_scale * self.spec.dq_max
        return np.clip(feed_forward + cfg.kp * (target - q), -limit, limit)

    def _stream(self) -> None:
        import franky

        cfg = self.config
        period = 1.0 / cfg.rate_hz
        hold = franky.Duration(max(1, int(round(cfg.hold_periods * period * 1e3))))
        next_tick = time.perf_counter()
        tick = 0
        while not self._stop.is_set():
            try:
                self._read_state(read_gripper=tick % cfg.gripper_read_every == 0)
                with self._send_lock:
                    with self._lock:
                        if self._fault is not None:
                            return
                        q, g = self._state.q, self._gripper_target
                    velocity = self._velocity(q, time.time())
                    if velocity is not None:
                        self._robot.move(
                            franky.JointVelocityMotion(velocity.tolist(), hold), asynchronous=True
                        )
                        self.commands_sent += 1
                    if (
                        g is not None
                        and self._gripper is not None
                        and (
                            self._gripper_sent is None or abs(g - self._gripper_sent) > cfg.gripper_deadband_m
                        )
                    ):
                        self._gripper.move_async(g, cfg.gripper_speed_mps)
                        self._gripper_sent = g
            except Exception as e:  # ControlException (reflex), NetworkException, InvalidOperationException
                self._latch(f"{self.name}: {type(e).__name__}: {e}; stopped commanding")
                return
            tick += 1
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.perf_counter()  # fell behind: do not burst

    def _watchdog(self) -> None:
        period = 1.0 / self.config.rate_hz
        while not self._stop.wait(period):
            with self._lock:
                age = time.time() - self._fresh_wall
            if age > self.config.stale_after_s:
                self._latch_now(
                    f"{self.name}: no robot state for {age * 1e3:.0f} ms (connection lost or robot "
                    f"silent); stopped commanding"
                )
                return


register("franka", FrankaArm)  # `franka:<host>` URIs (mimic.robots.factory)
