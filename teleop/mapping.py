"""Leader -> follower mapping: joint angles of a GELLO leader to joint targets of the follower arm.

A GELLO leader is a scaled kinematic replica of its follower (GELLO builds one per arm: Franka 7 dof,
UR5e 6, xArm7 7), so after per-servo offsets and signs (the calibration file) leader joint i drives
follower joint i. The map is still data (`index`, `scale`, `offset`) so a leader whose joints are
ordered or geared differently is a configuration, not new code. Outputs are clipped to the follower's
limits from `mimic.robots.specs`, the one source of limits.

The gripper trigger gives a closing fraction in [0, 1] (0 released, 1 squeezed); the follower's
gripper width is `gripper_max * (1 - fraction)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mimic.robots.spec import ArmSpec
from mimic.robots.specs import get_spec


@dataclass(frozen=True)
class JointMap:
    """`q_follower[i] = scale[i] * q_leader[index[i]] + offset[i]` (radians)."""

    follower: str
    leader_dof: int
    index: tuple[int, ...]
    scale: tuple[float, ...]
    offset: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.index)
        if len(self.scale) != n or len(self.offset) != n:
            raise ValueError(f"JointMap({self.follower}): index, scale and offset must have the same length")
        if any(s == 0 for s in self.scale):
            raise ValueError(f"JointMap({self.follower}): a zero scale cannot be inverted")
        if any(not 0 <= i < self.leader_dof for i in self.index):
            raise ValueError(
                f"JointMap({self.follower}): index outside the leader's {self.leader_dof} joints"
            )

    @property
    def spec(self) -> ArmSpec:
        return get_spec(self.follower)

    def to_follower(self, q_leader: np.ndarray) -> np.ndarray:
        """Unclipped follower joint targets."""
        q = np.asarray(q_leader, float).reshape(-1)
        if q.shape[0] != self.leader_dof:
            raise ValueError(
                f"{self.follower} map: leader reading has {q.shape[0]} joints, expected {self.leader_dof}"
            )
        return np.asarray(self.scale) * q[list(self.index)] + np.asarray(self.offset)

    def to_leader(self, q_follower: np.ndarray) -> np.ndarray:
        """The leader pose that maps to `q_follower` (joints the map does not use stay 0)."""
        q = np.asarray(q_follower, float).reshape(-1)
        out = np.zeros(self.leader_dof)
        out[list(self.index)] = (q - np.asarray(self.offset)) / np.asarray(self.scale)
        return out


def default_map(follower: str) -> JointMap:
    """The GELLO replica map for `follower` ("franka", "ur5e", "xarm7"): leader joint i -> follower joint i."""
    dof = get_spec(follower).dof
    return JointMap(follower, dof, tuple(range(dof)), (1.0,) * dof, (0.0,) * dof)


def clip_to_limits(q: np.ndarray, spec: ArmSpec, margin: float = 0.0) -> np.ndarray:
    return np.clip(np.asarray(q, float), spec.q_min + margin, spec.q_max - margin)


def trigger_to_width(fraction: float, spec: ArmSpec) -> float:
    """Gripper opening width (m) for a trigger closing fraction, clipped to the gripper's range."""
    f = min(max(float(fraction), 0.0), 1.0)
    return float(np.clip(spec.gripper_max * (1.0 - f), spec.gripper_min, spec.gripper_max))


def width_to_trigger(width: float, spec: ArmSpec) -> float:
    return float(np.clip(1.0 - float(width) / spec.gripper_max, 0.0, 1.0))
