"""The one interface every arm backend implements: hardware (franka, ur, xarm) and the MuJoCo twin.

Small on purpose (GELLO's `Robot` Protocol, LeRobot's device ABC): a controller, a recorder or a
test can drive any arm through these few methods. Units are SI everywhere: radians, rad/s,
meters (gripper opening width), seconds (system time, the ROS clock).
"""

from __future__ import annotations

import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from mimic.robots.spec import ArmSpec


class ArmError(RuntimeError):
    """A backend cannot do what was asked (lost connection, not connected, device fault)."""


class CommandRefused(ValueError):
    """A command was outside the spec's limits; the arm was not moved for it."""


@dataclass(frozen=True)
class ArmState:
    """One measurement of the arm. `t` is the capture time on the system (ROS) clock."""

    t: float
    q: np.ndarray
    dq: np.ndarray
    gripper: float = 0.0


@dataclass
class CommandGuard:
    """Refuses targets outside joint limits or faster than the velocity limits; shared by all backends.

    The reference for the velocity check is the last accepted target (or the measured pose before the
    first command). The step is allowed `dq_max * dt` where `dt` is the time since the last accepted
    command, at least one control period and at most `max_step_time`: a stale reference never licenses
    a jump, since position-controlled arms would execute it at full speed.
    """

    spec: ArmSpec
    max_step_time: float = 0.1
    tolerance: float = 1e-9
    _q_ref: np.ndarray | None = field(default=None, init=False)
    _t_ref: float = field(default=0.0, init=False)

    def reset(self, q_measured: np.ndarray, t: float | None = None) -> None:
        """Take the measured pose as the velocity reference; a non-finite pose or time is refused, since a NaN
        reference would license any next step."""
        q = np.asarray(q_measured, dtype=float).reshape(-1)
        now = time.time() if t is None else float(t)
        if q.shape[0] != self.spec.dof or not np.all(np.isfinite(q)) or not np.isfinite(now):
            raise CommandRefused(
                f"{self.spec.name}: cannot take a non-finite or {q.shape[0]}-joint pose "
                f"(t={now}) as the velocity reference"
            )
        self._q_ref = q.copy()
        self._t_ref = now

    def check(self, q_target: np.ndarray, gripper: float | None = None, t: float | None = None) -> np.ndarray:
        """Return the target as a float array, or raise CommandRefused naming the joint and the limit."""
        spec = self.spec
        q = np.asarray(q_target, dtype=float).reshape(-1)
        if q.shape[0] != spec.dof:
            raise CommandRefused(f"{spec.name}: command has {q.shape[0]} joints, the arm has {spec.dof}")
        if not np.all(np.isfinite(q)):
            raise CommandRefused(f"{spec.name}: command contains NaN or inf")
        low = q < spec.q_min - self.tolerance
        high = q > spec.q_max + self.tolerance
        if low.any() or high.any():
            i = int(np.flatnonzero(low | high)[0])
            raise CommandRefused(
                f"{spec.name}: {spec.joint_names[i]} target {q[i]:.4f} rad outside "
                f"[{spec.q_min[i]:.4f}, {spec.q_max[i]:.4f}]"
            )
        if gripper is not None and not (
            spec.gripper_min - self.tolerance <= gripper <= spec.gripper_max + self.tolerance
        ):
            raise CommandRefused(
                f"{spec.name}: gripper target {gripper:.4f} m outside [{spec.gripper_min}, {spec.gripper_max}]"
            )
        now = time.time() if t is None else float(t)
        if not np.isfinite(now):
            raise CommandRefused(f"{spec.name}: command time {now} is not finite")
        if self._q_ref is not None:
            dt = min(max(now - self._t_ref, 1.0 / spec.control_rate_hz), self.max_step_time)
            speed = np.abs(q - self._q_ref) / dt
            over = speed > spec.dq_max * (1.0 + 1e-6) + self.tolerance / dt
            if over.any():
                i = int(np.flatnonzero(over)[0])
                raise CommandRefused(
                    f"{spec.name}: {spec.joint_names[i]} step {q[i] - self._q_ref[i]:+.4f} rad in {dt * 1e3:.1f} ms "
                    f"= {speed[i]:.2f} rad/s exceeds the {spec.dq_max[i]:.2f} rad/s limit"
                )
        self._q_ref = q.copy()
        self._t_ref = now
        return q


class Arm(ABC):
    """A follower arm. `command` is non-blocking: it sets the target the backend's own loop tracks."""

    spec: ArmSpec

    @property
    def observation_features(self) -> dict[str, tuple[int, ...]]:
        """What `state()` reports, known before connecting (LeRobot style), for datasets and policies."""
        return {
            "robot0_joint_pos": (self.spec.dof,),
            "robot0_joint_vel": (self.spec.dof,),
            "robot0_gripper_width": (1,),
        }

    @property
    def action_features(self) -> dict[str, tuple[int, ...]]:
        return {"robot0_joint_pos_target": (self.spec.dof,), "robot0_gripper_width_target": (1,)}

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def disconnect(self) -> None: ...

    @abstractmethod
    def state(self) -> ArmState: ...

    @abstractmethod
    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        """Set a joint-position target (and gripper width). Raises CommandRefused outside limits."""

    @abstractmethod
    def stop(self) -> None:
        """Stop commanding and hold the current pose."""

    def __enter__(self) -> Arm:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.stop()
        finally:
            self.disconnect()


THREAD_STOP_TIMEOUT_S = 5.0  # a backend loop's longest wait inside its SDK before disconnect gives up on it
_ORPHANED_SDK_OBJECTS: list[
    object
] = []  # FaultLatch._orphan: never destroyed under a thread still using them


class FaultLatch:
    """The first fault of a streaming SDK backend, latched between sends: once visible, nothing more goes out.

    Mixed into the franka, ur and xarm backends, which all stream from their own threads. `_init_latch`
    makes `_lock` (the backend's state), `_send_lock` (held around every send), `_stop` (its threads' exit
    event) and `_threads`; the backend says what "connected" and "no target" mean for it in `_sdk_open` /
    `_drop_target`.
    """

    name: str
    _lock: threading.Lock | threading.RLock
    _send_lock: threading.Lock | threading.RLock
    _stop: threading.Event
    _fault: str | None = None
    fault_time: float | None = None

    def _init_latch(self) -> None:
        """The locks, thread list and empty fault slot every streaming backend starts with."""
        self._lock = threading.Lock()
        self._send_lock = threading.RLock()  # held around every send; a fault is latched only between sends
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._fault = None
        self.fault_time = None  # wall time the fault was latched (tests and logs)

    @property
    def is_connected(self) -> bool:
        return self._sdk_open() and self._fault is None

    def _start_threads(self, *loops: Callable[[], None]) -> None:
        """Run the backend's loops (stream, watchdog, gripper) as daemon threads named after the arm."""
        self._stop.clear()
        self._threads = [
            threading.Thread(target=loop, name=f"{self.name}-{loop.__name__.strip('_')}", daemon=True)
            for loop in loops
        ]
        for th in self._threads:
            th.start()

    def _stop_threads(self, timeout_s: float = THREAD_STOP_TIMEOUT_S) -> bool:
        """Stop the loops; False if one is still running after timeout_s, stuck inside an SDK call.

        That happens: ur_rtde reconnects from inside servoJ when its connection drops, and the SDKs block on
        the network. Closing an SDK's connection under a thread that is inside it can crash the process, so a
        caller that gets False must leave the SDK objects alone; `_orphan` keeps them referenced, so their
        destructors (which disconnect too) do not run under that thread either.
        """
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for th in self._threads:
            th.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = [th.name for th in self._threads if th.is_alive()]
        self._threads = []
        if stuck:
            warnings.warn(
                f"{self.name}: {', '.join(stuck)} still inside the SDK {timeout_s:.0f} s after stop; "
                "its connection is left open rather than closed under it",
                RuntimeWarning,
                stacklevel=3,
            )
        return not stuck

    def _orphan(self, *sdk_objects: object) -> None:
        """Keep SDK objects alive for the rest of the process (see `_stop_threads`)."""
        _ORPHANED_SDK_OBJECTS.extend(o for o in sdk_objects if o is not None)

    def _sdk_open(self) -> bool:
        raise NotImplementedError

    def _drop_target(self) -> None:
        """Forget the pending target (called under `_lock` when a fault latches)."""
        raise NotImplementedError

    def _require(self) -> None:
        if not self._sdk_open():
            raise ArmError(f"{self.name}: not connected; call connect() first")
        with self._lock:
            self._raise_if_fault()

    def _raise_if_fault(self) -> None:
        if self._fault is not None:
            raise ArmError(self._fault)

    def _latch_now(self, message: str) -> None:
        """Record the first fault without waiting for a send in flight, for watchdogs: an SDK call can block
        inside `_send_lock` for as long as its own timeout. Senders check the fault under `_lock` just before
        each send, so at most the one send already under way completes after the fault is visible."""
        with self._lock:
            if self._fault is None:
                self._fault, self.fault_time = message, time.time()
                self._drop_target()
        self._stop.set()

    def _latch(self, message: str) -> None:
        """Record the first fault after any send in flight, so once it is visible nothing more goes out."""
        with self._send_lock:
            with self._lock:
                if self._fault is None:
                    self._fault, self.fault_time = message, time.time()
                    self._drop_target()
        self._stop.set()
