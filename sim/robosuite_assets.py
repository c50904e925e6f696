"""Manufacturer visual meshes for the twins, taken once at setup time from robosuite's model files (MIT).

robosuite ships MJCF models of the Panda, UR5e and xArm7 with the makers' visual meshes and colours, and
grippers for them. Its kinematic chains are not Mimic's: body frames sit elsewhere, joint zeros and signs may
differ, and the UR5e's rounds four of the published lengths. The DH spec stays the only kinematic truth, so
this module does not use robosuite's chain; it measures it. For each arm it loads robosuite's robot MJCF with
MuJoCo and sets the lengths it rounds to the spec's (ExactLength: each under a millimetre; a mesh that spans
one is stretched with it), solves each joint's sign and zero offset against Mimic's arm MJCF by forward
kinematics, checks that every robosuite link frame then sits at a constant pose in the matching Mimic body
over random configurations, and writes that pose, composed with each visual geom's own placement, into
`visuals.json` beside the unpacked files. `mimic.sim.visuals` reads that file when it builds a scene;
nothing here runs at model build time (solving takes seconds per arm, parsing one small JSON takes a
millisecond).

Grippers follow Mimic's finger joints, not robosuite's: the gripper is turned about the approach axis so its
fingers open along the hand's y axis, its fingers ride on Mimic's `finger_left` / `finger_right` slides
(their frames unchanged), and the pose robosuite's gripper has at its rest configuration is matched to
Mimic's fingers closed (Panda hand) or fully open (the Robotiq 2F-85 on the UR5e and the xArm gripper, linkage
grippers that rest open). A linkage gripper's knuckles stay on the hand at that open pose and only its finger
tips slide: a closed twin gripper shows tips inside open knuckles, where sliding the knuckles too would pile
them up in front of the wrist camera.

Run by `make setup`: `python -m mimic.sim.robosuite_assets WHEEL` (the wheel `pip download` fetched).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np
from scipy.optimize import minimize_scalar

from mimic.robots.arm_mjcf import FINGER_Z, build_arm_model
from mimic.robots.spec import ArmSpec
from mimic.robots.specs import get_spec

ASSETS_DIR = Path(__file__).resolve().parent / "assets" / "robosuite"
VISUALS_JSON = ASSETS_DIR / "visuals.json"
_PREFIX = "robosuite/models/assets/"
# Vertex-clustering grids for the visual meshes (see decimate): the arm is seen from a metre away by the scene
# camera, the gripper from centimetres by the wrist camera.
DECIMATE_CELL_M = {"robots": 0.008, "grippers": 0.003}
N_SOLVE_CONFIGS = 24  # random configurations each joint's sign/offset is judged on
SOLVE_TOL = 5e-3  # m + rad: the search's acceptance; the bound that counts is MAX_DEV_* (link_offsets)
MAX_DEV_M, MAX_DEV_RAD = 1e-3, np.radians(0.5)  # how far a placed mesh frame may sit from its link frame


@dataclass(frozen=True)
class ExactLength:
    """One length robosuite's MJCF rounds, set to the spec's value before anything is solved (see
    robot_model): `body`'s position in its parent along the parent's axis `axis` becomes `value(spec)`.
    `stretch`: the parent's meshes span that length (they reach from the parent's joint to this body's), so
    they are scaled along that axis about the parent's origin by exact / rounded, which keeps the joint
    housings they carry on the exact joint."""

    body: str
    axis: int  # 0, 1, 2: x, y, z of the parent body
    value: Callable[[ArmSpec], float]
    stretch: bool = True


@dataclass(frozen=True)
class ArmSource:
    """Where an arm's meshes live in robosuite and how its parts map onto Mimic's bodies."""

    robot: str  # folder under robots/
    bodies: tuple[str, ...]  # robosuite bodies for Mimic's base, link1 .. linkN
    gripper: str  # gripper XML stem under grippers/
    fingers: tuple[tuple[str, ...], tuple[str, ...]]  # gripper subtrees riding finger_left / finger_right
    rests_open: bool  # the gripper's rest pose is fully open (else closed)
    drivers: tuple[
        str, ...
    ]  # bodies whose joints open or close the left side (to find the opening direction)
    exact: tuple[ExactLength, ...] = ()  # robosuite's rounded lengths, each with the spec's value


# robosuite's UR5e (ROS-Industrial's ur_e_description numbers) rounds four of the published UR5e DH lengths:
# d1 0.163 for 0.1625, a3 0.392 for 0.3922, d5 0.100 for 0.0997, and d4, which it splits into the shoulder,
# elbow and wrist 1 offsets along the parallel joint axes 2-4, 0.138 - 0.131 + 0.127 = 0.134 for 0.1333.
# Universal Robots' own ur_description places the same meshes on the exact chain with the d4 difference
# between the forearm and wrist 1 (wrist 1's mesh 0.127 m short of the joint 5 axis); so does this table.
# Left rounded, the links wander up to 1.47 mm about any fixed offset on the exact chain.
_UR5E_SPLIT_D4 = 0.138 - 0.131 + 0.127
_UR5E_EXACT = (
    ExactLength("shoulder_link", 2, lambda s: s.dh[0].d),  # d1; the base mesh spans it
    ExactLength("wrist_1_link", 2, lambda s: -s.dh[2].a),  # a3; the forearm mesh spans it
    ExactLength("wrist_1_link", 1, lambda s: s.dh[3].d - _UR5E_SPLIT_D4, stretch=False),  # d4; robosuite: 0
    ExactLength("wrist_3_link", 2, lambda s: s.dh[4].d),  # d5; the wrist 2 mesh spans it
)


SOURCES = {
    "franka": ArmSource(
        "panda",
        ("link0", "link1", "link2", "link3", "link4", "link5", "link6", "link7"),
        "panda_gripper",
        (("leftfinger",), ("rightfinger",)),
        rests_open=False,
        drivers=("leftfinger",),
    ),
    "ur5e": ArmSource(
        "ur5e",
        (
            "fixed_base_link",
            "shoulder_link",
            "upper_arm_link",
            "forearm_link",
            "wrist_1_link",
            "wrist_2_link",
            "wrist_3_link",
        ),
        "robotiq_gripper_85",
        (("left_inner_finger",), ("right_inner_finger",)),
        rests_open=True,
        drivers=("left_outer_knuckle", "left_inner_knuckle"),
        exact=_UR5E_EXACT,
    ),
    "xarm7": ArmSource(
        "xarm7",
        ("base", "link1", "link2", "link3", "link4", "link5", "link6", "link7"),
        "xarm7_gripper",
        (("left_finger",), ("right_finger",)),
        rests_open=True,
        drivers=("left_outer_knuckle", "left_inner_knuckle"),
    ),
}


# --- small SE(3) helpers -----------------------------------------------------------------------------------
def pose(pos: np.ndarray, mat_or_quat: np.ndarray) -> np.ndarray:
    """4x4 from a position and a 3x3 matrix (9 values) or a wxyz quaternion (4 values)."""
    t = np.eye(4)
    r = np.asarray(mat_or_quat, dtype=float).reshape(-1)
    if r.size == 4:
        m = np.zeros(9)
        mujoco.mju_quat2Mat(m, r)
        r = m
    t[:3, :3], t[:3, 3] = r.reshape(3, 3), pos
    return t


def quat_of(t: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(t[:3, :3]).reshape(-1))
    return q


def pose_error(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(translation m, rotation rad) between two 4x4 poses (the angle by atan2, which unlike arccos of the
    trace stays exact near zero: a 1e-9 rotation reads 1e-9, not 4e-5)."""
    r = a[:3, :3].T @ b[:3, :3]
    sin = 0.5 * np.linalg.norm([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    ang = float(np.arctan2(sin, (np.trace(r) - 1) / 2))
    return float(np.linalg.norm(a[:3, 3] - b[:3, 3])), ang


def rot_z(a: float) -> np.ndarray:
    return pose(np.zeros(3), [np.cos(a / 2), 0.0, 0.0, np.sin(a / 2)])


def body_pose(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> np.ndarray:
    b = model.body(name).id
    return pose(data.xpos[b], data.xmat[b])


# --- joint correspondence ----------------------------------------------------------------------------------
def hinge_joints(model: mujoco.MjModel) -> list[int]:
    return [j for j in range(model.njnt) if int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_HINGE)]


def robot_model(arm: str, root: Path) -> tuple[mujoco.MjModel, list[dict]]:
    """robosuite's robot MJCF for `arm`, compiled, with the lengths it rounds (SOURCES[arm].exact) set to the
    spec's; returns the model and one record per length: the body, the axis, robosuite's value, the exact one
    and the parent whose meshes stretch with it (None for none) with the ratio. visuals.json keeps the records;
    the unit test applies them to a fresh load of the same file."""
    src, spec = SOURCES[arm], get_spec(arm)
    model = mujoco.MjModel.from_xml_path(str(root / "robots" / src.robot / "robot.xml"))
    records = []
    for e in src.exact:
        b = model.body(e.body).id
        rounded, exact = float(model.body_pos[b][e.axis]), round(float(e.value(spec)), 12)
        model.body_pos[b][e.axis] = exact
        rec = {"body": e.body, "axis": e.axis, "robosuite": rounded, "exact": exact, "stretched": None}
        if e.stretch:
            if abs(rounded) < 1e-6:
                raise ValueError(f"{arm}: {e.body} axis {e.axis} has no robosuite length to stretch")
            rec.update(stretched=model.body(model.body_parentid[b]).name, ratio=exact / rounded)
        records.append(rec)
    return model, records


class ChainPair:
    """Mimic's arm model and robosuite's robot model (robot_model) posed together:
    q_robosuite = sign * q + offset."""

    def __init__(self, arm: str, rs: mujoco.MjModel):
        self.spec = get_spec(arm)
        self.source = SOURCES[arm]
        self.mimic = build_arm_model(self.spec)
        self.mimic_data = mujoco.MjData(self.mimic)
        self.rs = rs
        self.rs_data = mujoco.MjData(self.rs)
        self.rs_joints = hinge_joints(self.rs)[: self.spec.dof]
        self.sign = np.ones(self.spec.dof)
        self.offset = np.zeros(self.spec.dof)
        self.mimic_bodies = ["base"] + [f"link{i + 1}" for i in range(self.spec.dof)]

    def set(self, q: np.ndarray) -> None:
        self.mimic_data.qpos[: self.spec.dof] = q
        mujoco.mj_kinematics(self.mimic, self.mimic_data)
        for i, j in enumerate(self.rs_joints):
            self.rs_data.qpos[self.rs.jnt_qposadr[j]] = self.sign[i] * q[i] + self.offset[i]
        mujoco.mj_kinematics(self.rs, self.rs_data)

    def link_pair(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Mimic body k, robosuite body k) poses, both in Mimic's arm base frame."""
        base = body_pose(self.mimic, self.mimic_data, "base")
        mim = np.linalg.inv(base) @ body_pose(self.mimic, self.mimic_data, self.mimic_bodies[k])
        return mim, body_pose(self.rs, self.rs_data, self.source.bodies[k])

    def relative(self, k: int) -> np.ndarray:
        mim, rs = self.link_pair(k)
        return np.linalg.inv(mim) @ rs

    def configs(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return rng.uniform(self.spec.q_min, self.spec.q_max, (n, self.spec.dof))

    def spread(self, k: int, qs: np.ndarray) -> float:
        """Largest deviation (m + rad) of robosuite body k's pose in Mimic body k over `qs`."""
        rels = []
        for q in qs:
            self.set(q)
            rels.append(self.relative(k))
        return max(sum(pose_error(rels[0], r)) for r in rels[1:])

    def solve(self, seed: int = 0) -> None:
        """Each joint's sign and zero offset, from the base out (coarse grid, then a scalar refinement).

        A wrong sign on joint i shows in link i at once. A zero offset on joint i does not: link i and every
        link after it turn by a constant about that axis, which the fixed link offsets would absorb, until
        joint i+1 moves about an axis the offset has turned. So joint i's offset is judged together with joint
        i+1's sign on link i+1 with the joints after it at zero; the last joint's offset is left at 0 (nothing
        downstream can tell it from the flange's fixed offset)."""
        qs = self.configs(N_SOLVE_CONFIGS, seed)
        n = self.spec.dof
        self.sign[0] = min((1.0, -1.0), key=lambda s: self._try(0, s, n, 0.0, 1, qs))
        if not self._solve_from(0, qs):
            worst = max(range(n + 1), key=lambda k: self.spread(k, qs))
            raise RuntimeError(
                f"{self.spec.name}: robosuite body {self.source.bodies[worst]!r} moves by "
                f"{self.spread(worst, qs):.4f} in {self.mimic_bodies[worst]} whatever the joint map: the chains "
                "do not match"
            )

    def _solve_from(self, i: int, qs: np.ndarray) -> bool:
        """Depth-first over joint i's offset and joint i+1's sign. Candidates can tie (a half turn about an
        axis that the next joint axis crosses, with that joint's sign flipped, keeps link i+1 rigid too), so
        each tie is tried in turn, smallest offset first, until every link below stays rigid."""
        n = self.spec.dof
        if i == n - 1:
            return all(self.spread(k, qs) <= SOLVE_TOL for k in range(n + 1))
        judged = qs.copy()
        judged[:, i + 2 :] = 0.0
        scored = [
            (self._try(i, self.sign[i], i + 1, s, i + 2, judged, o), o, s)
            for o in np.arange(-np.pi, np.pi, np.pi / 12)
            for s in (1.0, -1.0)
        ]
        floor = min(c[0] for c in scored) * 1.01 + 1e-6
        for err, o0, s in sorted(
            (c for c in scored if c[0] <= floor), key=lambda c: (round(abs(c[1]), 6), -c[2])
        ):
            self.sign[i + 1], self.offset[i] = s, o0
            if err > 1e-9:

                def cost(o: float, i: int = i, judged: np.ndarray = judged) -> float:
                    return self._try(i, self.sign[i], i + 1, self.sign[i + 1], i + 2, judged, o)

                res = minimize_scalar(cost, bounds=(o0 - np.pi / 12, o0 + np.pi / 12), method="bounded")
                self.offset[i] = float(res.x) if res.fun < err else o0
            for cand in (0.0, np.pi / 2, -np.pi / 2, np.pi, -np.pi):  # snap to the exact value it rounds to
                if abs(self.offset[i] - cand) < 1e-4:
                    self.offset[i] = cand
            if self._solve_from(i + 1, qs):
                return True
        return False

    def _try(
        self, i: int, s_i: float, j: int, s_j: float, link: int, qs: np.ndarray, o_i: float | None = None
    ) -> float:
        """Spread of `link` with joint i's sign s_i (and offset o_i if given) and joint j's sign s_j."""
        self.sign[i] = s_i
        if o_i is not None:
            self.offset[i] = o_i
        if j < self.spec.dof:
            self.sign[j] = s_j
        return self.spread(min(link, self.spec.dof), qs)

    def link_offsets(self, seed: int = 1) -> list[np.ndarray]:
        """The fixed pose of each robosuite link frame in its Mimic body over random configurations: the
        centre of the smallest ball holding its positions, the rotations' mean projected back onto SO(3).
        Refuses a link that strays further than MAX_DEV_M / MAX_DEV_RAD from it."""
        qs = self.configs(N_SOLVE_CONFIGS, seed)
        out = []
        for k in range(self.spec.dof + 1):
            rels = []
            for q in qs:
                self.set(q)
                rels.append(self.relative(k))
            t = np.eye(4)
            t[:3, 3] = _centre([r[:3, 3] for r in rels])
            u, _, vt = np.linalg.svd(np.sum([r[:3, :3] for r in rels], axis=0))
            t[:3, :3] = u @ np.diag([1, 1, np.linalg.det(u @ vt)]) @ vt
            dev = np.max([pose_error(t, r) for r in rels], axis=0)
            if dev[0] > MAX_DEV_M or dev[1] > MAX_DEV_RAD:
                raise RuntimeError(
                    f"{self.spec.name}: robosuite body {self.source.bodies[k]!r} strays {dev[0] * 1e3:.2f} mm / "
                    f"{np.degrees(dev[1]):.2f} deg from its fixed offset in {self.mimic_bodies[k]}"
                )
            out.append(t)
        return out


def _centre(points: list[np.ndarray], iters: int = 500) -> np.ndarray:
    """Centre of (nearly) the smallest ball holding `points` (Badoiu-Clarkson): the offset whose worst
    configuration is best, should a chain leave any wobble (with robosuite's rounded lengths set exact, none
    of the three does: the points coincide to 1e-9 m)."""
    pts = np.asarray(points)
    c = pts.mean(axis=0)
    for k in range(1, iters + 1):
        far = pts[np.argmax(np.linalg.norm(pts - c, axis=1))]
        c = c + (far - c) / (k + 1)
    return c


# --- visual geoms ------------------------------------------------------------------------------------------
def _path(model: mujoco.MjModel, mesh: int) -> str:
    adr = model.mesh_pathadr[mesh]
    return model.paths[adr:].split(b"\0")[0].decode()


def visual_geoms(model: mujoco.MjModel, data: mujoco.MjData, root: Path) -> list[dict]:
    """Every group-1 geom (robosuite's visual group) with its world pose *as written in its file* (for a
    mesh, undoing the recentring the compiler applied: re-reading the same file re-applies it)."""
    geoms = []
    for g in range(model.ngeom):
        if model.geom_group[g] != 1:
            continue
        t = pose(data.geom_xpos[g], data.geom_xmat[g])
        item: dict = {"body": model.body(model.geom_bodyid[g]).name}
        gtype = int(model.geom_type[g])
        if gtype == int(mujoco.mjtGeom.mjGEOM_MESH):
            mid = model.geom_dataid[g]
            t = t @ np.linalg.inv(pose(model.mesh_pos[mid], model.mesh_quat[mid]))
            item["mesh"] = model.mesh(mid).name
            item["file"] = str(Path(_path(model, mid)).resolve().relative_to(root))
            item["scale"] = model.mesh_scale[mid].tolist()
        else:
            item["type"] = mujoco.mjtGeom(gtype).name.removeprefix("mjGEOM_").lower()
            item["size"] = model.geom_size[g].tolist()
        mat = model.geom_matid[g]
        if mat >= 0:
            item["rgba"] = model.mat_rgba[mat].tolist()
            item["specular"] = float(model.mat_specular[mat])
            item["shininess"] = float(model.mat_shininess[mat])
        else:
            item["rgba"] = model.geom_rgba[g].tolist()
        item["world"] = t
        geoms.append(item)
    return geoms


def _placed(item: dict, in_body: np.ndarray) -> dict:
    out = {k: v for k, v in item.items() if k not in ("world", "body")}
    out["pos"] = np.round(in_body[:3, 3], 9).tolist()
    out["quat"] = np.round(quat_of(in_body), 9).tolist()
    return out


def subtree(model: mujoco.MjModel, roots: tuple[str, ...]) -> set[str]:
    ids = {model.body(r).id for r in roots}
    grown = True
    while grown:
        grown = False
        for b in range(model.nbody):
            if b not in ids and model.body_parentid[b] in ids:
                ids.add(b)
                grown = True
    return {model.body(b).name for b in ids}


def _stretch(item: dict, in_body: np.ndarray, axis: int, ratio: float) -> dict:
    """`item` (a visual mesh whose file frame sits at `in_body` in its body) scaled by `ratio` along the body's
    `axis` about the body's origin: MuJoCo's per-axis mesh scale, so the file frame must have an axis along
    it and its origin at the body's origin along it (true of every mesh ExactLength stretches)."""
    if "file" not in item:
        raise ValueError(f"{item['body']}: only meshes stretch, not a {item['type']}")
    along = in_body[axis, :3]  # the body axis in the file frame
    k = int(np.argmax(np.abs(along)))
    if abs(abs(along[k]) - 1) > 1e-6 or abs(in_body[axis, 3]) > 1e-9:
        raise ValueError(f"{item['body']}: mesh {item['mesh']} is not aligned with axis {axis} at the origin")
    scale = list(item["scale"])
    scale[k] *= ratio
    return {**item, "scale": scale}


def arm_visuals(arm: str, root: Path) -> dict:
    """Solve one arm and return its entry of visuals.json."""
    src = SOURCES[arm]
    rs, exact = robot_model(arm, root)
    stretch = {(r["stretched"], r["axis"]): r["ratio"] for r in exact if r["stretched"]}
    pair = ChainPair(arm, rs)
    pair.solve()
    offsets = pair.link_offsets()
    pair.set(np.zeros(pair.spec.dof))
    bodies: dict[str, list[dict]] = {name: [] for name in pair.mimic_bodies}
    rs_index = {b: k for k, b in enumerate(src.bodies)}
    for item in visual_geoms(pair.rs, pair.rs_data, root):
        k = rs_index.get(item["body"])
        if k is None:
            continue
        in_rs_body = np.linalg.inv(body_pose(pair.rs, pair.rs_data, item["body"])) @ item["world"]
        for (parent, axis), ratio in stretch.items():
            if parent == item["body"]:
                item = _stretch(item, in_rs_body, axis, ratio)
        bodies[pair.mimic_bodies[k]].append(_placed(item, offsets[k] @ in_rs_body))
    bodies.update(gripper_visuals(arm, root))
    return {
        "robosuite_robot": src.robot,
        "robosuite_gripper": src.gripper,
        "exact_lengths": exact,
        "joint_sign": pair.sign.tolist(),
        "joint_offset": pair.offset.tolist(),
        "links": {
            pair.mimic_bodies[k]: {
                "robosuite_body": src.bodies[k],
                "pos": np.round(offsets[k][:3, 3], 9).tolist(),
                "quat": np.round(quat_of(offsets[k]), 9).tolist(),
            }
            for k in range(len(src.bodies))
        },
        "bodies": bodies,
    }


def load_gripper(path: Path) -> mujoco.MjModel:
    """Compile a robosuite gripper on its own. robosuite's Robotiq 85 file declares the mesh
    `robotiq_arg2f_base_link` twice, the second time from a file the wheel does not ship (robosuite renames
    on merge; MuJoCo refuses the repeat): that second line is dropped, so its base shows the first mesh."""
    lines = path.read_text().splitlines(keepends=True)
    seen: set[str] = set()
    kept = []
    for line in lines:
        if line.strip().startswith("<mesh ") and 'name="' in line:
            name = line.split('name="', 1)[1].split('"', 1)[0]
            if name in seen:
                continue
            seen.add(name)
        kept.append(line)
    # ...and its xArm gripper file puts `group` on a <default> element, which MuJoCo's schema refuses.
    text = re.sub(r'<default class="([^"]+)"[^>/]*>', r'<default class="\1">', "".join(kept))
    head = text.index(">", text.index("<mujoco")) + 1
    text = text[:head] + f'<compiler meshdir="{path.parent}"/>' + text[head:]
    return mujoco.MjModel.from_xml_string(text)


def _opening(
    model: mujoco.MjModel, data: mujoco.MjData, roots: tuple[str, ...], rests_open: bool
) -> np.ndarray:
    """Direction the left finger moves when the gripper opens, in the gripper's frame: turn (0.3 rad) or slide
    (1 cm) the joints of the left side's root bodies forward from rest (every chosen gripper's joints start at
    the low end of their range) and follow the left side's visual geoms (a gripper that rests open closes
    that way). A slide gripper's finger axis and a linkage gripper's swing both show."""
    left = subtree(model, roots)
    ids = [
        g
        for g in range(model.ngeom)
        if model.geom_group[g] == 1 and model.body(model.geom_bodyid[g]).name in left
    ]
    before = data.geom_xpos[ids].mean(axis=0)
    for j in range(model.njnt):
        if model.body(model.jnt_bodyid[j]).name in roots:
            slide = int(model.jnt_type[j]) == int(mujoco.mjtJoint.mjJNT_SLIDE)
            data.qpos[model.jnt_qposadr[j]] += 0.01 if slide else 0.3
    mujoco.mj_kinematics(model, data)
    moved = data.geom_xpos[ids].mean(axis=0) - before
    mujoco.mj_resetData(model, data)
    mujoco.mj_kinematics(model, data)
    return -moved if rests_open else moved


def gripper_visuals(arm: str, root: Path) -> dict[str, list[dict]]:
    """The gripper's visual geoms on Mimic's hand and finger bodies (see the module docstring)."""
    src, spec = SOURCES[arm], get_spec(arm)
    model = load_gripper(root / "grippers" / f"{src.gripper}.xml")
    data = mujoco.MjData(model)
    mujoco.mj_kinematics(model, data)
    geoms = visual_geoms(model, data, root)
    sides = [subtree(model, roots) for roots in src.fingers]
    d = _opening(model, data, src.drivers, src.rests_open)
    turn = rot_z(np.pi / 2 - float(np.arctan2(d[1], d[0])))  # the left finger's opening onto the hand's +y
    q_rest = spec.gripper_max / 2 if src.rests_open else 0.0
    out: dict[str, list[dict]] = {"hand": [], "finger_left": [], "finger_right": []}
    for g in geoms:
        in_hand = turn @ g["world"]
        for name, side, y in (("finger_left", sides[0], 1.0), ("finger_right", sides[1], -1.0)):
            if g["body"] in side:
                finger = pose(np.array([0.0, y * (0.006 + q_rest), FINGER_Z + 0.025]), [1.0, 0, 0, 0])
                out[name].append(_placed(g, np.linalg.inv(finger) @ in_hand))
                break
        else:
            out["hand"].append(_placed(g, in_hand))
    return out


# --- mesh decimation ---------------------------------------------------------------------------------------
def _mesh_in_file_frame(path: Path, scale: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (in the file's own frame, scale applied) and triangles of one mesh file, as MuJoCo reads it."""
    xml = (
        f'<mujoco><asset><mesh name="m" file="{path}" scale="{" ".join(map(str, scale))}"/></asset>'
        '<worldbody><geom type="mesh" mesh="m" contype="0" conaffinity="0"/></worldbody></mujoco>'
    )
    m = mujoco.MjModel.from_xml_string(xml)
    a, n = m.mesh_vertadr[0], m.mesh_vertnum[0]
    f0, nf = m.mesh_faceadr[0], m.mesh_facenum[0]
    frame = pose(m.mesh_pos[0], m.mesh_quat[0])  # the compiler's recentring, undone
    verts = m.mesh_vert[a : a + n] @ frame[:3, :3].T + frame[:3, 3]
    return verts, m.mesh_face[f0 : f0 + nf].copy()


def decimate(verts: np.ndarray, faces: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: vertices in one `cell`-sized voxel merge into their mean, triangles that collapse
    are dropped. Offscreen rendering without a GPU is bound by triangle count (the Panda's full meshes have
    ~135k triangles); at the twins' camera sizes the grids of DECIMATE_CELL_M keep about a sixth of them."""
    keys = np.floor(verts / cell).astype(np.int64)
    _, cluster, counts = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
    cluster = cluster.reshape(-1)
    merged = np.zeros((counts.size, 3))
    np.add.at(merged, cluster, verts)
    merged /= counts[:, None]
    tri = cluster[faces]
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    tri = tri[keep]
    _, first = np.unique(np.sort(tri, axis=1), axis=0, return_index=True)
    return merged, tri[np.sort(first)]


def write_obj(path: Path, verts: np.ndarray, faces: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in verts]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")


def decimate_all(dest: Path, visuals: dict, cells: dict[str, float] = DECIMATE_CELL_M) -> dict[str, int]:
    """Replace every mesh the visuals use by a decimated OBJ under dest/decimated/ (scale baked in) and point
    visuals at it; returns triangle counts before and after."""
    done: dict[tuple, str] = {}
    before = after = 0
    for arm in visuals.values():
        for geoms in arm["bodies"].values():
            for g in geoms:
                if "file" not in g:
                    continue
                key = (g["file"], tuple(g["scale"]))
                if key not in done:
                    verts, faces = _mesh_in_file_frame(dest / g["file"], g["scale"])
                    small_v, small_f = decimate(verts, faces, cells[Path(g["file"]).parts[0]])
                    if len(small_f) < 4:  # a part smaller than the grid keeps its full mesh
                        small_v, small_f = verts, faces
                    rel = f"decimated/{Path(g['file']).with_suffix('')}_{len(done)}.obj"
                    write_obj(dest / rel, small_v, small_f)
                    done[key] = rel
                    before, after = before + len(faces), after + len(small_f)
                g["file"], g["scale"] = done[key], [1.0, 1.0, 1.0]
    return {"triangles_full": before, "triangles_decimated": after}


# --- setup -------------------------------------------------------------------------------------------------
def unpack(wheel: Path, dest: Path = ASSETS_DIR) -> None:
    """Copy the three robots, the three grippers used and robosuite's licence out of the wheel into `dest`."""
    wanted = [f"robots/{s.robot}/" for s in SOURCES.values()]
    grippers = [f"grippers/{s.gripper}.xml" for s in SOURCES.values()]
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            name = info.filename
            if name.endswith(("/LICENSE", "/AUTHORS")) and ".dist-info/" in name:
                (dest / Path(name).name).write_bytes(z.read(info))
                continue
            if not name.startswith(_PREFIX) or info.is_dir():
                continue
            rel = name[len(_PREFIX) :]
            if (
                any(rel.startswith(w) for w in wanted)
                or rel in grippers
                or rel.startswith("grippers/meshes/")
            ):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(z.read(info))
    if not (dest / "LICENSE").exists():
        raise RuntimeError(f"{wheel}: no LICENSE in the wheel's dist-info; refusing to unpack without it")


def _prune_gripper_meshes(dest: Path, visuals: dict) -> None:
    """Drop gripper mesh folders no chosen gripper uses (robosuite ships ~60 MB of hands)."""
    used = {
        Path(g["file"]).parts[:3]
        for arm in visuals.values()
        for geoms in arm["bodies"].values()
        for g in geoms
        if "file" in g
    }
    for folder in (dest / "grippers" / "meshes").iterdir():
        if folder.relative_to(dest).parts[:3] not in used:
            shutil.rmtree(folder)


def build(wheel: Path, dest: Path = ASSETS_DIR) -> dict:
    unpack(wheel, dest)
    visuals = {arm: arm_visuals(arm, dest) for arm in SOURCES}
    _prune_gripper_meshes(dest, visuals)
    stats = decimate_all(dest, visuals)
    print(
        f"visual meshes: {stats['triangles_full']} -> {stats['triangles_decimated']} triangles (grids {DECIMATE_CELL_M} m)"
    )
    (dest / "visuals.json").write_text(json.dumps(visuals, indent=1))
    return visuals


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("wheel", type=Path, help="robosuite wheel (pip download robosuite==<pin> --no-deps)")
    p.add_argument("--dest", type=Path, default=ASSETS_DIR)
    args = p.parse_args(argv)
    if not args.wheel.is_file():
        print(f"{args.wheel}: no such wheel", file=sys.stderr)
        return 2
    visuals = build(args.wheel, args.dest)
    for arm, v in visuals.items():
        n = sum(len(g) for g in v["bodies"].values())
        print(
            f"{arm}: {n} visual geoms, joint sign {v['joint_sign']}, offset {np.round(v['joint_offset'], 4).tolist()}"
        )
        for e in v["exact_lengths"]:
            how = f", {e['stretched']} meshes x{e['ratio']:.5f}" if e["stretched"] else ""
            print(
                f"  {e['body']} {'xyz'[e['axis']]}: robosuite {e['robosuite']:g} m -> {e['exact']:g} m{how}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
