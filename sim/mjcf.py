"""The twin's scene: the arm's MJCF (mimic.robots.arm_mjcf) on a table, with servos, lights and cameras.

The arm's body tree comes from mimic.robots.arm_mjcf unchanged, so the twin's kinematics are the ones IK
solves on, and both are the spec's DH table and nothing else. What is added here is what only a simulation
needs: the table and the task's objects, position servos for the joints and fingers, lights and the scene
camera.

How the scene is dressed is a `Look`, and no look changes physics: the table, objects and arm collide, weigh
and rub the same in every one. PLAIN is the original scene (capsule arm, one light, brown table in a black
void) and stays the default here, so scenes other modules build on this one keep their pixels. LAB is a lab
cell: the manufacturer's meshes on the arm (mimic.sim.visuals, when the assets are unpacked), a laminate
table on legs, a floor, walls, a key light with soft shadows, a fill and a rim light, and a hazy skybox; the
task envs use it.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import mujoco

from mimic.robots.arm_mjcf import COMPILER, base_xml
from mimic.robots.spec import ArmSpec
from mimic.sim.visuals import arm_visuals

TABLE_HEIGHT = 0.76  # m from the floor to the table top (z = 0), for the lab cell's legs and floor


@dataclass(frozen=True)
class Look:
    """How a scene is dressed (never its physics)."""

    meshes: bool = True  # the manufacturer's visual meshes on the arm, when the assets are unpacked
    lab: bool = True  # lab cell: textured table, floor, walls, three lights, skybox
    shadows: bool = False  # the key light casts soft shadows (lab only; 2.5-5x the render time without a GPU)

    @property
    def name(self) -> str:
        if not (self.meshes or self.lab):
            return "plain"
        return ("lab" if self.lab else "meshes") + ("-shadows" if self.shadows and self.lab else "")


PLAIN = Look(meshes=False, lab=False)
LAB = Look()  # what the task envs render (bench/bench_render.py: 0.3-0.5x the plain fps, shadows 0.07-0.13x)
LAB_SHADOWS = Look(shadows=True)  # for pictures
MESHES = Look(lab=False)  # the arm meshes in the plain scene: what the meshes alone cost
LOOKS = {look.name: look for look in (PLAIN, MESHES, LAB, LAB_SHADOWS)}
SHADOW_MAP = 1024  # px: the key light's shadow map; smaller is softer and cheaper


def get_look(name: str) -> Look:
    try:
        return LOOKS[name]
    except KeyError:
        raise ValueError(f"unknown look {name!r}; known: {', '.join(LOOKS)}") from None


# Materials the task objects wear in the lab look (env.py names them on the geoms; colours stay the geoms').
OBJECT_MATERIALS = {
    "plastic": 'specular="0.35" shininess="0.6" reflectance="0"',
}


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


def _lab_assets() -> str:
    """Procedural textures only (MuJoCo builtins): nothing is read from disk or downloaded."""
    return (
        '<texture name="sky" type="skybox" builtin="gradient" rgb1="0.82 0.85 0.88" rgb2="0.42 0.45 0.5" '
        'width="256" height="256"/>'
        '<texture name="laminate" type="2d" builtin="flat" rgb1="0.78 0.68 0.54" mark="random" random="0.3" '
        'markrgb="0.72 0.62 0.48" width="512" height="512"/>'
        '<texture name="floor" type="2d" builtin="checker" rgb1="0.36 0.37 0.39" rgb2="0.33 0.34 0.36" '
        'mark="random" random="0.03" markrgb="0.45 0.45 0.46" width="512" height="512"/>'
        '<texture name="wall" type="2d" builtin="flat" rgb1="0.78 0.79 0.8" mark="random" random="0.01" '
        'markrgb="0.7 0.7 0.72" width="256" height="256"/>'
        '<material name="table_top" texture="laminate" texrepeat="3 3" specular="0.25" shininess="0.35"/>'
        '<material name="table_leg" rgba="0.55 0.57 0.6 1" specular="0.6" shininess="0.7"/>'
        '<material name="floor" texture="floor" texrepeat="6 6" texuniform="true" specular="0.1"/>'
        '<material name="wall" texture="wall" texrepeat="4 4" texuniform="true" specular="0.05"/>'
        + "".join(f'<material name="{name}" {attrs}/>' for name, attrs in OBJECT_MATERIALS.items())
    )


def _lab_world(shadows: bool) -> str:
    """Table legs, floor and walls (visual only: contype 0, in the world body, so no physics) and lights."""
    legs = "".join(
        f'<geom name="table_leg{i}" type="box" size="0.03 0.03 {(TABLE_HEIGHT - 0.04) / 2:.3f}" '
        f'pos="{x} {y} {-(TABLE_HEIGHT + 0.04) / 2:.3f}" material="table_leg" contype="0" conaffinity="0" group="2"/>'
        for i, (x, y) in enumerate(((-0.25, -0.65), (-0.25, 0.65), (1.05, -0.65), (1.05, 0.65)))
    )
    vis = 'contype="0" conaffinity="0" group="2"'
    cast = "true" if shadows else "false"
    return f"""
  <light name="key" pos="1.2 -0.8 2.2" dir="-0.45 0.3 -1" directional="true" castshadow="{cast}"
         diffuse="0.62 0.61 0.58" specular="0.25 0.25 0.25"/>
  <light name="fill" pos="0.6 1.2 1.6" dir="0 -0.6 -1" directional="true" castshadow="false"
         diffuse="0.28 0.29 0.31" specular="0 0 0"/>
  <light name="rim" pos="-0.8 0 1.8" dir="0.6 0 -0.6" directional="true" castshadow="false"
         diffuse="0.2 0.2 0.2" specular="0.1 0.1 0.1"/>
  {legs}
  <geom name="floor" type="plane" size="4 4 0.1" pos="0.4 0 -{TABLE_HEIGHT}" material="floor" {vis}/>
  <geom name="wall_back" type="box" size="0.02 3 1.4" pos="-1.6 0 {0.64 - TABLE_HEIGHT:.2f}" material="wall" {vis}/>
  <geom name="wall_left" type="box" size="3 0.02 1.4" pos="0.4 2.2 {0.64 - TABLE_HEIGHT:.2f}" material="wall" {vis}/>
  <geom name="wall_right" type="box" size="3 0.02 1.4" pos="0.4 -2.2 {0.64 - TABLE_HEIGHT:.2f}" material="wall" {vis}/>"""


@dataclass(frozen=True)
class Dressing:
    """The parts of a scene a look decides: <visual>, <asset> content, lights and room, and the table geom."""

    visual: str
    assets: str
    world: str
    table: str


def scene_dressing(look: Look, mesh_assets: str = "") -> Dressing:
    """What `look` puts around the table top at z = 0; every scene on this table (the arm twins, the handheld
    gripper) is dressed by it, so the same look renders the same room. `mesh_assets`: the visual meshes'
    <asset> entries (mimic.sim.visuals), kept beside the look's own textures."""
    assets = mesh_assets + (_lab_assets() if look.lab else "")
    if look.lab:
        visual = (
            f'<visual><quality shadowsize="{SHADOW_MAP if look.shadows else 0}"/><global offwidth="640" offheight="480"/>'
            '<headlight ambient="0.22 0.22 0.22" diffuse="0.12 0.12 0.12" specular="0 0 0"/>'
            '<map haze="0.4" znear="0.01"/><rgba haze="0.8 0.82 0.85 1"/></visual>'
            # The walls would set the model's extent to metres; near plane (znear * extent) and the key
            # light's shadow map follow it, so the wrist camera would clip the fingers and shadows would be
            # coarse. Pin it to the workspace instead.
            '<statistic extent="1.2" center="0.4 0 0.1"/>'
        )
        world = _lab_world(look.shadows)
        table = '<geom name="table" type="box" pos="0.4 0 -0.02" size="0.7 0.7 0.02" rgba="1 1 1 1" material="table_top"/>'
    else:
        visual = '<visual><quality shadowsize="0"/><global offwidth="640" offheight="480"/></visual>'
        world = """
  <light name="key" pos="0.5 -0.5 2" dir="0 0.3 -1" directional="true" castshadow="false" diffuse="0.8 0.8 0.8"/>"""
        table = '<geom name="table" type="box" pos="0.4 0 -0.02" size="0.7 0.7 0.02" rgba="0.6 0.5 0.4 1"/>'
    return Dressing(visual, assets, world, table)


def scene_xml(spec: ArmSpec, objects: str = "", contacts: str = "", look: Look = PLAIN) -> str:
    """A complete model: table top at z=0, the arm at the origin, `objects` (task bodies) in the world.

    `contacts` adds <contact> children (pairs, excludes) for the task. The first link never touches the table
    it is bolted to (its capsule starts at the base, inside the table top for UR and xArm, where the contact
    used to brake the base joint). `look` dresses the scene (module docstring); physics is the same for all.
    """
    vis = arm_visuals(spec.name) if look.meshes else None
    dress = scene_dressing(look, vis.assets if vis else "")
    visual, assets, world, table = dress.visual, dress.assets, dress.world, dress.table
    return f"""<mujoco model="{spec.name}_twin">
{COMPILER}
<option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
{visual}
{f"<asset>{assets}</asset>" if assets else ""}
<worldbody>{world}
  {table}
  <camera name="scene" pos="1.25 0 0.75" xyaxes="0 1 0 -0.5 0 0.866" fovy="50"/>
  {base_xml(spec, vis.bodies if vis else None)}
  {objects}
</worldbody>
<contact><exclude body1="world" body2="link1"/>{contacts}</contact>
<actuator>{actuators_xml(spec)}</actuator>
</mujoco>"""


@functools.lru_cache(maxsize=16)
def _compiled(xml: str) -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(xml)


def build_model(spec: ArmSpec, objects: str = "", contacts: str = "", look: Look = PLAIN) -> mujoco.MjModel:
    """Compile the scene; a failure names the arm (the XML is generated, so it is a bug here, not user input).

    Compiled models are cached by their XML and each caller gets its own copy (envs edit theirs at every
    reset): compiling the lab look with its meshes costs 30-110 ms, copying the result 3-15 ms
    (bench/bench_render.py).
    """
    try:
        return _copy(_compiled(scene_xml(spec, objects, contacts, look)))
    except ValueError as e:
        raise RuntimeError(f"{spec.name}: generated MJCF failed to compile: {e}") from None


def _copy(model: mujoco.MjModel) -> mujoco.MjModel:
    return copy.copy(model)  # MjModel's copy is a full mj_copyModel
