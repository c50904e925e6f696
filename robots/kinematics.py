"""Forward kinematics from an ArmSpec's DH table (both conventions), the reference the twin is tested against.

Each joint is written as pre_i * RotZ(q_i) * post_i so the MJCF generator can reuse the same split:
standard DH has pre = I, post = RotZ(offset) TransZ(d) TransX(a) RotX(alpha); modified (Craig) DH has
pre = RotX(alpha) TransX(a) TransZ(d), post = RotZ(offset).
"""

from __future__ import annotations

import numpy as np

from mimic.robots.spec import ArmSpec, DHRow


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0, 0], [0, c, -s, 0], [0, s, c, 0], [0, 0, 0, 1.0]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def trans(x: float, y: float, z: float) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def joint_split(row: DHRow, convention: str) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) fixed transforms around the joint rotation for one DH row."""
    if convention == "standard":
        return np.eye(4), rot_z(row.theta_offset) @ trans(0, 0, row.d) @ trans(row.a, 0, 0) @ rot_x(row.alpha)
    if convention == "modified":
        return rot_x(row.alpha) @ trans(row.a, 0, 0) @ trans(0, 0, row.d), rot_z(row.theta_offset)
    raise ValueError(f"unknown DH convention {convention!r} (expected 'standard' or 'modified')")


def forward_kinematics(spec: ArmSpec, q: np.ndarray) -> np.ndarray:
    """Flange pose (4x4 homogeneous, meters) in the arm's base frame for joint angles `q` (radians)."""
    q = np.asarray(q, dtype=float).reshape(-1)
    if q.shape[0] != spec.dof:
        raise ValueError(f"{spec.name}: q has {q.shape[0]} values, the arm has {spec.dof} joints")
    t = np.eye(4)
    for row, qi in zip(spec.dh, q, strict=True):
        pre, post = joint_split(row, spec.dh_convention)
        t = t @ pre @ rot_z(qi) @ post
    return t @ trans(0, 0, spec.flange_offset)
