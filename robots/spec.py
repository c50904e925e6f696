"""Arm specifications: the single source of truth for kinematics, limits, rates and gripper range.

Every backend (hardware and twin), the controller, the twin's MJCF generator and the leader mapping
read limits from here, so a target refused by one is refused by all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DHRow:
    """One joint's Denavit-Hartenberg parameters (meters, radians) in the spec's stated convention."""

    a: float
    d: float
    alpha: float
    theta_offset: float = 0.0


@dataclass(frozen=True)
class ArmSpec:
    name: str
    joint_names: tuple[str, ...]
    dh: tuple[DHRow, ...]
    dh_convention: str  # "modified" (Craig, as Franka publishes) or "standard" (as UR and UFactory publish)
    q_min: np.ndarray
    q_max: np.ndarray
    dq_max: np.ndarray
    home: np.ndarray
    control_rate_hz: float
    gripper_min: float
    gripper_max: float
    flange_offset: float  # meters along the last joint's z-axis from the last DH frame to the flange
    source: str  # the manufacturer document the numbers come from
    extra: dict = field(default_factory=dict)

    @property
    def dof(self) -> int:
        return len(self.joint_names)
