"""The leader-device interface: what GELLO, a scripted operator and future devices share.

    leader.connect(); r = leader.read(); leader.disconnect()   # r.q in the follower's joint space

A leader reports *follower* joint targets (already mapped and clipped to the follower's limits), the
gripper opening width in meters, and `t`, the capture time on the system clock (the ROS clock), so a
controller can tell a fresh reading from a stale one.

Failure rule (the one every caller relies on): `read()` either returns a complete, plausible reading
or raises `LeaderError` naming the device and, where there is one, the servo. It never returns a
partial or guessed reading. The caller then HOLDS the follower: it sends no new target (a
position-controlled arm keeps its last one), and `mimic.robots.control.FollowController` does exactly this
once its newest reading is older than `stale_after_s`. The follower never jumps because a leader failed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mimic.robots.spec import ArmSpec
from mimic.robots.specs import get_spec


class LeaderError(RuntimeError):
    """A leader could not produce a reading; `servo_id` names the servo at fault (None: the whole device)."""

    def __init__(self, message: str, servo_id: int | None = None) -> None:
        super().__init__(message)
        self.servo_id = servo_id


@dataclass(frozen=True)
class LeaderReading:
    """One leader sample: `q` follower joint targets (rad), `gripper` opening width (m), `t` capture time (s)."""

    t: float
    q: np.ndarray
    gripper: float


class Leader(ABC):
    """A device a person (or a script) moves; `read()` gives follower targets. See the module docstring."""

    follower: str

    @property
    def spec(self) -> ArmSpec:
        return get_spec(self.follower)

    @property
    def joint_names(self) -> tuple[str, ...]:
        """Names published on /leader/joint_states: the follower's joints, then "gripper"."""
        return (*self.spec.joint_names, "gripper")

    @property
    def action_features(self) -> dict[str, tuple[int, ...]]:
        """What a reading provides, known before connecting (LeRobot style)."""
        return {"robot0_joint_pos_target": (self.spec.dof,), "robot0_gripper_width_target": (1,)}

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def read(self) -> LeaderReading:
        """The newest reading, or LeaderError (never a partial reading)."""

    @abstractmethod
    def disconnect(self) -> None: ...

    def __enter__(self) -> Leader:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()


class ScriptedLeader(Leader):
    """A leader driven by a function of time: `trajectory(t_since_connect) -> (q_follower, gripper_width)`.

    For sessions without a device (CI, the demo's scripted operator). Outputs are clipped like GELLO's.
    """

    def __init__(
        self,
        follower: str,
        trajectory: Callable[[float], tuple[np.ndarray, float]],
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.follower = follower
        self.trajectory = trajectory
        self._clock = clock or time.time
        self._t0: float | None = None

    @property
    def is_connected(self) -> bool:
        return self._t0 is not None

    def connect(self) -> None:
        self._t0 = self._clock()

    def read(self) -> LeaderReading:
        if self._t0 is None:
            raise LeaderError(f"scripted {self.follower} leader: read() before connect()")
        t = self._clock()
        q, g = self.trajectory(t - self._t0)
        spec = self.spec
        q = np.clip(np.asarray(q, float), spec.q_min, spec.q_max)
        return LeaderReading(t, q, float(np.clip(g, spec.gripper_min, spec.gripper_max)))

    def disconnect(self) -> None:
        self._t0 = None
