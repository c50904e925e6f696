"""UR5e backend on ur-rtde, run in a child process: RTDEReceiveInterface for state, servoJ streaming at 500 Hz.

ur_rtde uploads its own control script to the robot (port 30003) and then drives it through RTDE registers;
`servoJ(q, 0, 0, dt, lookahead_time, gain)` writes a target that the script's servo thread tracks. The SDK
lives in a child process (mimic.robots.ur_worker behind mimic.robots.sdk_process): ur_rtde 1.6.5 was seen to
segfault inside its own reconnect path, reconnects from inside `servoJ` for ~2 s when the controller stops
answering (holding the GIL), and `stopScript()` waits without a time limit for the program to end. In the
child none of that can kill the node or block this process: a crash becomes a latched fault naming the
signal, and `disconnect()` kills a child that has not finished within `disconnect_timeout_s` (< 1 s).

The child runs the servo loop (sample, then servoJ of the newest accepted target, every period) and sends
each new controller sample here. Link health comes from the controller's own clock (RTDE `timestamp`):
a watchdog thread here, which takes no lock any SDK call holds, latches a fault once no sample with an
advanced controller clock has arrived for `stale_periods` control periods (3 = 6 ms at 500 Hz); the child
applies the same rule to its own view and stops sending at once. `state()` and `command()` check the same
age themselves, so no state older than that is returned and no command is accepted. A sample that cannot
be real (non-finite, a clock running backwards or jumping, joints far outside their range) is a corrupt
stream, a servoJ that returns false or raises (script stopped, socket closed) a lost connection. After a
fault nothing more is sent and every call raises ArmError.

Gripper: with `gripper=True`, a Robotiq 2F-85 through its URCap's text socket (port 63352: `SET POS n`,
`GET POS`), activated at connect and driven from its own 50 Hz thread in this process; position 0..255
maps linearly onto the spec's width range (open..closed). Without it (the default: not every UR carries a
Robotiq) `command(gripper=...)` is range-checked but not sent, `state().gripper` is 0.0 and
`gripper_supported` is False.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from mimic.robots.arm import Arm, ArmError, ArmState, CommandGuard, FaultLatch
from mimic.robots.backend_options import split_options
from mimic.robots.factory import register
from mimic.robots.sdk_process import ChildGone, SdkProcess
from mimic.robots.specs import get_spec
from mimic.robots.ur_worker import STATE, TARGET

_STATE_VARIABLES = ["timestamp", "actual_q", "actual_qd", "runtime_state", "robot_status_bits"]


@dataclass
class URConfig:
    host: str
    rate_hz: float = 500.0  # servoJ period; UR's RTDE runs at 500 Hz on e-Series
    lookahead_time_s: float = 0.1  # servoj smoothing, [0.03, 0.2]
    gain: float = 300.0  # servoj proportional gain, [100, 2000]
    stale_periods: float = 3.0  # no controller sample with an advanced clock for this many periods = lost
    max_clock_jump_s: float = 1.0  # a controller clock step larger than this = corrupt data
    connect_timeout_s: float = 15.0  # ur_rtde's constructors wait for the controller (script upload, RTDE)
    disconnect_timeout_s: float = 0.8  # then the ur_rtde process is killed (stopScript has no time limit)
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
        host, options = split_options("ur", host, URConfig)  # `ur:<host>?stale_periods=5&...`
        if not host:
            raise ValueError("ur: give the robot's IP, e.g. ur:192.168.1.102")
        self.config = URConfig(host=host, **{**options, **kwargs})
        self.spec = get_spec("ur5e")
        self.name = f"ur:{host}"
        self.gripper_supported = self.config.gripper
        self._gripper: RobotiqSocket | None = None
        self._gripper_target: float | None = None
        self._gripper_width = 0.0
        self.guard = CommandGuard(self.spec)
        self._proc: SdkProcess | None = None
        self._closing = False
        self._state: ArmState | None = None
        self.controller_time = -1.0  # the RTDE timestamp of the newest sample
        self._fresh_mono = 0.0  # when it arrived (monotonic clock)
        self._first_sample = threading.Event()
        self._target: np.ndarray | None = None
        self._init_latch()
        self.commands_sent = 0  # servoJ calls the ur_rtde process has made, as of its newest sample

    @property
    def period(self) -> float:
        return 1.0 / self.config.rate_hz

    @property
    def stale_after_s(self) -> float:
        return self.config.stale_periods * self.period

    @property
    def sdk_pid(self) -> int | None:
        """The ur_rtde child process (tests kill it to stand for a crash)."""
        return self._proc.pid if self._proc is not None else None

    # --- Arm interface ------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._proc is not None:
            return
        cfg = self.config
        self._fault, self.fault_time = None, None
        self._state, self.controller_time, self._closing = None, -1.0, False
        self._first_sample.clear()
        proc = SdkProcess(
            "mimic.robots.ur_worker", f"{self.name} ur_rtde process", self._on_message, self._on_exit
        )
        self._proc = proc
        proc.start()
        request = {
            "host": cfg.host,
            "rate_hz": cfg.rate_hz,
            "variables": _STATE_VARIABLES,
            "stale_periods": cfg.stale_periods,
            "max_clock_jump_s": cfg.max_clock_jump_s,
            "lookahead_time_s": cfg.lookahead_time_s,
            "gain": cfg.gain,
            "q_min": self.spec.q_min.tolist(),
            "q_max": self.spec.q_max.tolist(),
        }
        try:
            ok, reply = proc.request(b"C", json.dumps(request).encode(), timeout_s=cfg.connect_timeout_s)
            if not ok:
                raise ChildGone(reply.decode(errors="replace"))
        except ChildGone as e:
            self._discard_process()
            raise ArmError(f"{self.name}: cannot connect: {e}") from None
        if cfg.gripper:
            try:
                self._gripper = RobotiqSocket(cfg.host, cfg.gripper_port)
                self._gripper.activate(cfg.gripper_speed, cfg.gripper_force)
                self._gripper_width = self._width(self._gripper.get("POS"))
            except ArmError as e:
                self.disconnect()
                raise ArmError(f"{self.name}: {e}") from None
        if not self._first_sample.wait(1.0) and self._fault is None:
            self._fault = f"{self.name}: no controller state within 1 s of connecting"
        if self._fault is not None:
            message = self._fault
            self.disconnect()
            raise ArmError(message)
        with self._lock:
            self._fresh_mono = time.monotonic()  # the watchdog counts from now
            st = self._state
            self._state = ArmState(t=st.t, q=st.q, dq=st.dq, gripper=self._gripper_width)
        self.guard.reset(self._state.q, self._state.t)
        loops = [self._watchdog] + ([self._gripper_loop] if self._gripper is not None else [])
        self._start_threads(*loops)

    def disconnect(self) -> None:
        """Stop the robot's program and release everything, within `disconnect_timeout_s` whatever the
        controller does: a ur_rtde process that has not finished by then is killed."""
        deadline = time.monotonic() + self.config.disconnect_timeout_s
        self._closing = True
        self._stop_threads(timeout_s=0.2)  # the watchdog exits at once; the gripper loop within its socket op
        gripper, self._gripper = self._gripper, None
        if gripper is not None:
            gripper.close()
        proc = self._proc
        if proc is None:
            return
        try:
            proc.request(b"X", timeout_s=max(0.05, deadline - time.monotonic()))
        except ChildGone:
            pass  # stuck in stopScript or in a reconnect, or already dead: killed below
        proc.close(timeout_s=max(0.0, deadline - time.monotonic()))
        self._proc = None

    def state(self) -> ArmState:
        self._require()
        self._check_fresh()
        with self._lock:
            self._raise_if_fault()
            return self._state

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        self._require()
        self._check_fresh()
        q = self.guard.check(q_target, gripper)
        failure = None
        with self._lock:
            self._raise_if_fault()
            try:
                self._proc.send(b"T", TARGET.pack(*q))  # non-blocking: a stuck child fails it at once
            except ChildGone as e:
                failure = str(e)
            else:
                self._target = q
                if gripper is not None:
                    self._gripper_target = float(gripper)
        if failure is not None:
            self._latch_now(f"{self.name}: {failure}; stopped commanding")
            self._raise_if_fault()

    def stop(self) -> None:
        """Stop streaming and let the robot decelerate to a hold (servoStop)."""
        if self._proc is None:
            return
        with self._lock:
            self._target = None
            faulted = self._fault is not None
            q = self._state.q if self._state is not None else None
        if not faulted:
            try:
                ok, reply = self._proc.request(b"P", timeout_s=0.5)
                if not ok:
                    self._latch_now(f"{self.name}: servoStop failed: {reply.decode(errors='replace')}")
            except ChildGone as e:
                self._latch_now(f"{self.name}: servoStop: {e}")
        if q is not None:
            self.guard.reset(q)

    # --- internals -----------------------------------------------------------------------------------
    def _sdk_open(self) -> bool:
        return self._proc is not None

    def _drop_target(self) -> None:
        self._target = None

    def _discard_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self._closing = True
            proc.kill()
            proc.close(timeout_s=0.5)

    def _latch_now(self, message: str) -> None:
        """Latch without waiting for anything, then tell the ur_rtde process to send nothing more."""
        super()._latch_now(message)
        proc = self._proc
        if proc is not None:
            try:
                proc.send(b"H")
            except ChildGone:
                pass  # gone or stuck: it cannot send either, and disconnect() kills it

    def _on_message(self, kind: bytes, payload: bytes) -> None:
        """From the ur_rtde process (its reader thread): a new controller sample, or the child's fault."""
        if kind == b"S":
            values = STATE.unpack(payload)
            t_controller, q, dq, calls = values[0], values[1:7], values[7:13], values[13]
            now = time.time()
            with self._lock:
                if self._fault is not None or t_controller <= self.controller_time:
                    return
                self.controller_time, self._fresh_mono = t_controller, time.monotonic()
                self._state = ArmState(t=now, q=np.array(q), dq=np.array(dq), gripper=self._gripper_width)
                self.commands_sent = calls
            self._first_sample.set()
        elif kind == b"F":
            self._latch_now(f"{self.name}: {payload.decode(errors='replace')}; stopped commanding")

    def _on_exit(self, message: str) -> None:
        if not self._closing:
            self._latch_now(f"{self.name}: the ur_rtde process {message}; stopped commanding")
        self._first_sample.set()

    def _check_fresh(self) -> None:
        """Latch if the newest controller sample is older than `stale_periods` periods and nothing newer is
        waiting in the pipe (a sample our reader thread has not had the CPU to take is not the
        controller's silence)."""
        with self._lock:
            if self._fault is not None or self._state is None:
                return
            age = time.monotonic() - self._fresh_mono
            t_last = self.controller_time
        if age > self.stale_after_s and not (self._proc is not None and self._proc.pending()):
            self._latch_now(
                f"{self.name}: controller silent or connection lost: its clock stuck at t={t_last:.4f} s "
                f"for {age / self.period:.1f} control periods ({age * 1e3:.1f} ms); stopped commanding"
            )

    def _watchdog(self) -> None:
        """Wake when the newest sample turns stale; take no lock an SDK call can hold (there is none here)."""
        while not self._stop.is_set():
            with self._lock:
                wait = self._fresh_mono + self.stale_after_s - time.monotonic()
            if wait > 0:
                if self._stop.wait(wait + 1e-4):
                    return
                continue
            self._check_fresh()
            if self._fault is not None:
                return
            self._stop.wait(self.period / 4)  # a sample was waiting in the pipe: give the reader the CPU

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
                if self._fault is not None:
                    return
            try:
                if target is not None and (position := self._position(target)) != sent:
                    self._gripper.set(POS=position)
                    sent = position
                self._gripper_width = self._width(self._gripper.get("POS"))
            except ArmError as e:
                self._latch_now(f"{self.name}: {e}; stopped commanding")
                return


register("ur", URArm)  # `ur:<host>` URIs (mimic.robots.factory)
