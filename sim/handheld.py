"""UMI-style scenes on the twin: a ChArUco board to calibrate against, and a free-floating handheld gripper.

Board: a thin textured slab whose body frame *is* OpenCV's board frame (origin at the first square's
outer corner, x along the squares_x side, y along squares_y, z into the board), so poses reported by
PnP compare directly with MuJoCo's. The texture is written into the compiled model (no image file),
row 0 at texture coordinate v = 0, which the detector reads unmirrored.

Intrinsics truth: MuJoCo renders a pinhole with square pixels, fy = fx = (H / 2) / tan(fovy / 2), and the
principal point at the image centre, (W - 1) / 2 and (H - 1) / 2 in OpenCV's pixel-centre convention.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from calibration.charuco import CharucoBoardSpec  # noqa: E402
from robots.specs import get_spec  # noqa: E402
from sim.mjcf import scene_xml  # noqa: E402

# MuJoCo cameras look along -z with y up; OpenCV's look along +z with y down.
MJ_TO_CV = np.diag([1.0, -1.0, -1.0])
BOARD_PX_PER_M = 4000.0  # texture resolution: 0.25 mm per texel, finer than any render we make


# ---- small pose helpers ------------------------------------------------------------------------
def _quat(rot: np.ndarray) -> np.ndarray:
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(rot, dtype=np.float64).reshape(-1))
    return q


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


def board_center(board: CharucoBoardSpec, pose: np.ndarray) -> np.ndarray:
    bw, bh = board.size_m
    m = board.margin_m
    return (pose @ np.array([bw / 2 - m, bh / 2 - m, 0, 1.0]))[:3]


def random_views(centre: np.ndarray, n: int, seed: int = 0, distance_m: tuple[float, float] = (0.3, 0.55),
                 max_tilt_deg: float = 40.0, max_roll_rad: float = np.pi) -> list[np.ndarray]:
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
def board_asset_xml(board: CharucoBoardSpec, name: str = "charuco") -> str:
    """<texture>/<material>/<mesh> for the board; the texture's pixels are filled by `apply_board_texture`."""
    img_h, img_w = board.image(BOARD_PX_PER_M).shape
    bw, bh = board.size_m
    m = board.margin_m
    x0, x1, y0, y1, z1 = -m, bw - m, -m, bh - m, 0.003
    verts = " ".join(f"{x} {y} {z}" for z in (0, z1) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    texcoord = " ".join(["0 0 1 0 1 1 0 1"] * 2)
    faces = "0 2 1 0 3 2 4 5 6 4 6 7 0 1 5 0 5 4 1 2 6 1 6 5 2 3 7 2 7 6 3 0 4 3 4 7"  # face z=0 looks along -z
    return (f'<texture name="{name}" type="2d" builtin="flat" width="{img_w}" height="{img_h}" rgb1="1 1 1"/>'
            f'<material name="{name}" texture="{name}" emission="0.7" specular="0" shininess="0"/>'
            f'<mesh name="{name}" vertex="{verts}" texcoord="{texcoord}" face="{faces}"/>')


def board_body_xml(pose: np.ndarray, name: str = "charuco") -> str:
    return (f'<body name="{name}" {_pose_attr(pose)}><geom name="{name}" type="mesh" mesh="{name}" '
            f'material="{name}" contype="0" conaffinity="0" mass="0.1"/></body>')


def apply_board_texture(model: mujoco.MjModel, board: CharucoBoardSpec, name: str = "charuco") -> None:
    """Write the board's printed image into the compiled model's texture (before any Renderer is made)."""
    img = board.image(BOARD_PX_PER_M)
    tid = model.texture(name).id
    h, w, n = model.tex_height[tid], model.tex_width[tid], model.tex_nchannel[tid]
    adr = model.tex_adr[tid]
    model.tex_data[adr:adr + h * w * n] = np.repeat(img.reshape(-1), n)


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

    def __init__(self, board: CharucoBoardSpec | None = None, fovy_deg: float = 55.0,
                 size: tuple[int, int] = (480, 640), board_pose: np.ndarray | None = None) -> None:
        self.board = board or CharucoBoardSpec()
        self.size = tuple(size)
        # Face up on the table: board z (into the board) points down.
        self.board_pose = board_pose if board_pose is not None else homogeneous([0.35, 0.1, 0.001],
                                                                                np.diag([1.0, -1, -1]))
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

    def random_views(self, n: int, seed: int = 0, distance_m: tuple[float, float] = (0.3, 0.55),
                     max_tilt_deg: float = 40.0) -> list[np.ndarray]:
        return random_views(self.board_center(), n, seed, distance_m, max_tilt_deg)

    def close(self) -> None:
        self._renderer.close()


class ArmBoardScene:
    """An arm twin (same MJCF as sim.make_env, wrist camera included) with a board on its table.

    Hand-eye data comes from here: joint configurations set on the arm, the flange pose read back from
    MuJoCo (what the robot would report) and the wrist camera's render of the board.
    """

    def __init__(self, arm: str, board: CharucoBoardSpec | None = None, size: tuple[int, int] = (480, 640),
                 board_pose: np.ndarray | None = None) -> None:
        self.spec = get_spec(arm)
        self.board = board or CharucoBoardSpec()
        self.size = tuple(size)
        self.board_pose = board_pose if board_pose is not None else homogeneous([0.36, 0.12, 0.001],
                                                                                np.diag([1.0, -1, -1]))
        xml = _with_assets(scene_xml(self.spec, board_body_xml(self.board_pose)), board_asset_xml(self.board))
        h, w = self.size
        xml = xml.replace('offwidth="640" offheight="480"', f'offwidth="{max(w, 640)}" offheight="{max(h, 480)}"')
        self.model = mujoco.MjModel.from_xml_string(xml)
        apply_board_texture(self.model, self.board)
        self.data = mujoco.MjData(self.model)
        self.arm_qpos = np.arange(self.spec.dof)
        self._flange = self.model.site("flange").id
        self.tcp_site = self.model.site("tcp").id  # with model/spec/arm_qpos: what sim.expert.Expert's IK reads
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
        from sim.expert import Expert

        flange = t_world_cam @ np.linalg.inv(mount_guess)
        self.set_joints(self.spec.home)
        flange_tcp = np.linalg.inv(self.flange_pose()) @ homogeneous(
            self.data.site_xpos[self.tcp_site], self.data.site_xmat[self.tcp_site].reshape(3, 3))
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
