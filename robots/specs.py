"""Published kinematic specs of the three supported arms; `get_spec(name)` is the only entry point.

Numbers are copied from the manufacturers' documents named in each spec's `source`, so the twin,
the controller and the hardware backends all refuse the same targets.
"""

from __future__ import annotations

import math

import numpy as np

from mimic.robots.spec import ArmSpec, DHRow

_PI = math.pi


def _franka() -> ArmSpec:
    # Craig (modified) DH as Franka publishes it: each row is (a_{i-1}, d_i, alpha_{i-1}).
    rows = [
        (0.0, 0.333, 0.0),
        (0.0, 0.0, -_PI / 2),
        (0.0, 0.316, _PI / 2),
        (0.0825, 0.0, _PI / 2),
        (-0.0825, 0.384, -_PI / 2),
        (0.0, 0.0, _PI / 2),
        (0.088, 0.0, _PI / 2),
    ]
    return ArmSpec(
        name="franka",
        joint_names=tuple(f"panda_joint{i}" for i in range(1, 8)),
        dh=tuple(DHRow(a=a, d=d, alpha=al) for a, d, al in rows),
        dh_convention="modified",
        q_min=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
        q_max=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
        dq_max=np.array([2.1750, 2.1750, 2.1750, 2.1750, 2.6100, 2.6100, 2.6100]),
        home=np.array([0.0, -_PI / 4, 0.0, -3 * _PI / 4, 0.0, _PI / 2, _PI / 4]),
        control_rate_hz=1000.0,
        gripper_min=0.0,
        gripper_max=0.08,
        flange_offset=0.107,
        source="Franka Control Interface docs, 'Robot and interface specifications' (frankaemika.github.io/docs/"
        "control_parameters.html): DH parameters, joint space limits, 1 kHz control loop",
    )


def _ur5e() -> ArmSpec:
    # Standard DH, rows (a_i, d_i, alpha_i).
    rows = [
        (0.0, 0.1625, _PI / 2),
        (-0.425, 0.0, 0.0),
        (-0.3922, 0.0, 0.0),
        (0.0, 0.1333, _PI / 2),
        (0.0, 0.0997, -_PI / 2),
        (0.0, 0.0996, 0.0),
    ]
    lim = np.array([2 * _PI, 2 * _PI, _PI, 2 * _PI, 2 * _PI, 2 * _PI])
    return ArmSpec(
        name="ur5e",
        joint_names=(
            "shoulder_pan_joint",
            "shoulder_lift_joint",
            "elbow_joint",
            "wrist_1_joint",
            "wrist_2_joint",
            "wrist_3_joint",
        ),
        dh=tuple(DHRow(a=a, d=d, alpha=al) for a, d, al in rows),
        dh_convention="standard",
        q_min=-lim,
        q_max=lim.copy(),
        dq_max=np.full(6, _PI),
        home=np.array([0.0, -_PI / 2, _PI / 2, -_PI / 2, -_PI / 2, 0.0]),
        control_rate_hz=500.0,
        gripper_min=0.0,
        gripper_max=0.085,
        flange_offset=0.0,
        source="Universal Robots, 'DH parameters for calculations of kinematics and dynamics' (UR5e column); "
        "UR5e technical specifications (180 deg/s joints, 500 Hz RTDE); elbow limited to +/-pi as usual practice",
    )


def _xarm7() -> ArmSpec:
    # Standard DH from the UFactory xArm7 kinematic parameters, rows (a_i, d_i, alpha_i).
    rows = [
        (0.0, 0.267, -_PI / 2),
        (0.0, 0.0, _PI / 2),
        (0.0525, 0.293, _PI / 2),
        (0.0775, 0.0, _PI / 2),
        (0.0, 0.3425, _PI / 2),
        (0.076, 0.0, -_PI / 2),
        (0.0, 0.097, 0.0),
    ]
    return ArmSpec(
        name="xarm7",
        joint_names=tuple(f"joint{i}" for i in range(1, 8)),
        dh=tuple(DHRow(a=a, d=d, alpha=al) for a, d, al in rows),
        dh_convention="standard",
        q_min=np.array([-2 * _PI, -2.059, -2 * _PI, -0.19198, -2 * _PI, -1.69297, -2 * _PI]),
        q_max=np.array([2 * _PI, 2.0944, 2 * _PI, 3.927, 2 * _PI, _PI, 2 * _PI]),
        dq_max=np.full(7, _PI),
        home=np.array([0.0, -0.3, 0.0, 0.9, 0.0, 1.2, 0.0]),
        control_rate_hz=250.0,
        gripper_min=0.0,
        gripper_max=0.085,
        flange_offset=0.0,
        source="UFactory xArm User Manual (xArm7 kinematic and DH parameters, joint ranges, 180 deg/s max joint "
        "speed); xArm Python SDK servo mode (set_servo_angle_j) at 250 Hz",
    )


_SPECS = {"franka": _franka, "ur5e": _ur5e, "xarm7": _xarm7}
ARM_NAMES: tuple[str, ...] = tuple(_SPECS)


def get_spec(name: str) -> ArmSpec:
    """Return the spec of `name` ("franka", "ur5e" or "xarm7"); a fresh object so callers cannot mutate ours."""
    try:
        return _SPECS[name]()
    except KeyError:
        raise ValueError(f"unknown arm {name!r}; known: {', '.join(ARM_NAMES)}") from None
