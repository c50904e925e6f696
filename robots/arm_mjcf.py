"""The arm's MJCF body tree, generated from its ArmSpec: the kinematic model IK solves on.

It lives with the specs rather than with the simulator because IK on a real arm needs the same TCP frame the
twins record (`robot0_eef_*`: the gripper's grasp point, not the flange), and must get it without loading
`mimic.sim`. The twin's scene (`mimic.sim.mjcf`) places this exact tree on its table, so a pose solved here
is a pose on the twin and, the tree being the spec's DH table, on the hardware.

Each DH row becomes one body whose fixed placement is post_{i-1} @ pre_i (see mimic.robots.kinematics), a hinge
about its local z, a capsule to the next joint origin and an approximate mass; the flange site sits where
forward_kinematics puts the flange. A parallel-jaw gripper (palm, two slide fingers, the "tcp" site and the
"wrist" camera) hangs off the flange.

Arm and gripper geoms collide with the scene (table, task objects) but not with each other: the capsules of
neighbouring links overlap by construction, and MuJoCo only exempts parent/child pairs, so without this the
constraint solver fought the position servos with kilonewtons of phantom self-contact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import mujoco
import numpy as np

from mimic.robots.kinematics import joint_split, trans
from mimic.robots.spec import ArmSpec

FINGER_Z = 0.06  # m from the flange to where the finger pads start
TCP_Z = 0.10  # m from the flange to the grasp point, 1 cm above the pad tips
BASE_YAW = {"ur5e": math.pi}  # UR's base frame faces -x at home; turn it so every arm works toward +x
ARM_COLLISION = 'contype="2" conaffinity="1"'  # collides with contype-1 scene geoms, never with itself
COMPILER = '<compiler angle="radian" autolimits="true"/>'  # how every generated model reads its numbers
# Geom group MuJoCo's default render options skip: the collision geoms go there when visual meshes stand in.
HIDDEN_GROUP = 3


def _hide(visuals: Mapping[str, str] | None) -> str:
    """The group attribute of a collision geom: hidden from renders when visual geoms are supplied."""
    return f' group="{HIDDEN_GROUP}"' if visuals is not None else ""


def pose_attr(t: np.ndarray) -> str:
    """`pos=... quat=...` attributes placing a body or site at the 4x4 pose `t` (12 significant digits, so
    the DH chain compiles to the spec's forward kinematics within 1e-9)."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(t[:3, :3]).reshape(-1))
    p = t[:3, 3]
    return (
        f'pos="{p[0]:.12g} {p[1]:.12g} {p[2]:.12g}" '
        f'quat="{quat[0]:.12g} {quat[1]:.12g} {quat[2]:.12g} {quat[3]:.12g}"'
    )


def gripper_xml(spec: ArmSpec, visuals: Mapping[str, str] | None = None) -> str:
    """The hand body (palm, fingers, "tcp" site, "wrist" camera) at its parent's origin; the handheld twin
    mounts the same hand on a free body so its demonstrations look like the arms'. `visuals` (see arm_xml)
    adds visual-only geoms to "hand", "finger_left" and "finger_right"."""
    half = spec.gripper_max / 2
    vis = visuals or {}
    pad = (
        'type="box" size="0.008 0.006 0.025" friction="1.5 0.02 0.001" condim="4" rgba="0.2 0.2 0.2 1" '
        f'mass="0.05" {ARM_COLLISION}{_hide(visuals)}'
    )
    return f"""
<body name="hand" {pose_attr(trans(0, 0, 0))}>
  <geom name="palm" type="box" size="0.02 {half + 0.02:.4f} 0.025" pos="0 0 0.03" rgba="0.9 0.9 0.9 1" mass="0.4"
        {ARM_COLLISION}{_hide(visuals)}/>{vis.get("hand", "")}
  <site name="tcp" pos="0 0 {TCP_Z}" size="0.005" rgba="1 0 0 0.5"/>
  <camera name="wrist" pos="0.07 0 0.0" xyaxes="0 1 0 0.954 0 0.3" fovy="75"/>
  <body name="finger_left" pos="0 0.006 {FINGER_Z + 0.025}">
    <joint name="finger_left" type="slide" axis="0 1 0" range="0 {half}" damping="5" armature="0.01"/>
    <geom name="pad_left" {pad}/>{vis.get("finger_left", "")}
  </body>
  <body name="finger_right" pos="0 -0.006 {FINGER_Z + 0.025}">
    <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {half}" damping="5" armature="0.01"/>
    <geom name="pad_right" {pad}/>{vis.get("finger_right", "")}
  </body>
</body>"""


def arm_xml(spec: ArmSpec, visuals: Mapping[str, str] | None = None) -> str:
    """The <body> tree of the arm, base at the origin of its parent, flange site named "flange".

    `visuals` maps body names ("link1".., "hand", "finger_left", "finger_right") to visual-only geom XML that
    is placed inside those bodies (mimic.sim.visuals builds it: no contact, no mass); given it, the
    collision geoms move to HIDDEN_GROUP so renders show the visual geoms instead. None: today's capsules.
    """
    vis = visuals or {}
    splits = [joint_split(row, spec.dh_convention) for row in spec.dh]
    n = spec.dof
    placements = [splits[0][0]] + [splits[i - 1][1] @ splits[i][0] for i in range(1, n)]
    flange = splits[-1][1] @ trans(0, 0, spec.flange_offset)
    links = []
    for i in range(n):
        nxt = placements[i + 1] if i + 1 < n else flange
        end = nxt[:3, 3]
        mass = max(0.6, 3.0 * (1 - i / n))
        if np.linalg.norm(end) > 1e-6:
            geom = (
                f'<geom type="capsule" fromto="0 0 0 {end[0]:.12g} {end[1]:.12g} {end[2]:.12g}" size="0.045" '
                f'mass="{mass:.3f}" {ARM_COLLISION}{_hide(visuals)}/>'
            )
        else:
            geom = f'<geom type="sphere" size="0.05" mass="{mass:.3f}" {ARM_COLLISION}{_hide(visuals)}/>'
        geom += vis.get(f"link{i + 1}", "")
        lo, hi = spec.q_min[i], spec.q_max[i]
        links.append(
            f'<body name="link{i + 1}" {pose_attr(placements[i])} gravcomp="1">'
            f'<joint name="{spec.joint_names[i]}" axis="0 0 1" range="{lo:.6f} {hi:.6f}" armature="0.1"/>{geom}'
        )
    tail = (
        f'<site name="flange" {pose_attr(flange)} size="0.01"/>'
        f'<body name="flange_body" {pose_attr(flange)} gravcomp="1">' + gripper_xml(spec, visuals) + "</body>"
    )
    return "".join(links) + tail + "</body>" * n


def base_xml(spec: ArmSpec, visuals: Mapping[str, str] | None = None) -> str:
    """The "base" body at the world origin, turned by BASE_YAW, carrying the arm: world = the arm's base
    frame as IK and the twins report poses in it. `visuals`: see arm_xml ("base" included)."""
    yaw = BASE_YAW.get(spec.name, 0.0)
    vis = visuals or {}
    return f"""<body name="base" pos="0 0 0" euler="0 0 {yaw}">
    <geom type="cylinder" size="0.07 0.01" pos="0 0 0.01" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"{_hide(visuals)}/>
    {vis.get("base", "")}{arm_xml(spec, visuals)}
  </body>"""


def arm_model_xml(spec: ArmSpec) -> str:
    """The bare arm and gripper on an empty world: what kinematics needs, nothing a scene adds."""
    return f'<mujoco model="{spec.name}_arm">{COMPILER}<worldbody>{base_xml(spec)}</worldbody></mujoco>'


def build_arm_model(spec: ArmSpec) -> mujoco.MjModel:
    """Compile `arm_model_xml`; a failure names the arm (the XML is generated, so it is a bug here)."""
    try:
        return mujoco.MjModel.from_xml_string(arm_model_xml(spec))
    except ValueError as e:
        raise RuntimeError(f"{spec.name}: generated arm MJCF failed to compile: {e}") from None
