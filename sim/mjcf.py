"""The twin's scene: the arm's MJCF (mimic.robots.arm_mjcf) on a table, with servos, lights and cameras.

The arm's body tree comes from mimic.robots.arm_mjcf unchanged, so the twin's kinematics are the ones IK
solves on, and both are the spec's DH table and nothing else. What is added here is what only a simulation
needs: the table and the task's objects, position servos for the joints and fingers, lights and the scene
camera.
"""

from __future__ import annotations

import mujoco

from mimic.robots.arm_mjcf import COMPILER, base_xml
from mimic.robots.spec import ArmSpec


def actuators_xml(spec: ArmSpec) -> str:
    """Position servos tuned like a stiff joint controller (critically damped on the proximal links)."""
    acts = [
        f'<position name="act_{j}" joint="{j}" kp="1500" kv="120" ctrlrange="{lo:.6f} {hi:.6f}" '
        'forcerange="-300 300"/>'
        for j, lo, hi in zip(spec.joint_names, spec.q_min, spec.q_max, strict=True)
    ]
    half = spec.gripper_max / 2
    for side in ("left", "right"):
        acts.append(
            f'<position name="act_finger_{side}" joint="finger_{side}" kp="300" ctrlrange="0 {half}" '
            f'forcerange="-15 15"/>'
        )
    return "".join(acts)


def scene_xml(spec: ArmSpec, objects: str = "", contacts: str = "") -> str:
    """A complete model: table top at z=0, the arm at the origin, `objects` (task bodies) in the world.

    `contacts` adds <contact> children (pairs, excludes) for the task. The first link never touches the table
    it is bolted to (its capsule starts at the base, inside the table top for UR and xArm, where the contact
    used to brake the base joint).
    """
    return f"""<mujoco model="{spec.name}_twin">
{COMPILER}
<option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
<visual><quality shadowsize="0"/><global offwidth="640" offheight="480"/></visual>
<worldbody>
  <light name="key" pos="0.5 -0.5 2" dir="0 0.3 -1" directional="true" castshadow="false" diffuse="0.8 0.8 0.8"/>
  <geom name="table" type="box" pos="0.4 0 -0.02" size="0.7 0.7 0.02" rgba="0.6 0.5 0.4 1"/>
  <camera name="scene" pos="1.25 0 0.75" xyaxes="0 1 0 -0.5 0 0.866" fovy="50"/>
  {base_xml(spec)}
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
