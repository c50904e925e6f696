"""MJCF generated from an ArmSpec, so the twin's kinematics are the spec's DH table and nothing else.

Each DH row becomes one body whose fixed placement is post_{i-1} @ pre_i (see robots.kinematics), a hinge
about its local z, a capsule to the next joint origin and an approximate mass; the flange site sits where
forward_kinematics puts the flange. A parallel-jaw gripper, table, lights and two cameras complete the scene.

Arm and gripper geoms collide with the scene (table, task objects) but not with each other: the capsules of
neighbouring links overlap by construction, and MuJoCo only exempts parent/child pairs, so without this the
constraint solver fought the position servos with kilonewtons of phantom self-contact.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from robots.kinematics import joint_split, trans
from robots.spec import ArmSpec

FINGER_Z = 0.06  # m from the flange to where the finger pads start
TCP_Z = 0.10  # m from the flange to the grasp point, 1 cm above the pad tips
BASE_YAW = {"ur5e": math.pi}  # UR's base frame faces -x at home; turn it so every arm works toward +x
ARM_COLLISION = 'contype="2" conaffinity="1"'  # collides with contype-1 scene geoms, never with itself


def _pose(t: np.ndarray) -> str:
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(t[:3, :3]).reshape(-1))
    p = t[:3, 3]
    return f'pos="{p[0]:.12g} {p[1]:.12g} {p[2]:.12g}" quat="{quat[0]:.12g} {quat[1]:.12g} {quat[2]:.12g} {quat[3]:.12g}"'


def _gripper(spec: ArmSpec) -> str:
    half = spec.gripper_max / 2
    pad = f'type="box" size="0.008 0.006 0.025" friction="1.5 0.02 0.001" condim="4" rgba="0.2 0.2 0.2 1" mass="0.05" ' \
        f'{ARM_COLLISION}'
    return f"""
<body name="hand" {_pose(trans(0, 0, 0))}>
  <geom name="palm" type="box" size="0.02 {half + 0.02:.4f} 0.025" pos="0 0 0.03" rgba="0.9 0.9 0.9 1" mass="0.4"
        {ARM_COLLISION}/>
  <site name="tcp" pos="0 0 {TCP_Z}" size="0.005" rgba="1 0 0 0.5"/>
  <camera name="wrist" pos="0.07 0 0.0" xyaxes="0 1 0 0.954 0 0.3" fovy="75"/>
  <body name="finger_left" pos="0 0.006 {FINGER_Z + 0.025}">
    <joint name="finger_left" type="slide" axis="0 1 0" range="0 {half}" damping="5" armature="0.01"/>
    <geom name="pad_left" {pad}/>
  </body>
  <body name="finger_right" pos="0 -0.006 {FINGER_Z + 0.025}">
    <joint name="finger_right" type="slide" axis="0 -1 0" range="0 {half}" damping="5" armature="0.01"/>
    <geom name="pad_right" {pad}/>
  </body>
</body>"""


def arm_xml(spec: ArmSpec) -> str:
    """The <body> tree of the arm, base at the origin of its parent, flange site named "flange"."""
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
            geom = f'<geom type="capsule" fromto="0 0 0 {end[0]:.12g} {end[1]:.12g} {end[2]:.12g}" size="0.045" mass="{mass:.3f}" ' \
                f'{ARM_COLLISION}/>'
        else:
            geom = f'<geom type="sphere" size="0.05" mass="{mass:.3f}" {ARM_COLLISION}/>'
        lo, hi = spec.q_min[i], spec.q_max[i]
        links.append(
            f'<body name="link{i + 1}" {_pose(placements[i])} gravcomp="1">'
            f'<joint name="{spec.joint_names[i]}" axis="0 0 1" range="{lo:.6f} {hi:.6f}" armature="0.1"/>{geom}'
        )
    tail = f'<site name="flange" {_pose(flange)} size="0.01"/><body name="flange_body" {_pose(flange)} gravcomp="1">' \
        + _gripper(spec) + "</body>"
    return "".join(links) + tail + "</body>" * n


def actuators_xml(spec: ArmSpec) -> str:
    """Position servos tuned like a stiff joint controller (critically damped on the proximal links)."""
    acts = [
        f'<position name="act_{j}" joint="{j}" kp="1500" kv="120" ctrlrange="{lo:.6f} {hi:.6f}" forcerange="-300 300"/>'
        for j, lo, hi in zip(spec.joint_names, spec.q_min, spec.q_max, strict=True)
    ]
    half = spec.gripper_max / 2
    for side in ("left", "right"):
        acts.append(f'<position name="act_finger_{side}" joint="finger_{side}" kp="300" ctrlrange="0 {half}" '
                    f'forcerange="-15 15"/>')
    return "".join(acts)


def scene_xml(spec: ArmSpec, objects: str = "", contacts: str = "") -> str:
    """A complete model: table top at z=0, the arm at the origin, `objects` (task bodies) in the world.

    `contacts` adds <contact> children (pairs, excludes) for the task. The first link never touches the table
    it is bolted to (its capsule starts at the base, inside the table top for UR and xArm, where the contact
    used to brake the base joint).
    """
    yaw = BASE_YAW.get(spec.name, 0.0)
    return f"""<mujoco model="{spec.name}_twin">
<compiler angle="radian" autolimits="true"/>
<option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
<visual><quality shadowsize="0"/><global offwidth="640" offheight="480"/></visual>
<worldbody>
  <light name="key" pos="0.5 -0.5 2" dir="0 0.3 -1" directional="true" castshadow="false" diffuse="0.8 0.8 0.8"/>
  <geom name="table" type="box" pos="0.4 0 -0.02" size="0.7 0.7 0.02" rgba="0.6 0.5 0.4 1"/>
  <camera name="scene" pos="1.25 0 0.75" xyaxes="0 1 0 -0.5 0 0.866" fovy="50"/>
  <body name="base" pos="0 0 0" euler="0 0 {yaw}">
    <geom type="cylinder" size="0.07 0.01" pos="0 0 0.01" rgba="0.3 0.3 0.3 1" contype="0" conaffinity="0"/>
    {arm_xml(spec)}
  </body>
  {objects}
</worldbody>
<contact><exclude body1="world" body2="link1"/>{contacts}</contact>
<actuator>{actuators_xml(spec)}</actuator>
</mujoco>"""


def build_model(spec: ArmSpec, objects: str = "", contacts: str = "") -> mujoco.MjModel:
    """Compile the scene; a failure names the arm (the XML is generated, so it is a bug here, not user input)."""
    try:
        return mujoco.MjModel.from_xml_string(scene_xml(spec, objects, contacts))
    except ValueError as e:
        raise RuntimeError(f"{spec.name}: generated MJCF failed to compile: {e}") from None
