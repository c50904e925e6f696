"""UR5e backend on ur-rtde: RTDEReceiveInterface for state, RTDEControlInterface servoJ streaming at 500 Hz.

ur_rtde uploads its own control script to the robot (port 30003) and then drives it through RTDE registers;
`servoJ(q, 0, 0, dt, lookahead_time, gain)` writes a target that the script's servo thread tracks. Our
streaming thread re-sends the newest accepted target every control period (servoj wants a fresh target
each `dt`) and samples the receive interface. ur_rtde itself notices a silent controller only after
about 2.5 s, so a watchdog thread latches a fault when the controller's own clock (RTDE `timestamp`)
has not advanced for `stale_after_s`. A sample that cannot be real (non-finite, a clock running backwards
or jumping, joints far outside their range) is treated as a corrupt stream, and a servoJ that returns false
or raises (script stopped, socket closed) as a lost connection. After a fault nothing more is sent and
every call raises ArmError.

ur_rtde's constructors and calls hold the GIL; they are short except the constructors, which wait for
the controller (bounded by ur_rtde's own timeouts), and a send that finds the socket closed: ur_rtde 1.6.5's
sendCommand then disconnects and reconnects (dashboard, script and RTDE sockets, re-uploading its script)
from inside that servoJ before it returns or raises. While that runs, ur_rtde's own receive thread still
reads the socket being closed; the one segfault seen in our tests (the peer's `disconnect` fault, once,
under full CPU load; 27 runs of it alone pass) was inside that path, out of our reach. `disconnect()` never
closes the SDK under one of our loops that is still inside it (FaultLatch._stop_threads).

Gripper: with `gripper=True`, a Robotiq 2F-85 through its URCap's text socket (port 63352: `SET POS n`,
`GET POS`), activated at connect and driven from its own 50 Hz thread; position 0..255 maps linearly onto
the spec's width range (open..closed). Without it (the default: not every UR carries a Robotiq)
`command(gripper=...)` is range-checked but not sent, `state().gripper` is 0.0 and `gripper_supported`
is False.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mimic.robots.arm import Arm, ArmError, ArmState, CommandGuard, FaultLatch
from mimic.robots.factory import register
from mimic.robots.specs import get_spec

_STATE_VARIABLES = ["timestamp", "actual_q", "actual_qd", "runtime_state", "robot_status_bits"]


@dataclass
class URConfig:
    host: str
    rate_hz: float = 500.0  # servoJ period; UR's RTDE runs at 500 Hz on e-Series
    lookahead_time_s: float = 0.1  # servoj smoothing, [0.03, 0.2]
    gain: float = 300.0  # servoj proportional gain, [100, 2000]
    stale_after_s: float = 0.1  # controller clock frozen this long = connection lost
    max_clock_jump_s: float = 1.0  # a controller clock step larger than this = corrupt data
    gripper: bool = False  # a Robotiq 2F-85 with its URCap socket
    gripper_port: int = 63352
    gripper_rate_hz: float = 50.0
    gripper_speed: int = 255  # Robotiq units 0..255
    gripper_force: int = 100


class RobotiqSocket:
    """The Robotiq URCap's ASCII protocol: `SET VAR n` answers `ack`, `GET VAR` answers `VAR n`."""

    def __init__(self, host: str, port: int, timeout_s: float = 0.5):
        self.where = f"Robotiq gripper at {host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as e:
            raise ArmError(f"{self.where}: {e.strerror or e}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rwb")

    def _ask(self, line: str) -> str:
        try:
            self.file.write(line.encode() + b"\n")
            self.file.flush()
            answer = self.file.readline().decode().strip()
        except OSError as e:
            raise ArmError(f"{self.where}: {line!r}: {e.strerror or e}") from None
        if not answer:
            raise ArmError(f"{self.where}: connection closed during {line!r}")
        return answer

    def set(self, **values: int) -> None:
        line = "SET " + " ".join(f"{k} {int(v)}" for k, v in values.items())
        if (answer := self._ask(line)) != "ack":
            raise ArmError(f"{self.where}: {line!r} answered {answer!r}")

    def get(self, var: str) -> int:
        answer = self._ask(f"GET {var}").split()
        if len(answer) != 2 or answer[0] != var or not answer[1].lstrip("-").isdigit():
            raise ArmError(f"{self.where}: GET {var} answered {' '.join(answer)!r}")
        return int(answer[1])

    def activate(self, speed: int, force: int, timeout_s: float = 5.0) -> None:
        self.set(ACT=1)
        deadline = time.monotonic() + timeout_s
        while self.get("STA") != 3:
            if time.monotonic() > deadline:
                raise ArmError(f"{self.where}: not activated within {timeout_s:.0f} s")
            time.sleep(0.02)
        self.set(GTO=1, SPE=speed, FOR=force)

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass


class URArm(FaultLatch, Arm):
    """`ur:<host>`: a UR5e (or the RTDE protocol peer) behind the Arm interface."""

    def __init__(self, host: str, **kwargs: Any):
        if not host:
            raise ValueError("ur: give the robot's IP, e.g. ur:192.168.1.102")
        self.config = URConfig(host=host, **kwargs)
        self.spec = get_spec("ur5e")
        self.name = f"ur:{host}"
        self.gripper_supported = self.config.gripper
        self._gripper: RobotiqSocket | None = None
        self._gripper_target: float | None = None
        self._gripper_width = 0.0
        self.guard = CommandGuard(self.spec)
        self._recv: Any = None
        self._ctrl: Any = None
        self._state: ArmState | None = None
        self._controller_time = -1.0
        self._fresh_wall = 0.0
        self._target: np.ndarray | None = None
        self._init_latch()
        self.commands_sent = 0

    # --- Arm interface ------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._ctrl is not None:
            return
        import rtde_control  # lazy: the hw extra is optional
        import rtde_receive

        cfg = self.config
        try:
            self._recv = rtde_receive.RTDEReceiveInterface(cfg.host, cfg.rate_hz, _STATE_VARIABLES)
            self._ctrl = rtde_control.RTDEControlInterface(cfg.host, cfg.rate_hz)
        except Exception as e:  # RuntimeError from ur_rtde: refused, timeout, script did not start, ...
            self._recv = self._ctrl = None
            raise ArmError(f"{self.name}: cannot connect: {e}") from None
        if cfg.gripper:
            try:
                self._gripper = RobotiqSocket(cfg.host, cfg.gripper_port)
                self._gripper.activate(cfg.gripper_speed, cfg.gripper_force)
                self._gripper_width = self._width(self._gripper.get("POS"))
            except ArmError as e:
                self.disconnect()
                raise ArmError(f"{self.name}: {e}") from None
        self._fault, self.fault_time = None, None
        self._controller_time, self._state = -1.0, None
        deadline = time.monotonic() + 1.0
        while self._fault is None and (self._state is None or self._controller_time <= 0.0):
            self._sample()  # the first sample that is valid and stamped by the controller
            if time.monotonic() > deadline and self._fault is None:
                self._fault = f"{self.name}: no controller state within 1 s of connecting"
            time.sleep(0.002)
        if self._fault is not None:
            message = self._fault
            self.disconnect()
            raise ArmError(message)
        self.guard.reset(self._state.q, self._state.t)
        loops = [self._stream, self._watchdog] + ([self._gripper_loop] if self._gripper is not None else [])
        self._start_threads(*loops)

    def disconnect(self) -> None:
        stopped = self._stop_threads()
        gripper, ctrl, recv = self._gripper, self._ctrl, self._recv
        self._gripper, self._ctrl, self._recv = None, None, None
        if (
            not stopped
        ):  # a loop is still inside ur_rtde (it reconnects from within servoJ): do not close under it
            self._orphan(gripper, ctrl, recv)
            return
        if gripper is not None:
            gripper.close()
        if ctrl is None:
            return
        try:
            if self._fault is None:
                ctrl.stopScript()  # leave the robot without our program running
            ctrl.disconnect()
            recv.disconnect()
        except Exception:
            pass  # the connection may already be gone; nothing else to release

    def state(self) -> ArmState:
        self._require()
        with self._lock:
            return self._state

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        self._require()
        q = self.guard.check(q_target, gripper)
        with self._lock:
            self._raise_if_fault()
            self._target = q
            if gripper is not None:
                self._gripper_target = float(gripper)

    def stop(self) -> None:
        """Stop streaming and let the robot decelerate to a hold (servoStop)."""
        if self._ctrl is None:
            return
        with self._send_lock:  # no servoJ of the old target can follow the servoStop
            with self._lock:
                self._target = None
                faulted = self._fault is not None
                q = self._state.q if self._state is not None else None
            if not faulted:
                try:
                    self._ctrl.servoStop()
                except Exception as e:
                    self._latch(f"{self.name}: servoStop failed: {e}")
        if q is not None:
            self.guard.reset(q)

    # --- internals -----------------------------------------------------------------------------------
    def _sdk_open(self) -> bool:
        return self._ctrl is not None

    def _drop_target(self) -> None:
        self._target = None

    def _sample(self) -> None:
        """Read the receive interface; validate a new controller sample before anyone can act on it."""
        r = self._recv
        if not (r.isConnected() and self._ctrl.isConnected()):
            self._latch(f"{self.name}: RTDE connection closed by the controller; stopped commanding")
            return
        controller_time = r.getTimestamp()
        if controller_time == self._controller_time:
            return
        now = time.time()
        q, dq = np.array(r.getActualQ(), dtype=float), np.array(r.getActualQd(), dtype=float)
        margin = 0.5
        bad = (
            not np.isfinite(controller_time)
            or not np.all(np.isfinite(q))
            or not np.all(np.isfinite(dq))
            or controller_time < self._controller_time
            or (
                self._controller_time >= 0
                and controller_time - self._controller_time > self.config.max_clock_jump_s
            )
            or np.any(q < self.spec.q_min - margin)
            or np.any(q > self.spec.q_max + margin)
        )
        if bad:
            self._latch(
                f"{self.name}: corrupt state from the controller (t={controller_time:.6g}, "
                f"q={np.array2string(q, precision=3)}); stopped commanding"
            )
            return
        with self._lock:
            self._controller_time, self._fresh_wall = controller_time, now
            self._state = ArmState(t=now, q=q, dq=dq, gripper=self._gripper_width)

    def _stream(self) -> None:
        cfg = self.config
        period = 1.0 / cfg.rate_hz
        next_tick = time.perf_counter()
        while not self._stop.is_set():
            try:
                self._sample()
                with self._send_lock:
                    with self._lock:
                        if self._fault is not None:
                            return
                        target = self._target
                    if target is not None:
                        ok = self._ctrl.servoJ(
                            target.tolist(), 0.0, 0.0, period, cfg.lookahead_time_s, cfg.gain
                        )
                        self.commands_sent += 1
                        if not ok:
                            self._latch(
                                f"{self.name}: servoJ refused (control script not running or connection "
                                f"lost); stopped commanding"
                            )
                            return
            except Exception as e:  # RuntimeError from ur_rtde when the socket is gone
                self._latch(f"{self.name}: {type(e).__name__}: {e}; stopped commanding")
                return
            next_tick += period
            delay = next_tick - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.perf_counter()

    def _width(self, position: int) -> float:
        """Robotiq position (0 open .. 255 closed) -> opening width in meters."""
        lo, hi = self.spec.gripper_min, self.spec.gripper_max
        return hi - (hi - lo) * min(max(position, 0), 255) / 255.0

    def _position(self, width: float) -> int:
        lo, hi = self.spec.gripper_min, self.spec.gripper_max
        return int(round(255.0 * (hi - width) / (hi - lo)))

    def _gripper_loop(self) -> None:
        period = 1.0 / self.config.gripper_rate_hz
        sent: int | None = None
        while not self._stop.wait(period):
            with self._lock:
                target = self._gripper_target
            try:
                with self._send_lock:
                    if self._fault is not None:
                        return
                    if target is not None and (position := self._position(target)) != sent:
                        self._gripper.set(POS=position)
                        sent = position
                self._gripper_width = self._width(self._gripper.get("POS"))
            except ArmError as e:
                self._latch(f"{self.name}: {e}; stopped commanding")
                return

    def _watchdog(self) -> None:
        period = 1.0 / self.config.rate_hz
        while not self._stop.wait(period):
            with self._lock:
                age = time.time() - self._fresh_wall
            if age > self.config.stale_after_s:
                self._latch(
                    f"{self.name}: no controller state for {age * 1e3:.0f} ms (connection lost or "
                    f"controller silent); stopped commanding"
                )
                return


register("ur", URArm)  # `ur:<host>` URIs (mimic.robots.factory)
