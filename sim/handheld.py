"""UMI-style scenes on the twin: a ChArUco board to calibrate against, and a free-floating handheld gripper.

Board: the board, its texture and its frame convention come from mimic.sim.boards; the scenes here place
it on a table in front of a free camera or an arm twin's wrist camera.

Intrinsics truth: MuJoCo renders a pinhole with square pixels, fy = fx = (H / 2) / tan(fovy / 2), and the
principal point at the image centre, (W - 1) / 2 and (H - 1) / 2 in OpenCV's pixel-centre convention.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import cv2  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from mimic.robots.arm_mjcf import gripper_xml  # noqa: E402  (the arm twins' own hand)
from mimic.robots.specs import get_spec  # noqa: E402
from mimic.sim.boards import (  # noqa: E402
    CharucoBoardSpec,
    apply_board_texture,
    board_asset_xml,
    board_center,
)
from mimic.sim.mjcf import LAB, PLAIN, Look, scene_dressing, scene_xml  # noqa: E402
from mimic.sim.visuals import arm_visuals  # noqa: E402

# MuJoCo cameras look along -z with y up; OpenCV's look along +z with y down.
MJ_TO_CV = np.diag([1.0, -1.0, -1.0])


# ---- small pose helpers ------------------------------------------------------------------------
def _quat(rot: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(rot, dtype=np.float64).reshape(-1))
    return q


def _quat_mat(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> 3x3 rotation matrix."""
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, q)
    return m.reshape(3, 3)


def _pose_attr(t: np.ndarray) -> str:
    p, q = t[:3, 3], _quat(t[:3, :3])
    return f'pos="{p[0]:.9g} {p[1]:.9g} {p[2]:.9g}" quat="{q[0]:.9g} {q[1]:.9g} {q[2]:.9g} {q[3]:.9g}"'


def homogeneous(pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, :3] = np.asarray(rot, float).reshape(3, 3)
    t[:3, 3] = pos
    return t


def camera_pose_cv(model: mujoco.MjModel, data: mujoco.MjData, camera: str) -> np.ndarray:
    """T_world_cam of a MuJoCo camera, in OpenCV's camera convention."""
    cid = model.camera(camera).id
    return homogeneous(data.cam_xpos[cid], data.cam_xmat[cid].reshape(3, 3) @ MJ_TO_CV)


def true_intrinsics(model: mujoco.MjModel, camera: str, size: tuple[int, int]) -> np.ndarray:
    """The 3x3 camera matrix MuJoCo renders `camera` with at (height, width) = size."""
    h, w = size
    fovy = float(model.cam_fovy[model.camera(camera).id])
    f = (h / 2) / np.tan(np.deg2rad(fovy) / 2)
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, roll_rad: float = 0.0) -> np.ndarray:
    """T_world_cam (OpenCV) at `eye` looking at `target`, rolled about the optical axis."""
    z = np.asarray(target, float) - eye
    z /= np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0]) if abs(z[2]) < 0.95 else np.array([1.0, 0.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll_rad), np.sin(roll_rad)
    rot = np.stack([x, y, z], axis=1) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    return homogeneous(eye, rot)


def random_views(
    centre: np.ndarray,
    n: int,
    seed: int = 0,
    distance_m: tuple[float, float] = (0.3, 0.55),
    max_tilt_deg: float = 40.0,
    max_roll_rad: float = np.pi,
) -> list[np.ndarray]:
    """Camera poses above a board: varied distance, tilt, azimuth and roll (what a person does)."""
    rng = np.random.default_rng(seed)
    views = []
    for _ in range(n):
        tilt = np.deg2rad(rng.uniform(5, max_tilt_deg))
        az = rng.uniform(-np.pi, np.pi)
        d = rng.uniform(*distance_m)
        eye = centre + d * np.array([np.sin(tilt) * np.cos(az), np.sin(tilt) * np.sin(az), np.cos(tilt)])
        target = centre + rng.uniform(-0.04, 0.04, 3) * [1, 1, 0]
        views.append(look_at(eye, target, rng.uniform(-max_roll_rad, max_roll_rad)))
    return views


# ---- the board ---------------------------------------------------------------------------------
def board_body_xml(pose: np.ndarray, name: str = "charuco") -> str:
    """The board's body at 4x4 `pose`; its frame is OpenCV's board frame (mimic.sim.boards)."""
    return (
        f'<body name="{name}" {_pose_attr(pose)}><geom name="{name}" type="mesh" mesh="{name}" '
        f'material="{name}" contype="0" conaffinity="0" mass="0.1"/></body>'
    )


def body_pose(model: mujoco.MjModel, data: mujoco.MjData, body: str) -> np.ndarray:
    bid = model.body(body).id
    return homogeneous(data.xpos[bid], data.xmat[bid].reshape(3, 3))


def _with_assets(xml: str, assets: str) -> str:
    """Insert an <asset> block after <compiler .../> of a generated scene."""
    head, sep, tail = xml.partition("/>")  # the first element closed by "/>" is <compiler .../>
    if "<compiler" not in head:
        raise RuntimeError("generated scene has no <compiler> element to anchor assets after")
    return f"{head}{sep}<asset>{assets}</asset>{tail}"


class BoardScene:
    """A board on a table and a free camera (a mocap rig) to photograph it from any pose."""

    def __init__(
        self,
        board: CharucoBoardSpec | None = None,
        fovy_deg: float = 55.0,
        size: tuple[int, int] = (480, 640),
        board_pose: np.ndarray | None = None,
    ) -> None:
        self.board = board or CharucoBoardSpec()
        self.size = tuple(size)
        # Face up on the table: board z (into the board) points down.
        self.board_pose = (
            board_pose if board_pose is not None else homogeneous([0.35, 0.1, 0.001], np.diag([1.0, -1, -1]))
        )
        h, w = self.size
        xml = f"""<mujoco model="charuco_scene"><compiler angle="radian"/>
<asset>{board_asset_xml(self.board)}</asset>
<visual><quality shadowsize="0"/><global offwidth="{max(w, 640)}" offheight="{max(h, 480)}"/></visual>
<worldbody>
  <light pos="0.3 0 2" dir="0 0 -1" directional="true" castshadow="false" diffuse="0.6 0.6 0.6"/>
  <geom name="table" type="box" pos="0.4 0 -0.02" size="0.7 0.7 0.02" rgba="0.6 0.5 0.4 1"/>
  {board_body_xml(self.board_pose)}
  <body name="rig" mocap="true" pos="0 0 1"><camera name="calib" fovy="{fovy_deg}"/></body>
</worldbody></mujoco>"""
        self.model = mujoco.MjModel.from_xml_string(xml)
        apply_board_texture(self.model, self.board)
        self.data = mujoco.MjData(self.model)
        self._renderer = mujoco.Renderer(self.model, height=h, width=w)

    def camera_matrix(self) -> np.ndarray:
        return true_intrinsics(self.model, "calib", self.size)

    def render(self, t_world_cam: np.ndarray) -> np.ndarray:
        """uint8 HxWx3 image from a camera at `t_world_cam` (OpenCV convention)."""
        self.data.mocap_pos[0] = t_world_cam[:3, 3]
        self.data.mocap_quat[0] = _quat(t_world_cam[:3, :3] @ MJ_TO_CV)
        mujoco.mj_forward(self.model, self.data)
        self._renderer.update_scene(self.data, camera="calib")
        return self._renderer.render().copy()

    def board_center(self) -> np.ndarray:
        return board_center(self.board, self.board_pose)

    def random_views(
        self, n: int, seed: int = 0, distance_m: tuple[float, float] = (0.3, 0.55), max_tilt_deg: float = 40.0
    ) -> list[np.ndarray]:
        return random_views(self.board_center(), n, seed, distance_m, max_tilt_deg)

    def close(self) -> None:
        self._renderer.close()


class ArmBoardScene:
    """An arm twin (same MJCF as sim.make_env, wrist camera included) with a board on its table.

    Hand-eye data comes from here: joint configurations set on the arm, the flange pose read back from
    MuJoCo (what the robot would report) and the wrist camera's render of the board.
    """

    def __init__(
        self,
        arm: str,
        board: CharucoBoardSpec | None = None,
        size: tuple[int, int] = (480, 640),
        board_pose: np.ndarray | None = None,
    ) -> None:
        self.spec = get_spec(arm)
        self.board = board or CharucoBoardSpec()
        self.size = tuple(size)
        self.board_pose = (
            board_pose if board_pose is not None else homogeneous([0.36, 0.12, 0.001], np.diag([1.0, -1, -1]))
        )
        xml = _with_assets(scene_xml(self.spec, board_body_xml(self.board_pose)), board_asset_xml(self.board))
        h, w = self.size
        xml = xml.replace(
            'offwidth="640" offheight="480"', f'offwidth="{max(w, 640)}" offheight="{max(h, 480)}"'
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        apply_board_texture(self.model, self.board)
        self.data = mujoco.MjData(self.model)
        self.arm_qpos = np.arange(self.spec.dof)
        self._flange = self.model.site("flange").id
        self.tcp_site = self.model.site(
            "tcp"
        ).id  # with model/spec/arm_qpos: what mimic.sim.expert.Expert's IK reads
        self._renderer = mujoco.Renderer(self.model, height=h, width=w)
        fingers = [self.model.joint(f"finger_{s}").qposadr[0] for s in ("left", "right")]
        self.data.qpos[fingers] = self.spec.gripper_max / 2  # open: the fingers hide the least board

    def set_joints(self, q: np.ndarray) -> None:
        self.data.qpos[self.arm_qpos] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_camlight(self.model, self.data)

    def move_camera_to(self, t_world_cam: np.ndarray, mount_guess: np.ndarray) -> float:
        """Drive the arm (IK from home) so the wrist camera is near `t_world_cam`; returns the miss in m.

        `mount_guess` (T_flange_cam, e.g. from CAD) only plans the view: calibration uses the flange pose
        read back afterwards, never this target, so a rough guess is enough.
        """
        from mimic.sim.expert import Expert

        flange = t_world_cam @ np.linalg.inv(mount_guess)
        self.set_joints(self.spec.home)
        flange_tcp = np.linalg.inv(self.flange_pose()) @ homogeneous(
            self.data.site_xpos[self.tcp_site], self.data.site_xmat[self.tcp_site].reshape(3, 3)
        )
        tcp = flange @ flange_tcp
        q = Expert(self).ik(self.spec.home.copy(), tcp[:3, 3], tcp[:3, :3], iters=200)
        self.set_joints(q)
        return float(np.linalg.norm(self.flange_pose()[:3, 3] - flange[:3, 3]))

    def flange_pose(self) -> np.ndarray:
        """T_base_flange as the robot reports it (base = world here: the arm sits at the origin)."""
        return homogeneous(self.data.site_xpos[self._flange], self.data.site_xmat[self._flange].reshape(3, 3))

    def true_camera_mount(self) -> np.ndarray:
        """T_flange_cam (OpenCV convention): the ground truth hand-eye calibration must recover."""
        return np.linalg.inv(self.flange_pose()) @ camera_pose_cv(self.model, self.data, "wrist")

    def camera_matrix(self) -> np.ndarray:
        return true_intrinsics(self.model, "wrist", self.size)

    def render_wrist(self) -> np.ndarray:
        self._renderer.update_scene(self.data, camera="wrist")
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


# ---- the free-floating handheld gripper --------------------------------------------------------
def _handheld_xml(gripper_spec, objects: str, look: Look = PLAIN) -> str:
    """Table, task objects and the arm twins' own gripper (same palm, fingers, TCP and wrist camera) on a
    free "flange" body welded to a mocap target: the person's hand moves the target, the gripper follows
    through a stiff weld with real velocities (a kinematic mocap gripper would teleport and its pads could
    never lift a cube by friction). Dressed by `look` like the arm twins' scene (the same room, and the
    arm's hand meshes on the gripper), its wrist images look like the arms' twins', which is what makes
    handheld demos deployable on an arm."""
    half = gripper_spec.gripper_max / 2
    fingers = "".join(
        f'<position name="act_finger_{s}" joint="finger_{s}" kp="300" ctrlrange="0 {half}" '
        'forcerange="-15 15"/>'
        for s in ("left", "right")
    )
    vis = arm_visuals(gripper_spec.name) if look.meshes else None
    dress = scene_dressing(look, vis.assets if vis else "")
    hand = gripper_xml(gripper_spec, vis.bodies if vis else None)
    return f"""<mujoco model="handheld_gripper">
<compiler angle="radian" autolimits="true"/>
<option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
{dress.visual}
{f"<asset>{dress.assets}</asset>" if dress.assets else ""}
<worldbody>{dress.world}
  {dress.table}
  <camera name="scene" pos="1.25 0 0.75" xyaxes="0 1 0 -0.5 0 0.866" fovy="50"/>
  <body name="hand_target" mocap="true" pos="0.45 0 0.4"/>
  <body name="flange" pos="0.45 0 0.4" gravcomp="1"><freejoint name="hand"/>{hand}</body>
  {objects}
</worldbody>
<equality><weld body1="hand_target" body2="flange" relpose="0 0 0 1 0 0 0" solref="0.004 1"/></equality>
<actuator>{fingers}</actuator>
</mujoco>"""


# ---- ArUco markers on the fingers (UMI's gripper-width sensing) ----------------------------------
@dataclass(frozen=True)
class FingerMarkerSpec:
    """The two printed ArUco markers, one per finger, that a wrist image measures the gripper width from.

    One description serves both sides, like `CharucoBoardSpec`: the twin renders these markers and the
    detector (mimic.teleop.marker_width) looks for the same dictionary, ids and size, so they never disagree.
    `marker_m` is the side of the black square; each marker is printed on a white plate one cell wider on
    every side (ArUco needs a light quiet zone around the square to find it).
    """

    dictionary: str = "DICT_4X4_50"
    left_id: int = 0
    right_id: int = 1
    marker_m: float = 0.02

    def __post_init__(self) -> None:
        if not hasattr(cv2.aruco, self.dictionary):
            raise ValueError(f"finger markers: unknown ArUco dictionary {self.dictionary!r}")
        n = self.aruco_dictionary().bytesList.shape[0]
        for name in ("left_id", "right_id"):
            if not 0 <= getattr(self, name) < n:
                raise ValueError(
                    f"finger markers: {name} {getattr(self, name)} outside {self.dictionary}'s ids 0..{n - 1}"
                )
        if self.left_id == self.right_id:
            raise ValueError(f"finger markers: left_id and right_id must differ, both are {self.left_id}")
        if not 0.002 <= self.marker_m <= 0.1:
            raise ValueError(f"finger markers: marker_m must be 0.002..0.1 m, got {self.marker_m}")

    def aruco_dictionary(self) -> cv2.aruco.Dictionary:
        return cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))

    @property
    def cells(self) -> int:
        """Cells across the black square: the dictionary's bits plus a one-cell black border each side."""
        return int(self.aruco_dictionary().markerSize) + 2

    @property
    def plate_m(self) -> float:
        """Side of the printed plate: the marker plus a one-cell white quiet zone each side."""
        return self.marker_m * (self.cells + 2) / self.cells

    def image(self, marker_id: int, px_per_cell: int = 16) -> np.ndarray:
        """The printed plate (uint8 grey, rows top to bottom): the marker inside its white quiet zone."""
        side = self.cells * px_per_cell
        marker = cv2.aruco.generateImageMarker(self.aruco_dictionary(), int(marker_id), side, borderBits=1)
        return cv2.copyMakeBorder(
            marker, px_per_cell, px_per_cell, px_per_cell, px_per_cell, cv2.BORDER_CONSTANT, value=255
        )

    def to_json(self) -> dict:
        return asdict(self)


FINGER_BODIES = ("finger_left", "finger_right")
MARKER_THICKNESS_M = 0.0008
MARKER_CLEARANCE_M = 0.0005  # gap between the plate and the finger's surface
MARKER_INSET_M = 0.004  # the plate's inner edge this far outside the gripping face: a held object stays clear


def _body_bbox(model: mujoco.MjModel, body: int) -> tuple[np.ndarray, np.ndarray]:
    """(min, max) corners in the body's frame of the geoms on `body` that touch things (the finger pad): the
    gripping face is where the object is held, whatever visual mesh a look puts around it."""
    pts = []
    for g in range(model.body_geomadr[body], model.body_geomadr[body] + model.body_geomnum[body]):
        if model.geom_contype[g] == 0 and model.geom_conaffinity[g] == 0:
            continue  # visual only
        centre, half = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
        corners = centre + half * np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)])
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.geom_quat[g])
        pts.append(corners @ rot.reshape(3, 3).T + model.geom_pos[g])
    if not pts:
        raise RuntimeError(
            f"finger markers: body {model.body(body).name!r} has no geoms to place a marker on"
        )
    pts = np.concatenate(pts)
    return pts.min(axis=0), pts.max(axis=0)


def _marker_placement(model: mujoco.MjModel, data: mujoco.MjData, body: str, plate_m: float) -> np.ndarray:
    """T_body_marker of the plate on finger `body`: on the finger's side that faces the wrist camera,
    reaching outwards from just outside the finger's gripping face (an object held between the fingers then
    covers neither plate nor its white border), half-way along the finger, turned to face the camera.

    Marker frame = OpenCV's marker frame: x right, y down, z into the plate. Placed from the finger
    pad's bounding box, so every look puts the plate at the same place on the finger."""
    b = model.body(body).id
    lo, hi = _body_bbox(model, b)
    rot_b = data.xmat[b].reshape(3, 3)
    cam = rot_b.T @ (data.cam_xpos[model.camera("wrist").id] - data.xpos[b])  # wrist camera in the body frame
    centre_dir = rot_b.T @ (data.xpos[model.body("hand").id] - data.xpos[b])  # towards the other finger
    side, along = 0, 2  # gripper_xml's fingers slide along y and extend along z; the camera sits off x
    half = plate_m / 2
    p = np.zeros(3)
    inner = lo[1] if centre_dir[1] < 0 else hi[1]  # the gripping face
    p[1] = inner + np.sign(-centre_dir[1]) * (MARKER_INSET_M + half)
    p[along] = (lo[along] + hi[along]) / 2  # mid-finger: the palm's edge stays clear of it at any mount
    p[side] = hi[side] if cam[side] > 0 else lo[side]
    n = cam - p
    n[1] = 0.0  # tilt about the finger's travel axis only: the plate moves within its own plane
    n /= np.linalg.norm(n)
    # offset along the face normal so the tilted plate clears the finger everywhere
    tilt_sin = abs(n[along])
    p[side] += np.sign(cam[side] - p[side]) * (half * tilt_sin + MARKER_CLEARANCE_M)
    z = -n
    x = np.array([0.0, 1.0, 0.0])
    y = np.cross(z, x)
    return homogeneous(p, np.stack([x, y, z], axis=1))


def _marker_asset_xml(name: str, plate_m: float, px: int) -> str:
    """<texture>/<material>/<mesh> of one plate; the texture's pixels are written after compiling."""
    h = plate_m / 2
    verts = " ".join(
        f"{x:.6g} {y:.6g} {z:.6g}"
        for z in (0, MARKER_THICKNESS_M)
        for x, y in ((-h, -h), (h, -h), (h, h), (-h, h))
    )
    texcoord = " ".join(["0 0 1 0 1 1 0 1"] * 2)
    faces = "0 2 1 0 3 2 4 5 6 4 6 7 0 1 5 0 5 4 1 2 6 1 6 5 2 3 7 2 7 6 3 0 4 3 4 7"  # z=0 faces -z
    return (
        f'<texture name="{name}" type="2d" builtin="flat" width="{px}" height="{px}" rgb1="1 1 1"/>'
        f'<material name="{name}" texture="{name}" emission="0.4" specular="0" shininess="0"/>'
        f'<mesh name="{name}" vertex="{verts}" texcoord="{texcoord}" face="{faces}"/>'
    )


def _with_finger_markers(xml: str, spec: FingerMarkerSpec) -> str:
    """`xml` with one marker plate added inside each finger body, found by body name (not by its geoms)."""
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)  # camera poses too
    px = spec.image(spec.left_id).shape[0]
    assets = ""
    for body in FINGER_BODIES:
        name = f"{body}_marker"
        pose = _marker_placement(model, data, body, spec.plate_m)
        geom = (
            f'<geom name="{name}" type="mesh" mesh="{name}" material="{name}" {_pose_attr(pose)} '
            f'contype="0" conaffinity="0" mass="0" group="1"/>'
        )
        pattern = re.compile(rf'<body\b[^>]*\bname="{body}"[^>]*>')
        match = pattern.search(xml)
        if match is None or match.group(0).endswith("/>"):
            raise RuntimeError(f"finger markers: no <body name={body!r}> with children in the handheld scene")
        xml = xml[: match.end()] + geom + xml[match.end() :]
        assets += _marker_asset_xml(name, spec.plate_m, px)
    return _with_assets(xml, assets)


def apply_finger_marker_textures(model: mujoco.MjModel, spec: FingerMarkerSpec) -> None:
    """Print each finger's marker into its compiled texture (before any Renderer is made)."""
    for body, marker_id in zip(FINGER_BODIES, (spec.left_id, spec.right_id), strict=True):
        img = spec.image(marker_id)
        tid = model.texture(f"{body}_marker").id
        h, w, n = model.tex_height[tid], model.tex_width[tid], model.tex_nchannel[tid]
        adr = model.tex_adr[tid]
        model.tex_data[adr : adr + h * w * n] = np.repeat(img.reshape(-1), n)


def _aa(rot: np.ndarray) -> np.ndarray:
    q, aa = _quat(rot), np.zeros(3)
    mujoco.mju_quat2Vel(aa, q, 1.0)
    return aa


def _rot(aa: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    aa = np.asarray(aa, float)
    angle = float(np.linalg.norm(aa))
    mujoco.mju_axisAngle2Quat(q, aa / angle if angle > 1e-12 else np.array([1.0, 0, 0]), angle)
    return _quat_mat(q)


@dataclass
class PoseSample:
    """One reading of the gripper's tracker: sim time (s), TCP position (m), TCP orientation (quat wxyz)."""

    t: float
    position: np.ndarray
    quat: np.ndarray


class HandheldEnv:
    """pick_place with a free-floating gripper: TwinEnv's scene, randomisation and success test, no arm.

    Action = absolute TCP target [position (3, m), axis-angle (3, rad), gripper width (m)]; the hand moves
    there along a straight line (slerp for rotation) over one 10 Hz control period, the fingers through
    the same position servos as the arm twins'. Observations carry the end-effector keys only. Every step
    also returns the high-rate tracker samples (`pose_hz`) and wrist frames (`camera_hz`) taken during it
    (info["pose_samples"], info["frames"]) so capture can be tested with real streams, not grid values.

    `finger_markers` (True or a FingerMarkerSpec; off by default, so existing scenes, seeds and datasets are
    unchanged) prints an ArUco marker on each finger facing the wrist camera, as UMI does to read the
    gripper width from the image; every wrist frame is then also rendered at `marker_image_size` (default
    240x320, the detection frame: a real rig detects on the full-resolution frame, not the policy image)
    into info["marker_frames"].

    `look` dresses the scene as the arm twins' (mimic.sim.mjcf: LAB, the task envs' default, with the arm's
    hand meshes on the gripper; PLAIN for the original capsule scene); it never changes physics.
    """

    task = "pick_place"

    def __init__(
        self,
        seed: int | None = None,
        image_size: tuple[int, int] = (96, 96),
        gripper_like: str = "franka",
        pose_hz: float = 100.0,
        camera_hz: float = 10.0,
        randomization=None,
        finger_markers: bool | FingerMarkerSpec = False,
        marker_image_size: tuple[int, int] = (240, 320),
        look: Look = LAB,
    ) -> None:
        from mimic.sim.env import _OBJECTS, Randomization, _dressed

        self.spec = get_spec(gripper_like)  # the gripper's dimensions (width range) come from this arm's hand
        self.finger_markers = FingerMarkerSpec() if finger_markers is True else (finger_markers or None)
        self.marker_image_size = tuple(marker_image_size)
        self.look = look
        xml = _handheld_xml(self.spec, _dressed(_OBJECTS["pick_place"], look), look)
        if self.finger_markers is not None:
            xml = _with_finger_markers(xml, self.finger_markers)
        self.model = mujoco.MjModel.from_xml_string(xml)
        if self.finger_markers is not None:
            apply_finger_marker_textures(self.model, self.finger_markers)
            glob = self.model.vis.global_  # room for the detection frame (read when a renderer is made)
            glob.offheight = max(glob.offheight, self.marker_image_size[0])
            glob.offwidth = max(glob.offwidth, self.marker_image_size[1])
        self.data = mujoco.MjData(self.model)
        self.image_size = tuple(image_size)
        self.randomization = randomization or Randomization()
        self.control_hz = 10.0
        self.n_substeps = int(round(1.0 / (self.control_hz * self.model.opt.timestep)))
        self.pose_every = max(1, int(round(1.0 / (pose_hz * self.model.opt.timestep))))
        self.camera_every = max(1, int(round(1.0 / (camera_hz * self.model.opt.timestep))))
        self.max_steps = 160
        self._rng = np.random.default_rng(seed)
        self.tcp_site = self.model.site("tcp").id
        self.goal_site = self.model.site("goal").id
        self.finger_qpos = np.array([self.model.joint(f"finger_{s}").qposadr[0] for s in ("left", "right")])
        self._cube_adr = self.model.joint("cube").qposadr[0]
        # What TwinEnv._randomize reads: reused so every knob and the draw order stay TwinEnv's
        self.task = "pick_place"
        self._cam0, self._cam_quat0 = self.model.cam_pos.copy(), self.model.cam_quat.copy()
        self._light0, self._light_dir0 = self.model.light_diffuse.copy(), self.model.light_dir.copy()
        self._table = self.model.geom("table").id
        self._table_rgba0 = self.model.geom_rgba[self._table].copy()
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._hand_adr = self.model.joint("hand").qposadr[0]
        for body in (
            "hand",
            "finger_left",
            "finger_right",
        ):  # the weld holds the pose, not a fight with gravity
            self.model.body_gravcomp[self.model.body(body).id] = 1.0
        mujoco.mj_forward(self.model, self.data)
        # TCP in the flange frame: fixed by the gripper model
        self.flange_tcp = np.linalg.inv(body_pose(self.model, self.data, "flange")) @ homogeneous(
            self.data.site_xpos[self.tcp_site], self.data.site_xmat[self.tcp_site].reshape(3, 3)
        )
        self.nominal_camera_mount = self.camera_mount()  # before any reset jitters the camera
        self.t = 0

    # --- pose of the hand ------------------------------------------------------------------------
    def _set_tcp(self, pos: np.ndarray, rot: np.ndarray, teleport: bool = False) -> None:
        """Move the hand's target so the TCP goes to (pos, rot); `teleport` also places the gripper there."""
        flange = homogeneous(pos, rot) @ np.linalg.inv(self.flange_tcp)
        self.data.mocap_pos[0] = flange[:3, 3]
        self.data.mocap_quat[0] = _quat(flange[:3, :3])
        if teleport:
            self.data.qpos[self._hand_adr : self._hand_adr + 3] = flange[:3, 3]
            self.data.qpos[self._hand_adr + 3 : self._hand_adr + 7] = _quat(flange[:3, :3])
            self.data.qvel[self.model.joint("hand").dofadr[0] :][:6] = 0.0

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(position, 3x3 rotation) of the TCP now."""
        rot = self.data.site_xmat[self.tcp_site].reshape(3, 3).copy()
        return self.data.site_xpos[self.tcp_site].copy(), rot

    def camera_mount(self) -> np.ndarray:
        """T_tcp_cam (OpenCV) of the wrist camera now (Randomization.camera_pos_m jitters it per episode)."""
        p, r = self.tcp_pose()
        return np.linalg.inv(homogeneous(p, r)) @ camera_pose_cv(self.model, self.data, "wrist")

    # --- task ------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None, tcp_start: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """TwinEnv pick_place's draws, in its order (same seed, same cube, goal, colours, light, camera
        jitter); then the hand's start above the table, fingers down, drawn after them."""
        from mimic.sim.env import CUBE_HALF, TwinEnv

        if seed is not None:
            self._rng = np.random.default_rng(seed)
        r, m, d = self._rng, self.model, self.data
        mujoco.mj_resetData(m, d)
        TwinEnv._randomize(self)  # type: ignore[arg-type]  (reads only the attributes set in __init__)
        cube = np.r_[TwinEnv._spawn(self, [0.45, -0.15], [0.6, 0.0]), CUBE_HALF]  # type: ignore[arg-type]
        goal = np.r_[TwinEnv._spawn(self, [0.4, 0.08], [0.55, 0.2]), 0.001]  # type: ignore[arg-type]
        yaw = float(TwinEnv._spawn(self, [-np.pi / 4], [np.pi / 4])[0])  # type: ignore[arg-type]
        d.qpos[self._cube_adr : self._cube_adr + 7] = [*cube, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
        m.site_pos[self.goal_site] = goal
        start = (
            tcp_start
            if tcp_start is not None
            else np.array([r.uniform(0.35, 0.45), r.uniform(-0.1, 0.1), r.uniform(0.2, 0.3)])
        )
        hand_yaw = r.uniform(-0.3, 0.3)
        c, s = np.cos(hand_yaw), np.sin(hand_yaw)
        self.home_rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ np.diag([1.0, -1.0, -1.0])
        self._set_tcp(start, self.home_rot, teleport=True)
        self._target = (start.copy(), self.home_rot.copy())
        d.qpos[self.finger_qpos] = self.spec.gripper_max / 2
        d.ctrl[:] = self.spec.gripper_max / 2
        mujoco.mj_forward(m, d)
        self.t = self._substep = 0
        return self._obs()

    def object_state(self) -> np.ndarray:
        goal = self.model.site_pos[self.goal_site].copy()
        return np.concatenate([self.data.qpos[self._cube_adr : self._cube_adr + 7], goal])

    def gripper_width(self) -> float:
        return float(self.data.qpos[self.finger_qpos].sum())

    def success(self) -> bool:
        from mimic.sim.env import CUBE_HALF

        cube = self.data.qpos[self._cube_adr : self._cube_adr + 3]
        goal = self.model.site_pos[self.goal_site]
        return bool(
            np.linalg.norm(cube[:2] - goal[:2]) < 0.03
            and cube[2] < CUBE_HALF + 0.005
            and self.gripper_width() > 0.045
        )

    def _obs(self) -> dict[str, np.ndarray]:
        p, r = self.tcp_pose()
        return {
            "robot0_eef_pos": p,
            "robot0_eef_rot_axis_angle": _aa(r),
            "robot0_gripper_width": np.array([self.gripper_width()]),
            "object_state": self.object_state(),
            "camera1_rgb": self.render("wrist", self.image_size),
        }

    def _pose_sample(self) -> PoseSample:
        p, r = self.tcp_pose()
        return PoseSample(float(self.data.time), p, _quat(r))

    def step(self, action: np.ndarray):
        """Move the hand to the TCP target over one control period; returns gym's 5-tuple.

        info: success, pose_samples (PoseSample list at pose_hz), widths [(t, m)] at pose_hz and
        frames [(t, wrist image)] at camera_hz, all stamped with sim time at capture; with finger markers
        also marker_frames [(t, wrist image at marker_image_size)], the same instants as frames, and
        marker_widths [(t, m)], the true width at those instants (fingers can close within one frame).
        """
        a = np.asarray(action, float).reshape(-1)
        if a.shape[0] != 7:
            raise ValueError(
                f"handheld: action has {a.shape[0]} values, expected 7 (tcp pos, axis-angle, width)"
            )
        p0, r0 = self._target  # interpolate target to target: the weld's small lag never accumulates
        r1 = _rot(a[3:6])
        self._target = (a[:3].copy(), r1)
        q0, q1 = _quat(r0), _quat(r1)
        if np.dot(q0, q1) < 0:
            q1 = -q1
        self.data.ctrl[:] = np.clip(a[6], self.spec.gripper_min, self.spec.gripper_max) / 2
        poses, widths, frames, marker_frames, marker_widths = [], [], [], [], []
        for i in range(1, self.n_substeps + 1):
            f = i / self.n_substeps
            q = (1 - f) * q0 + f * q1  # nlerp: steps are small, so it matches slerp closely
            self._set_tcp((1 - f) * p0 + f * a[:3], _quat_mat(q / np.linalg.norm(q)))
            mujoco.mj_step(self.model, self.data)
            self._substep += 1  # global count: sample rates need not divide the control period
            if self._substep % self.pose_every == 0:
                mujoco.mj_kinematics(self.model, self.data)
                poses.append(self._pose_sample())
                widths.append((float(self.data.time), self.gripper_width()))
            if self._substep % self.camera_every == 0:
                mujoco.mj_forward(self.model, self.data)
                frames.append((float(self.data.time), self.render("wrist", self.image_size)))
                if self.finger_markers is not None:
                    marker_frames.append(
                        (float(self.data.time), self.render("wrist", self.marker_image_size))
                    )
                    marker_widths.append((float(self.data.time), self.gripper_width()))
        mujoco.mj_forward(self.model, self.data)
        self.t += 1
        ok = self.success()
        info = {"success": ok, "pose_samples": poses, "widths": widths, "frames": frames}
        if self.finger_markers is not None:
            info["marker_frames"], info["marker_widths"] = marker_frames, marker_widths
        return self._obs(), float(ok), ok, self.t >= self.max_steps, info

    def place_hand(self, pos: np.ndarray, rot: np.ndarray) -> None:
        """Put the TCP at (pos, 3x3 rot) at once, the hand's target with it: for still renders at chosen poses."""
        self._set_tcp(np.asarray(pos, float), np.asarray(rot, float), teleport=True)
        self._target = (np.asarray(pos, float).copy(), np.asarray(rot, float).copy())
        mujoco.mj_forward(self.model, self.data)

    def set_gripper_width(self, width_m: float) -> None:
        """Place both fingers at `width_m` (and hold them there): for sweeps over the opening range."""
        w = float(np.clip(width_m, self.spec.gripper_min, self.spec.gripper_max))
        self.data.qpos[self.finger_qpos] = w / 2
        self.data.ctrl[:] = w / 2
        mujoco.mj_forward(self.model, self.data)

    def wrist_camera_matrix(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The wrist camera's true 3x3 intrinsics at (height, width) `size` (default marker_image_size)."""
        return true_intrinsics(self.model, "wrist", size or self.marker_image_size)

    def render(self, camera: str = "wrist", size: tuple[int, int] = (96, 96)) -> np.ndarray:
        h, w = size
        if (h, w) not in self._renderers:
            self._renderers[(h, w)] = mujoco.Renderer(self.model, height=h, width=w)
        rend = self._renderers[(h, w)]
        rend.update_scene(self.data, camera=camera)
        return rend.render().copy()

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


class HandheldExpert:
    """The arm twins' scripted pick-place plan (mimic.sim.expert.Expert's waypoints) executed by a hand, no IK.

    Position moves at the same bounded speed; orientation turns at most `max_turn_rad_s` like a wrist.

    `approach_error_m` > 0 makes the hand approach as a person does: it hovers beside the cube by a horizontal
    offset drawn per episode (0.5-1 x approach_error_m, any direction; `reset(rng)`) and takes that offset out
    while it descends, in proportion to the height still to go, so the grasp itself is exact. The demos then
    hold states off the straight approach together with the motion that corrects them, which a policy whose
    own approach ends beside the cube needs to have seen (a perfect approach teaches only to descend straight).
    """

    def __init__(
        self,
        env: HandheldEnv,
        speed_m_s: float = 0.3,
        max_turn_rad_s: float = 1.5,
        approach_error_m: float = 0.0,
    ) -> None:
        from mimic.sim.expert import GRASP_Z_M, HOVER_M, Expert

        if approach_error_m < 0:
            raise ValueError(f"approach_error_m must be >= 0, got {approach_error_m}")
        self.env, self.max_turn, self.approach_error_m = env, max_turn_rad_s, float(approach_error_m)
        self._descent_m = HOVER_M - GRASP_Z_M  # the plan's descent from the hover to the grasp
        self._plan = Expert.__new__(
            Expert
        )  # only its waypoint planner (_goal) is used: no arm to solve IK for
        self._plan.env, self._plan.speed = env, speed_m_s
        self.reset()

    def reset(self, rng: np.random.Generator | None = None) -> None:
        """A new episode; `rng` draws the approach offset (none without one, or with approach_error_m 0)."""
        self._plan.reset()
        self.r_cmd: np.ndarray | None = None
        self.approach_offset = np.zeros(3)
        if rng is not None and self.approach_error_m > 0:
            angle, size = rng.uniform(0, 2 * np.pi), rng.uniform(0.5, 1.0) * self.approach_error_m
            self.approach_offset = size * np.array([np.cos(angle), np.sin(angle), 0.0])

    def _approach(self, p_goal: np.ndarray) -> np.ndarray:
        """The phase goal with the episode's approach offset: whole at the hover, shrinking to none at the
        grasp height as the hand descends (pick_place phases 0 and 1)."""
        plan = self._plan
        if plan.phase == 0:
            return p_goal + self.approach_offset
        if plan.phase == 1:
            left = np.clip((plan.p_cmd[2] - p_goal[2]) / self._descent_m, 0.0, 1.0)
            return p_goal + left * self.approach_offset
        return p_goal

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        plan, env = self._plan, self.env
        if plan.p_cmd is None:
            plan.p_cmd = obs["robot0_eef_pos"].copy()
            plan._home_r = env.home_rot
            plan._grasp_r = env.home_rot
            self.r_cmd = _rot(obs["robot0_eef_rot_axis_angle"])
        p_goal, rot, grip, dwell = plan._goal(obs)
        if self.approach_offset.any():
            p_goal = self._approach(p_goal)
        slow = plan.phase in (1, 5)  # vertical approaches, as the arm expert
        step = (plan.speed / 3 if slow else plan.speed) / env.control_hz
        delta = p_goal - plan.p_cmd
        dist = np.linalg.norm(delta)
        plan.p_cmd = p_goal.copy() if dist <= step else plan.p_cmd + delta / dist * step
        turn = _aa(rot @ self.r_cmd.T)
        ang = float(np.linalg.norm(turn))
        lim = self.max_turn / env.control_hz
        self.r_cmd = (_rot(turn * min(1.0, lim / ang)) if ang > 1e-9 else np.eye(3)) @ self.r_cmd
        settled = np.linalg.norm(obs["robot0_eef_pos"] - p_goal) < 0.006 and ang < 0.02
        if dist <= step and settled:
            if plan.wait >= dwell:
                plan.phase, plan.wait = plan.phase + 1, 0
            else:
                plan.wait += 1
        return np.concatenate([plan.p_cmd, _aa(self.r_cmd), [grip]])


def wave_capture(
    env: HandheldEnv,
    duration_s: float = 6.0,
    amplitude_m: float = 0.015,
    freqs_hz: tuple[float, ...] = (0.45, 0.8),
    seed: int = 0,
):
    """The hand sways sideways above the table (a sum of sines: one clear correlation peak) for timing
    calibration; returns capture-time-stamped (t_pose [n], positions [n, 3], t_frames [m], frames [m]).
    """
    obs = env.reset(seed=seed, tcp_start=np.array([0.5, -0.05, 0.22]))
    start, aa = obs["robot0_eef_pos"].copy(), obs["robot0_eef_rot_axis_angle"].copy()
    t_pose, pos, t_frames, frames = [], [], [], []
    for k in range(int(round(duration_s * env.control_hz))):
        t = (k + 1) / env.control_hz
        offset = amplitude_m * sum(np.sin(2 * np.pi * f * t) for f in freqs_hz) / len(freqs_hz)
        _, _, _, _, info = env.step(np.concatenate([start + [0.0, offset, 0.0], aa, [env.spec.gripper_max]]))
        t_pose += [s.t for s in info["pose_samples"]]
        pos += [s.position for s in info["pose_samples"]]
        t_frames += [t for t, _ in info["frames"]]
        frames += [img for _, img in info["frames"]]
    return np.array(t_pose), np.array(pos), np.array(t_frames), np.stack(frames)


def demo_video(out_path: str, seed: int = 0, size: tuple[int, int] = (240, 320)) -> bool:
    """One scripted handheld episode as scene | wrist side by side: .mp4 video or .png strip; returns success."""
    from pathlib import Path

    from mimic.sim.show import write_expert_episode

    out = Path(out_path)
    if out.suffix.lower() not in (".mp4", ".png"):
        raise ValueError(f"{out}: use a .mp4 or .png file name")
    env = HandheldEnv(seed=seed)
    try:
        ok, _ = write_expert_episode(env, HandheldExpert(env), seed, size, out)
    finally:
        env.close()
    return ok
