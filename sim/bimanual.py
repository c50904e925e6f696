"""Bimanual twins of bimanual_pick_place (mimic.sim.tasks.bimanual_pick_place): two arms, or two handheld grippers.

- `BimanualTwinEnv`: two arm twins of one spec side by side at one table (bases at `BASE_POSES`), action =
  [q0 (dof), gripper0, q1 (dof), gripper1] absolute joint targets, what two hardware backends accept.
- `BimanualHandheldEnv`: two free-floating handheld grippers (the arms' own hand, wrist camera included)
  in the same scene, action = [tcp0 pos (3), axis-angle (3), width, tcp1 pos, axis-angle, width]; the
  UMI-style capture rig for demonstrations.

Both are built with MjSpec attach, each arm or gripper under the prefix `robot<i>_`, from the same building
blocks as the single twins (mimic.robots.arm_mjcf's arm and hand, mimic.sim.mjcf's servos), so a pose here is
a pose on the single twins and on the hardware. Observations carry UMI's bimanual keys in the world (table)
frame: `robot<i>_eef_pos`, `robot<i>_eef_rot_axis_angle`, `robot<i>_gripper_width`, (arm twin)
`robot<i>_joint_pos`, `object_state` [20] and, when asked for, `camera<i>_rgb` (gripper i's wrist camera).
Arm `i`'s own frame (what its IK and driver use) is world = BASE_POSES[i] @ base.

Experts: each gripper runs the single handheld expert's pick-place plan (mimic.sim.handheld.HandheldExpert)
on its half of the task; the arm expert turns each gripper's TCP targets into joint targets by IK in that
arm's base frame. Measured with `python -m mimic.sim.bimanual --episodes 100` (seeds 0..99) in docs/bimanual.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from mimic.robots.arm import ArmState, CommandGuard  # noqa: E402
from mimic.robots.arm_mjcf import COMPILER, arm_model_xml, gripper_xml  # noqa: E402
from mimic.robots.eef_control import EefChunkController, tcp_pose_row  # noqa: E402
from mimic.robots.ik import IKSolver, tool_down  # noqa: E402
from mimic.robots.specs import get_spec  # noqa: E402
from mimic.sim.handheld import HandheldExpert, _aa, _quat, _quat_mat, _rot, homogeneous  # noqa: E402
from mimic.sim.mjcf import actuators_xml  # noqa: E402
from mimic.sim.tasks.bimanual_pick_place import (  # noqa: E402
    BASE_POSES,
    MAX_STEPS,
    N_GRIPPERS,
    Scene,
    gripper_view,
    objects_xml,
    start_poses,
)
from mimic.sim.twin import run_paced  # noqa: E402

TASK = "bimanual_pick_place"
CAMERA_KEYS = tuple(f"camera{i}_rgb" for i in range(N_GRIPPERS))  # gripper i's wrist camera, UMI's naming
STARTS = ("home", "handheld")  # where an arm episode begins: the spec's home, or a demo-like TCP start pose


def start_tcp_rows(seed: int) -> list[np.ndarray]:
    """The episode's TCP start pose row [pos, axis-angle] per gripper (table frame), drawn like the handheld
    demos' starts from its own stream ([seed, 7]), so it does not shift the scene's draws."""
    return [
        np.concatenate([pos, _aa(tool_down(yaw))])
        for pos, yaw in start_poses(np.random.default_rng([seed, 7]))
    ]


def _scene_spec() -> mujoco.MjSpec:
    """Table, light, a scene camera that sees both grippers, and the task's objects."""
    return mujoco.MjSpec.from_string(f"""<mujoco model="{TASK}">
{COMPILER}
<option timestep="0.002" integrator="implicitfast" cone="elliptic" impratio="10"/>
<visual><quality shadowsize="0"/><global offwidth="640" offheight="480"/></visual>
<worldbody>
  <light name="key" pos="0.5 -0.5 2" dir="0 0.3 -1" directional="true" castshadow="false" diffuse="0.8 0.8 0.8"/>
  <geom name="table" type="box" pos="0.4 0 -0.02" size="0.7 0.8 0.02" rgba="0.6 0.5 0.4 1"/>
  <camera name="scene" pos="1.35 0 0.9" xyaxes="0 1 0 -0.55 0 0.835" fovy="55"/>
  {objects_xml()}
</worldbody>
</mujoco>""")


def _attach(parent: mujoco.MjSpec, child_xml: str, i: int, pose: np.ndarray) -> None:
    child = mujoco.MjSpec.from_string(child_xml)
    frame = parent.worldbody.add_frame(pos=pose[:3, 3].tolist(), quat=_quat(pose[:3, :3]).tolist())
    parent.attach(child, frame=frame, prefix=f"robot{i}_")


def _compile(parent: mujoco.MjSpec, what: str) -> mujoco.MjModel:
    try:
        return parent.compile()
    except ValueError as e:  # generated XML: a failure is a bug here, named for the reader
        raise RuntimeError(f"{what}: generated bimanual MJCF failed to compile: {e}") from None


def build_two_arm_model(arm: str) -> mujoco.MjModel:
    """Two arm twins of `arm` (with their servos) at BASE_POSES, prefixed robot0_ / robot1_."""
    spec = get_spec(arm)
    arm_xml = arm_model_xml(spec)
    head, _, _ = arm_xml.rpartition("</mujoco>")
    child_xml = f"{head}<actuator>{actuators_xml(spec)}</actuator></mujoco>"
    parent = _scene_spec()
    for i in range(N_GRIPPERS):
        _attach(parent, child_xml, i, BASE_POSES[i])
        # the first link never touches the table it is bolted to (mimic.sim.mjcf.scene_xml does the same)
        parent.add_exclude(bodyname1="world", bodyname2=f"robot{i}_link1")
    return _compile(parent, f"two {arm} arms")


def _handheld_child_xml(spec) -> str:
    """One handheld gripper: the arm's hand on a free body welded to a mocap target (mimic.sim.handheld)."""
    half = spec.gripper_max / 2
    fingers = "".join(
        f'<position name="act_finger_{s}" joint="finger_{s}" kp="300" ctrlrange="0 {half}" forcerange="-15 15"/>'
        for s in ("left", "right")
    )
    return f"""<mujoco>{COMPILER}<worldbody>
  <body name="hand_target" mocap="true" pos="0.45 0 0.4"/>
  <body name="flange" pos="0.45 0 0.4" gravcomp="1"><freejoint name="hand"/>{gripper_xml(spec)}</body>
</worldbody>
<equality><weld body1="hand_target" body2="flange" relpose="0 0 0 1 0 0 0" solref="0.004 1"/></equality>
<actuator>{fingers}</actuator></mujoco>"""


def build_two_handheld_model(gripper_like: str = "franka") -> mujoco.MjModel:
    """Two free handheld grippers (the hand of `gripper_like`'s twin), prefixed robot0_ / robot1_."""
    spec = get_spec(gripper_like)
    parent = _scene_spec()
    for i in range(N_GRIPPERS):
        _attach(parent, _handheld_child_xml(spec), i, BASE_POSES[i])
    return _compile(parent, f"two {gripper_like} handheld grippers")


class _Renderers:
    """Offscreen renderers per image size (EGL), shared by both envs."""

    def __init__(self) -> None:
        self._by_size: dict[tuple[int, int], mujoco.Renderer] = {}

    def render(self, model, data, camera: str, size: tuple[int, int]) -> np.ndarray:
        h, w = size
        if (h, w) not in self._by_size:
            self._by_size[(h, w)] = mujoco.Renderer(model, height=h, width=w)
        r = self._by_size[(h, w)]
        r.update_scene(data, camera=camera)
        return r.render().copy()

    def close(self) -> None:
        for r in self._by_size.values():
            r.close()
        self._by_size.clear()


def _camera_name(camera: str) -> str:
    """ "scene", "wrist0"/"wrist1" (or the store keys camera0_rgb/camera1_rgb) -> the model's camera."""
    if camera in CAMERA_KEYS:
        return f"robot{CAMERA_KEYS.index(camera)}_wrist"
    if camera.startswith("wrist") and camera[5:].isdigit() and int(camera[5:]) < N_GRIPPERS:
        return f"robot{camera[5:]}_wrist"
    if camera == "scene":
        return camera
    raise ValueError(f"bimanual: unknown camera {camera!r} (scene, wrist0, wrist1)")


class _BimanualBase:
    """What both envs share: the scene's draws, the TCP reading, cameras and success."""

    task = TASK

    def _setup(self, model: mujoco.MjModel, seed, cameras, image_size) -> None:
        self.model, self.data = model, mujoco.MjData(model)
        self.scene = Scene(model)
        self.cameras = tuple(cameras)
        for c in self.cameras:
            if c not in CAMERA_KEYS:
                raise ValueError(f"bimanual: cameras must be among {CAMERA_KEYS}, got {c!r}")
        self.image_size = tuple(image_size)
        self.control_hz = 10.0
        self.n_substeps = int(round(1.0 / (self.control_hz * model.opt.timestep)))
        self.max_steps = MAX_STEPS
        self._rng = np.random.default_rng(seed)
        self.tcp_site = [model.site(f"robot{i}_tcp").id for i in range(N_GRIPPERS)]
        self.finger_qpos = [
            np.array([model.joint(f"robot{i}_finger_{s}").qposadr[0] for s in ("left", "right")])
            for i in range(N_GRIPPERS)
        ]
        self._renderers = _Renderers()
        self.t = 0

    def tcp_pose(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(position, 3x3 rotation) of gripper `i`'s TCP in the world frame now."""
        return self.data.site_xpos[self.tcp_site[i]].copy(), self.data.site_xmat[self.tcp_site[i]].reshape(
            3, 3
        )

    def gripper_width(self, i: int) -> float:
        return float(self.data.qpos[self.finger_qpos[i]].sum())

    def object_state(self) -> np.ndarray:
        return self.scene.object_state(self.data)

    def success(self) -> bool:
        """Both cubes placed on their goals and both grippers open (released)."""
        return all(
            self.scene.placed(self.data, i) and self.gripper_width(i) > 0.045 for i in range(N_GRIPPERS)
        )

    def _eef_obs(self) -> dict[str, np.ndarray]:
        obs: dict[str, np.ndarray] = {}
        for i in range(N_GRIPPERS):
            p, r = self.tcp_pose(i)
            obs[f"robot{i}_eef_pos"] = p
            obs[f"robot{i}_eef_rot_axis_angle"] = _aa(r)
            obs[f"robot{i}_gripper_width"] = np.array([self.gripper_width(i)])
        obs["object_state"] = self.object_state()
        for key in self.cameras:
            obs[key] = self.render(key, self.image_size)
        return obs

    def render(self, camera: str = "scene", size: tuple[int, int] = (96, 96)) -> np.ndarray:
        """uint8 HxWx3 from "scene", "wrist0"/"wrist1" or a store key camera0_rgb/camera1_rgb."""
        return self._renderers.render(self.model, self.data, _camera_name(camera), size)

    def close(self) -> None:
        self._renderers.close()


class BimanualTwinEnv(_BimanualBase):
    """Two arm twins of `arm` at one table, gym-style, 10 Hz control with physics sub-steps.

    A joint target further than dq_max per control period from the arm's last one is clipped to that step
    (`velocity_clips` counts them), as mimic.sim.env.TwinEnv does; a non-finite action is refused.
    """

    def __init__(
        self,
        arm: str = "xarm7",
        seed: int | None = None,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = (96, 96),
    ) -> None:
        self.spec = get_spec(arm)
        self._setup(build_two_arm_model(arm), seed, cameras, image_size)
        m, names = self.model, self.spec.joint_names
        self.arm_qpos = [
            np.array([m.joint(f"robot{i}_{j}").qposadr[0] for j in names]) for i in range(N_GRIPPERS)
        ]
        self.arm_ctrl = [
            np.array([m.actuator(f"robot{i}_act_{j}").id for j in names]) for i in range(N_GRIPPERS)
        ]
        self.finger_ctrl = [
            np.array([m.actuator(f"robot{i}_act_finger_{s}").id for s in ("left", "right")])
            for i in range(N_GRIPPERS)
        ]
        self.base_poses = BASE_POSES
        self._last_q = [np.asarray(self.spec.home, float).copy() for _ in range(N_GRIPPERS)]
        self.velocity_clips = 0

    @property
    def action_dim(self) -> int:
        return N_GRIPPERS * (self.spec.dof + 1)

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        m, d, spec = self.model, self.data, self.spec
        mujoco.mj_resetData(m, d)
        for i in range(N_GRIPPERS):
            d.qpos[self.arm_qpos[i]] = spec.home
            d.ctrl[self.arm_ctrl[i]] = spec.home
            d.qpos[self.finger_qpos[i]] = spec.gripper_max / 2
            d.ctrl[self.finger_ctrl[i]] = spec.gripper_max / 2
            self._last_q[i] = np.asarray(spec.home, float).copy()
        self.scene.randomize(self._rng)
        self.scene.reset_objects(d, self._rng)
        mujoco.mj_forward(m, d)
        self.t = 0
        return self._obs()

    def place_tcps(self, rows: list[np.ndarray]) -> None:
        """Put each arm at rest with its TCP at rows[i] ([pos, axis-angle], table frame), solved by IK from
        home: how a twin episode starts at a demo-like pose. ValueError naming the arm if one is out of reach."""
        ik = IKSolver.for_arm(self.spec)
        for i, row in enumerate(rows):
            target = np.linalg.inv(self.base_poses[i]) @ homogeneous(row[:3], _rot(row[3:6]))
            sol = ik.solve(np.asarray(self.spec.home, float), target)
            if not sol.within(1e-3, 1e-2):
                raise ValueError(
                    f"bimanual {self.spec.name} {i}: start pose {np.round(row[:3], 3).tolist()} is out of reach"
                )
            self.data.qpos[self.arm_qpos[i]] = sol.q
            self.data.qvel[self.arm_qpos[i]] = 0.0
            self.data.ctrl[self.arm_ctrl[i]] = sol.q
            self._last_q[i] = np.asarray(sol.q, float).copy()
        mujoco.mj_forward(self.model, self.data)

    def _obs(self) -> dict[str, np.ndarray]:
        obs = self._eef_obs()
        for i in range(N_GRIPPERS):
            obs[f"robot{i}_joint_pos"] = self.data.qpos[self.arm_qpos[i]].copy()
        return obs

    def step(self, action: np.ndarray):
        """Both arms' joint targets and gripper widths for one control period; gym's 5-tuple."""
        spec, n = self.spec, self.spec.dof + 1
        a = np.asarray(action, float).reshape(-1)
        if a.shape[0] != self.action_dim:
            raise ValueError(
                f"bimanual {spec.name}: action has {a.shape[0]} values, expected {self.action_dim} "
                "(q0, gripper0, q1, gripper1)"
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"bimanual {spec.name}: action contains NaN or inf")
        max_step = np.asarray(spec.dq_max, float) / self.control_hz
        for i in range(N_GRIPPERS):
            q = np.clip(a[i * n : i * n + spec.dof], spec.q_min, spec.q_max)
            limited = np.clip(q, self._last_q[i] - max_step, self._last_q[i] + max_step)
            if not np.array_equal(limited, q):
                self.velocity_clips += 1
            self._last_q[i] = limited
            self.data.ctrl[self.arm_ctrl[i]] = limited
            self.data.ctrl[self.finger_ctrl[i]] = (
                np.clip(a[i * n + spec.dof], spec.gripper_min, spec.gripper_max) / 2
            )
        for _ in range(self.n_substeps):
            mujoco.mj_step(self.model, self.data)
        self.t += 1
        ok = self.success()
        return self._obs(), float(ok), ok, self.t >= self.max_steps, {"success": ok}


class BimanualHandheldEnv(_BimanualBase):
    """Two handheld grippers (UMI's bimanual capture): each hand moves to its TCP target along a straight line
    (nlerp for rotation) over one control period, as mimic.sim.handheld.HandheldEnv moves one.

    `tracking_lag_s` > 0 makes each hand follow its rows through a first-order lag of that time constant (each
    period it goes the fraction 1 - exp(-dt / lag) of the way from where it was sent last to the new row), as an
    arm's servos trail a moving target. A policy rolled out on such a rig meets the arms' lag and nothing else
    they change (IK, stiff contact, joint limits), which tells the two apart; recording keeps 0.

    `ik_arm` passes every row through that arm's IK first (arm i at BASE_POSES[i], solved from its last solution
    with the end-effector controller's acceptance; an unreachable row holds the last reachable pose), and the hand
    goes to the pose the solution reaches: the arms' IK without their bodies, servos or contacts.
    """

    def __init__(
        self,
        seed: int | None = None,
        cameras: tuple[str, ...] = CAMERA_KEYS,
        image_size: tuple[int, int] = (96, 96),
        gripper_like: str = "franka",
        tracking_lag_s: float = 0.0,
        ik_arm: str | None = None,
    ) -> None:
        if not np.isfinite(tracking_lag_s) or tracking_lag_s < 0:
            raise ValueError(f"bimanual handheld: tracking_lag_s must be >= 0, got {tracking_lag_s}")
        self.spec = get_spec(gripper_like)
        self._setup(build_two_handheld_model(gripper_like), seed, cameras, image_size)
        self.tracking_lag_s = float(tracking_lag_s)
        self._ik = [
            EefChunkController(IKSolver.for_arm(ik_arm), self.control_hz, base_pose=BASE_POSES[i])
            for i in range(N_GRIPPERS)
            if ik_arm is not None
        ]
        self._ik_q: list[np.ndarray] = []
        m = self.model
        self._mocap = [int(m.body_mocapid[m.body(f"robot{i}_hand_target").id]) for i in range(N_GRIPPERS)]
        self._hand_adr = [int(m.joint(f"robot{i}_hand").qposadr[0]) for i in range(N_GRIPPERS)]
        self._hand_dof = [int(m.joint(f"robot{i}_hand").dofadr[0]) for i in range(N_GRIPPERS)]
        self.finger_ctrl = [
            np.array([m.actuator(f"robot{i}_act_finger_{s}").id for s in ("left", "right")])
            for i in range(N_GRIPPERS)
        ]
        for i in range(N_GRIPPERS):  # the weld holds the pose, not a fight with gravity
            for body in ("hand", "finger_left", "finger_right"):
                m.body_gravcomp[m.body(f"robot{i}_{body}").id] = 1.0
        mujoco.mj_forward(m, self.data)
        flange = m.body("robot0_flange").id
        t_flange = homogeneous(self.data.xpos[flange], self.data.xmat[flange].reshape(3, 3))
        self.flange_tcp = np.linalg.inv(t_flange) @ homogeneous(*self.tcp_pose(0))
        self.home_rot = [np.diag([1.0, -1.0, -1.0]) for _ in range(N_GRIPPERS)]
        self._target = [(np.zeros(3), np.eye(3)) for _ in range(N_GRIPPERS)]

    def _set_tcp(self, i: int, pos: np.ndarray, rot: np.ndarray, teleport: bool = False) -> None:
        flange = homogeneous(pos, rot) @ np.linalg.inv(self.flange_tcp)
        self.data.mocap_pos[self._mocap[i]] = flange[:3, 3]
        self.data.mocap_quat[self._mocap[i]] = _quat(flange[:3, :3])
        if teleport:
            a = self._hand_adr[i]
            self.data.qpos[a : a + 3] = flange[:3, 3]
            self.data.qpos[a + 3 : a + 7] = _quat(flange[:3, :3])
            self.data.qvel[self._hand_dof[i] : self._hand_dof[i] + 6] = 0.0

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """The scene's draws (BimanualTwinEnv's, in its order), then each hand's start above the table."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        self.scene.randomize(self._rng)
        self.scene.reset_objects(d, self._rng)
        for i, (pos, yaw) in enumerate(start_poses(self._rng)):
            self.home_rot[i] = tool_down(yaw)
            self._set_tcp(i, pos, self.home_rot[i], teleport=True)
            self._target[i] = (pos.copy(), self.home_rot[i].copy())
            d.qpos[self.finger_qpos[i]] = self.spec.gripper_max / 2
            d.ctrl[self.finger_ctrl[i]] = self.spec.gripper_max / 2
        self._ik_q = [  # each arm's joints at the start pose, solved from home like a two-arm episode's start
            c.ik.solve(np.asarray(c.spec.home, float), c.frame_to_base @ homogeneous(*self._target[i])).q
            for i, c in enumerate(self._ik)
        ]
        mujoco.mj_forward(m, d)
        self.t = 0
        return self._eef_obs()

    def step(self, action: np.ndarray):
        """Move both hands to their TCP targets over one control period; gym's 5-tuple."""
        a = np.array(action, float).reshape(-1)  # a copy: rows passed through IK are rewritten
        if a.shape[0] != 7 * N_GRIPPERS or not np.all(np.isfinite(a)):
            raise ValueError(
                f"bimanual handheld: action must be {7 * N_GRIPPERS} finite values "
                "(tcp pos, axis-angle, width per gripper)"
            )
        moves = []
        for i, c in enumerate(self._ik):  # the pose arm i's IK reaches for the row, or its last reachable one
            q_rows, n_ok = c.solve_chunk(a[None, 7 * i : 7 * (i + 1)], self._ik_q[i])
            if n_ok:
                self._ik_q[i] = q_rows[0, :-1]
            a[7 * i : 7 * i + 6] = tcp_pose_row(BASE_POSES[i] @ c.ik.fk(self._ik_q[i]))
        for i in range(N_GRIPPERS):
            row = a[7 * i : 7 * (i + 1)]
            p0, r0 = self._target[i]
            p1, r1 = row[:3].copy(), _rot(row[3:6])
            q0, q1 = _quat(r0), _quat(r1)
            q1 = -q1 if np.dot(q0, q1) < 0 else q1
            if self.tracking_lag_s > 0:  # the fraction of the way a first-order lag covers in one period
                frac = 1.0 - np.exp(-1.0 / (self.control_hz * self.tracking_lag_s))
                p1, q1 = p0 + frac * (p1 - p0), (1 - frac) * q0 + frac * q1
                q1 = q1 / np.linalg.norm(q1)
                r1 = _quat_mat(q1)
            self._target[i] = (p1, r1)
            moves.append((p0, p1, q0, q1))
            width = np.clip(row[6], self.spec.gripper_min, self.spec.gripper_max) / 2
            self.data.ctrl[self.finger_ctrl[i]] = width
        for k in range(1, self.n_substeps + 1):
            f = k / self.n_substeps
            for i, (p0, p1, q0, q1) in enumerate(moves):
                q = (1 - f) * q0 + f * q1
                self._set_tcp(i, (1 - f) * p0 + f * p1, _quat_mat(q / np.linalg.norm(q)))
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)
        self.t += 1
        ok = self.success()
        return self._eef_obs(), float(ok), ok, self.t >= self.max_steps, {"success": ok}


# ---- experts ----------------------------------------------------------------------------------
class _GripperView:
    """One gripper of a bimanual env as the single handheld expert sees an env: its spec, rate, start rotation."""

    task = "pick_place"

    def __init__(self, env: _BimanualBase, i: int) -> None:
        self.env, self.i = env, i
        self.spec, self.control_hz = env.spec, env.control_hz
        self.home_rot = np.eye(3)


def gripper_obs(obs: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
    """Gripper `i`'s part of a bimanual observation under the single-gripper keys (robot0_*, object_state)."""
    return {
        "robot0_eef_pos": obs[f"robot{i}_eef_pos"],
        "robot0_eef_rot_axis_angle": obs[f"robot{i}_eef_rot_axis_angle"],
        "robot0_gripper_width": obs[f"robot{i}_gripper_width"],
        "object_state": gripper_view(obs["object_state"], i),
    }


class BimanualHandheldExpert:
    """Both hands run the single handheld pick-place plan on their own cube, at the same time
    (`approach_error_m`: HandheldExpert's person-like approach, an offset drawn per hand from `reset(seed)`)."""

    def __init__(
        self, env: BimanualHandheldEnv, speed_m_s: float = 0.3, approach_error_m: float = 0.0
    ) -> None:
        self.env = env
        self.views = [_GripperView(env, i) for i in range(N_GRIPPERS)]
        self.experts = [
            HandheldExpert(v, speed_m_s=speed_m_s, approach_error_m=approach_error_m)  # type: ignore[arg-type]
            for v in self.views
        ]

    def reset(self, seed: int | None = None) -> None:
        for v, e in zip(self.views, self.experts, strict=True):
            v.home_rot = self.env.home_rot[v.i]
            e.reset(None if seed is None else np.random.default_rng([seed, 13, v.i]))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        for v in self.views:  # a reset since the last call changed the start rotations
            v.home_rot = self.env.home_rot[v.i]
        return np.concatenate([e.act(gripper_obs(obs, i)) for i, e in enumerate(self.experts)])


class BimanualArmExpert:
    """The same per-gripper plan on two arm twins: each TCP target solved by IK in its arm's base frame and
    velocity-limited like mimic.sim.expert.Expert, so the joint targets stay within what a driver accepts."""

    def __init__(self, env: BimanualTwinEnv, speed_m_s: float = 0.3) -> None:
        self.env = env
        self.ik = IKSolver.for_arm(env.spec)
        self.views = [_GripperView(env, i) for i in range(N_GRIPPERS)]
        self.experts = [HandheldExpert(v, speed_m_s=speed_m_s) for v in self.views]  # type: ignore[arg-type]
        self.q_cmd: list[np.ndarray | None] = [None] * N_GRIPPERS

    def reset(self) -> None:
        self.q_cmd = [None] * N_GRIPPERS
        for e in self.experts:
            e.reset()

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env, out = self.env, []
        lim = 0.8 * np.asarray(env.spec.dq_max, float) / env.control_hz
        for i, e in enumerate(self.experts):
            if self.q_cmd[i] is None:
                self.q_cmd[i] = np.asarray(obs[f"robot{i}_joint_pos"], float).copy()
                self.views[i].home_rot = _rot(obs[f"robot{i}_eef_rot_axis_angle"])
            row = e.act(gripper_obs(obs, i))
            target = np.linalg.inv(env.base_poses[i]) @ homogeneous(row[:3], _rot(row[3:6]))
            q = self.ik.solve(self.q_cmd[i], target).q
            self.q_cmd[i] = self.q_cmd[i] + np.clip(q - self.q_cmd[i], -lim, lim)
            out.append(np.concatenate([self.q_cmd[i], [row[6]]]))
        return np.concatenate(out)


def run_expert(env, expert, seed: int) -> tuple[bool, int]:
    """One expert episode from env.reset(seed) -> (success, control steps)."""
    obs = env.reset(seed=seed)
    expert.reset()
    for steps in range(1, env.max_steps + 1):
        obs, _, term, trunc, _ = env.step(expert.act(obs))
        if term or trunc:
            return bool(term), steps
    return False, env.max_steps


def main(argv: list[str] | None = None) -> int:
    """`python -m mimic.sim.bimanual --episodes N [--arm A]`: the scripted experts' success on both twins."""
    ap = argparse.ArgumentParser(prog="mimic.sim.bimanual", description=main.__doc__)
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arm", default="xarm7", help="arm twin for the two-arm expert")
    ap.add_argument("--only", choices=("handheld", "arms"), default=None)
    a = ap.parse_args(argv)
    runs = []
    if a.only != "arms":
        hh = BimanualHandheldEnv(cameras=())
        runs.append(("handheld", hh, BimanualHandheldExpert(hh)))
    if a.only != "handheld":
        tw = BimanualTwinEnv(a.arm)
        runs.append((f"two {a.arm}", tw, BimanualArmExpert(tw)))
    for name, env, expert in runs:
        outcomes = [run_expert(env, expert, a.seed + k) for k in range(a.episodes)]
        ok = [s for s, _ in outcomes]
        steps = np.mean([n for s, n in outcomes if s]) if any(ok) else float("nan")
        failed = [a.seed + k for k, s in enumerate(ok) if not s]
        print(
            f"{name}: {sum(ok)}/{a.episodes} = {sum(ok) / a.episodes:.0%} (seeds {a.seed}..{a.seed + a.episodes - 1}), "
            f"mean {steps:.0f} steps per success; failed seeds {failed}",
            flush=True,
        )
        env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---- two arms behind the Arm contract, paced to wall-clock time (the deploy session's twin) ------
class BimanualTwinArms:
    """BimanualTwinEnv's physics on a thread that keeps simulated time on `time.time()`, with one
    `mimic.robots.arm.Arm`-style view per arm (`arms[i]`: state, command, stop, spec), so a ROS arm node
    serves two arms of one scene (shared table, both cubes): what a two-arm deploy session runs against.

    Commands pass each arm's own CommandGuard (joint and velocity limits) and take effect at the next physics
    step; readings are the live state stamped with the time they were taken (no injected latency).
    """

    def __init__(self, arm: str = "xarm7", seed: int = 0, start: str = "home") -> None:
        if start not in STARTS:
            raise ValueError(f"bimanual start {start!r} is not one of {STARTS}")
        self.env = BimanualTwinEnv(arm, seed=seed)
        self.spec, self.seed, self.start = self.env.spec, seed, start
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.guards = [CommandGuard(self.spec) for _ in range(N_GRIPPERS)]
        self.arms = [_ArmView(self, i) for i in range(N_GRIPPERS)]
        self.is_connected = False
        self.sim_time_at = 0.0  # wall time of the newest physics step

    def connect(self) -> None:
        """Reset the scene with `seed` (arms at home, or at `start_tcp_rows(seed)` for start "handheld") and
        start the physics thread."""
        if self.is_connected:
            return
        with self._lock:
            self.env.reset(seed=self.seed)
            if self.start == "handheld":
                self.env.place_tcps(start_tcp_rows(self.seed))
            now = time.time()
            self.sim_time_at = now
            for i, g in enumerate(self.guards):
                g.reset(self.env.data.qpos[self.env.arm_qpos[i]], now)
        self.is_connected = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="bimanual-twin", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        self.is_connected = False

    def scene(self) -> tuple[float, np.ndarray, bool]:
        """(time, object_state [20], both cubes placed with both grippers open) now."""
        with self._lock:
            return self.sim_time_at, self.env.object_state(), self.env.success()

    def _run(self) -> None:
        run_paced(self._stop, self.env.model.opt.timestep, 0.002, self._simulate)

    def _simulate(self, n: int, now: float) -> None:
        if n > 0:
            with self._lock:
                mujoco.mj_step(self.env.model, self.env.data, nstep=n)
                self.sim_time_at = now


class _ArmView:
    """Arm `i` of a BimanualTwinArms: the Arm contract's state/command/stop on its joints and fingers."""

    def __init__(self, twin: BimanualTwinArms, i: int) -> None:
        self.twin, self.i, self.spec = twin, i, twin.spec

    def state(self) -> ArmState:
        e, i = self.twin.env, self.i
        with self.twin._lock:
            return ArmState(
                t=self.twin.sim_time_at,
                q=e.data.qpos[e.arm_qpos[i]].copy(),
                dq=e.data.qvel[e.arm_qpos[i]].copy(),
                gripper=e.gripper_width(i),
            )

    def command(self, q_target: np.ndarray, gripper: float | None = None) -> None:
        q = self.twin.guards[self.i].check(q_target, gripper)  # CommandRefused: the arm does not move for it
        e, i = self.twin.env, self.i
        with self.twin._lock:
            e.data.ctrl[e.arm_ctrl[i]] = q
            if gripper is not None:
                e.data.ctrl[e.finger_ctrl[i]] = (
                    np.clip(gripper, self.spec.gripper_min, self.spec.gripper_max) / 2
                )

    def stop(self) -> None:
        e, i = self.twin.env, self.i
        with self.twin._lock:
            q = e.data.qpos[e.arm_qpos[i]].copy()
            e.data.ctrl[e.arm_ctrl[i]] = q
        self.twin.guards[i].reset(q)
