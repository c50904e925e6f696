"""TwinEnv: gym-style tasks (reach, pick_place, push_t, track) on any spec'd arm, 10 Hz control with physics sub-steps.

Actions are absolute joint targets plus a gripper width, exactly what a hardware backend accepts, so a
policy trained here deploys unchanged. A non-finite action is refused; a joint target further than the arm's
dq_max * control period from the last commanded one is clipped to that step (`velocity_clips` counts them). Resets are seeded; object poses, colours, light and camera pose are
randomised from the same generator so a seed reproduces an episode (knobs: `Randomization`). Scenes are
dressed in the lab look (manufacturer meshes, lit lab cell; mimic.sim.mjcf.Look) unless `look` says
otherwise; the look never changes physics.

`object_state` layout per task (what /objects/state carries and the dataset key `object_state` holds):
- reach [3]: goal x, y, z (m)
- pick_place [10]: cube x, y, z (m), cube quaternion w, x, y, z, goal x, y, z (m)
- push_t [6]: T block x, y (m, its centre of mass), yaw (rad, in [-pi, pi)), goal x, y, yaw
- track [6]: goal x, y, z (m), goal velocity vx, vy, vz (m/s), both at the observation's moment

Success per task: reach, the TCP within 2 cm of the goal; pick_place, the cube released on the table within
3 cm of the goal; push_t, Diffusion Policy's criterion: the block covers >= 95 % of the goal T's area
(`info["coverage"]` reports the score every step, and the reward is min(coverage / 0.95, 1) as in DP);
track, the TCP within 2 cm of the *current* goal for TRACK_HOLD_S of simulated time without a break.

track is the timing-sensitive task: the goal runs counter-clockwise (seen from above) round a horizontal
circle of TRACK_RADIUS_M at TRACK_SPEED_M_S from a seeded centre and phase, as a function of simulated time
(`data.time`), so a delayed observation (LatencyConfig, TwinArm's history) shows where the goal *was*, and a
command that lands late puts the TCP behind it: at 0.15 m/s, 130 ms of lag alone is 2 cm.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from mimic.robots.specs import get_spec  # noqa: E402
from mimic.sim.image_augment import CameraEffects, draw_effects  # noqa: E402
from mimic.sim.latency import LatencyConfig  # noqa: E402
from mimic.sim.mjcf import LAB, Look, build_model  # noqa: E402
from mimic.sim.tasks import push_t  # noqa: E402

TASKS = ("reach", "pick_place", "push_t", "track")
CUBE_HALF = 0.02  # m
CAMERA_KEYS = {"scene": "camera0_rgb", "wrist": "camera1_rgb"}

_OBJECTS = {
    "reach": '<site name="goal" pos="0.5 0 0.2" size="0.02" rgba="0 1 0 0.5"/>',
    "track": '<site name="goal" pos="0.5 0 0.2" size="0.02" rgba="0 1 0 0.5"/>',
    "pick_place": f"""
  <body name="cube" pos="0.5 0 {CUBE_HALF}"><freejoint name="cube"/>
    <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" rgba="0.8 0.1 0.1 1"
          friction="1.5 0.02 0.001" condim="4"/></body>
  <site name="goal" type="cylinder" pos="0.5 0.2 0.001" size="0.04 0.001" rgba="0 0.8 0 0.6"/>""",
    # A T of two boxes on a free body whose frame is the T's centre of mass; the goal is a flat green T.
    "push_t": f"""
  <body name="tee" pos="0.5 0 0"><freejoint name="tee"/>
    <geom name="tee_bar" type="box" size="{push_t.BAR_HALF[0]} {push_t.BAR_HALF[1]} {push_t.HEIGHT / 2}"
          pos="{push_t.BAR_CENTER[0]} {push_t.BAR_CENTER[1]:.9f} {push_t.HEIGHT / 2}" density="500"
          rgba="0.47 0.53 0.6 1" condim="4"/>
    <geom name="tee_stem" type="box" size="{push_t.STEM_HALF[0]} {push_t.STEM_HALF[1]} {push_t.HEIGHT / 2}"
          pos="{push_t.STEM_CENTER[0]} {push_t.STEM_CENTER[1]:.9f} {push_t.HEIGHT / 2}" density="500"
          rgba="0.47 0.53 0.6 1" condim="4"/></body>
  <site name="goal" pos="0.5 0 0.0011" size="0.004" rgba="0 0.6 0 1"/>
  <site name="goal_bar" type="box" pos="0.5 0 0.0005" size="{push_t.BAR_HALF[0]} {push_t.BAR_HALF[1]} 0.0005"
        rgba="0.3 0.9 0.3 0.7"/>
  <site name="goal_stem" type="box" pos="0.5 0 0.0005" size="{push_t.STEM_HALF[0]} {push_t.STEM_HALF[1]} 0.0005"
        rgba="0.3 0.9 0.3 0.7"/>""",
}
# What the task objects are made of in the lab look (mimic.sim.mjcf.OBJECT_MATERIALS): finish only, the
# colours stay the geoms' own (and randomised), sizes, masses and friction are untouched.
_OBJECT_MATERIALS = {"cube": "plastic", "tee_bar": "plastic", "tee_stem": "plastic"}


def _dressed(objects: str, look: Look) -> str:
    """`objects` with the lab look's materials named on its geoms (unchanged for the plain look)."""
    if not look.lab:
        return objects
    for geom, material in _OBJECT_MATERIALS.items():
        objects = objects.replace(f'<geom name="{geom}"', f'<geom name="{geom}" material="{material}"')
    return objects


# The T slides on the table with mu = 0.5 (an explicit pair: MuJoCo would otherwise take the larger of the two
# geoms' frictions, the table's 1.0) while the rubber pads keep their grip on it (1.5, no slip in the pushes).
_CONTACTS = {
    "push_t": "".join(
        f'<pair geom1="{g}" geom2="table" friction="0.5 0.5 0.005 0.0001 0.0001"/>'
        for g in ("tee_bar", "tee_stem")
    )
    + '<exclude body1="tee" body2="world"/>'
}
_MAX_STEPS = {"reach": 60, "pick_place": 160, "push_t": 300, "track": 80}
# Task-specific scene-camera placement (position, look-at point), m. push_t looks down from the far side
# of the table, close enough that the T fills a 96x96 view and the arm (behind it) hides little; other tasks keep the
# wide view that calibration results were measured on.
_SCENE_CAMERA = {"push_t": ((0.82, 0.0, 0.42), (0.47, 0.0, 0.0))}
PUSH_T_GOAL = np.array([0.5, 0.0, np.pi / 4])  # x, y (m), yaw (rad): fixed, as in Diffusion Policy
PUSH_T_SUCCESS_COVERAGE = 0.95
PUSH_T_TCP_Z = 0.02  # m: pusher height, pad tips 1 cm above the table, below the block's 3 cm top
TRACK_RADIUS_M = 0.08  # track: radius of the goal's circle
TRACK_SPEED_M_S = 0.15  # track: the goal's speed along it (counter-clockwise seen from above)
TRACK_TOL_M = 0.02  # track: how close the TCP must stay to the current goal...
TRACK_HOLD_S = 1.0  # ...for this long (simulated time, every check within tolerance)


@dataclass
class Randomization:
    """Domain-randomisation knobs, drawn at every reset from the episode's seed; zero/False disables each one.

    The defaults are what the datasets so far were recorded with; the knobs added later (camera rotation,
    light direction, table colour, the camera effects) default to off so existing seeds reproduce the same
    episodes. The camera effects (mimic.sim.image_augment) act on every rendered frame after rendering:
    exposure, gamma, per-channel gain, blur drawn once per episode, sensor noise fresh every frame.
    """

    object_pose: float = (
        1.0  # fraction of each task's spawn ranges used (0: every episode at the nominal pose)
    )
    colors: bool = True  # object colour (cube, T block)
    light: float = 0.2  # +/- relative diffuse intensity
    camera_pos_m: float = 0.01  # +/- position jitter of every camera (scene and wrist mount)
    camera_rot_rad: float = 0.0  # +/- rotation jitter of every camera about its own x, y, z axes
    light_dir_rad: float = 0.0  # +/- tilt of the key light's direction
    table_color: float = 0.0  # +/- change of the table's RGB
    exposure_ev: float = 0.0  # +/- exposure in stops (image gain 2 ** EV)
    gamma: float = 0.0  # +/- change of the image gamma (1 +/- gamma)
    color_jitter: float = 0.0  # +/- relative gain of each colour channel
    blur_px: float = 0.0  # Gaussian blur sigma drawn in [0, blur_px] pixels
    noise_std: float = 0.0  # sensor noise std drawn in [0, noise_std] 8-bit levels (per frame)

    def __post_init__(self) -> None:
        for name in (
            "object_pose",
            "light",
            "camera_pos_m",
            "camera_rot_rad",
            "light_dir_rad",
            "table_color",
            "exposure_ev",
            "gamma",
            "color_jitter",
            "blur_px",
            "noise_std",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"Randomization.{name} must be >= 0, got {getattr(self, name)}")
        if self.object_pose > 1:
            raise ValueError(
                f"Randomization.object_pose is a fraction of the spawn range (0..1), got {self.object_pose}"
            )
        if self.gamma >= 1:
            raise ValueError(f"Randomization.gamma must be < 1 (gamma = 1 +/- gamma), got {self.gamma}")

    @property
    def camera_effects(self) -> bool:
        return any(
            getattr(self, k) > 0 for k in ("exposure_ev", "gamma", "color_jitter", "blur_px", "noise_std")
        )


class TwinEnv:
    def __init__(
        self,
        task: str,
        arm: str,
        seed: int | None = None,
        cameras: tuple[str, ...] = ("scene", "wrist"),
        image_size: tuple[int, int] = (96, 96),
        latency: LatencyConfig | None = None,
        randomization: Randomization | None = None,
        look: Look = LAB,
    ):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        for c in cameras:
            if c not in CAMERA_KEYS:
                raise ValueError(f"unknown camera {c!r}; known: {', '.join(CAMERA_KEYS)}")
        self.task, self.spec = task, get_spec(arm)
        self.look = look
        self.model = build_model(self.spec, _dressed(_OBJECTS[task], look), _CONTACTS.get(task, ""), look)
        self.data = mujoco.MjData(self.model)
        if task in _SCENE_CAMERA:
            _aim_camera(self.model, "scene", *_SCENE_CAMERA[task])
        self.cameras, self.image_size, self.latency = tuple(cameras), tuple(image_size), latency
        self.randomization = randomization or Randomization()
        self.control_hz = 10.0
        self.n_substeps = int(round(1.0 / (self.control_hz * self.model.opt.timestep)))
        self.max_steps = _MAX_STEPS[task]
        self._rng = np.random.default_rng(seed)
        self._effects: CameraEffects | None = None  # this episode's camera, when the effects are enabled
        self._effects_rng = np.random.default_rng(0)  # per-frame sensor noise, reseeded every episode
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._cam0 = self.model.cam_pos.copy()
        self._cam_quat0 = self.model.cam_quat.copy()
        self._light0 = self.model.light_diffuse.copy()
        self._light_dir0 = self.model.light_dir.copy()
        self._table = self.model.geom("table").id
        self._table_rgba0 = self.model.geom_rgba[self._table].copy()
        dof = self.spec.dof
        self.arm_qpos = np.arange(dof)
        self.finger_qpos = np.array(
            [self.model.joint("finger_left").qposadr[0], self.model.joint("finger_right").qposadr[0]]
        )
        self.tcp_site = self.model.site("tcp").id
        self.goal_site = self.model.site("goal").id
        self.t = 0
        self._near_since: float | None = None
        self._track_center, self._track_phase = np.array([0.5, 0.0, 0.2]), 0.0
        # Per-substep (qpos, qvel, time) for delayed observations; kept only when latency is injected.
        self._history: deque[tuple[np.ndarray, np.ndarray, float]] = deque(
            maxlen=int(1.0 / self.model.opt.timestep)
        )
        # Commands waiting for their injected delay: (sub-step index when due, arm ctrl, finger ctrl).
        self._pending: deque[tuple[int, np.ndarray, float]] = deque()
        self._substep = 0
        self._scratch = mujoco.MjData(self.model)
        # Velocity limit of the plain-Python step: the last commanded joint target (reset to the reset pose,
        # never to a refused NaN) and how many commanded targets were clipped to dq_max per control period.
        self._last_q = np.asarray(self.spec.home, dtype=float).copy()
        self.velocity_clips = 0

    # --- task state -------------------------------------------------------------------------------
    def _randomize(self) -> None:
        r, m, k = self._rng, self.model, self.randomization
        if k.colors and self.task == "pick_place":
            m.geom_rgba[m.geom("cube").id, :3] = r.uniform(0.2, 1.0, 3)
        m.light_diffuse[:] = self._light0 * (1 + r.uniform(-1, 1) * k.light)
        m.cam_pos[:] = self._cam0 + r.uniform(-1, 1, self._cam0.shape) * k.camera_pos_m
        # Knobs added after the first datasets draw only when enabled, so default seeds keep their episodes.
        if k.colors and self.task == "push_t":  # any colour but the goal's green
            rgb = r.uniform([0.25, 0.2, 0.25], [0.8, 0.45, 0.8])
            for g in ("tee_bar", "tee_stem"):
                m.geom_rgba[m.geom(g).id, :3] = rgb
        if k.camera_rot_rad > 0:
            for i in range(m.ncam):
                aa = r.uniform(-1, 1, 3) * k.camera_rot_rad
                dq, q = np.zeros(4), np.zeros(4)
                mujoco.mju_axisAngle2Quat(dq, aa / max(np.linalg.norm(aa), 1e-12), float(np.linalg.norm(aa)))
                mujoco.mju_mulQuat(q, self._cam_quat0[i], dq)
                m.cam_quat[i] = q
        if k.light_dir_rad > 0:
            for i in range(m.nlight):
                d = self._light_dir0[i] + np.r_[r.uniform(-1, 1, 2) * np.tan(k.light_dir_rad), 0.0]
                m.light_dir[i] = d / np.linalg.norm(d)
        if k.table_color > 0:
            m.geom_rgba[self._table, :3] = np.clip(
                self._table_rgba0[:3] + r.uniform(-1, 1, 3) * k.table_color, 0, 1
            )

    def _spawn(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """Uniform in [low, high] shrunk about its centre by Randomization.object_pose."""
        low, high = np.asarray(low, float), np.asarray(high, float)
        if self.randomization.object_pose == 1.0:
            return self._rng.uniform(low, high)
        mid, half = (low + high) / 2, (high - low) / 2 * self.randomization.object_pose
        return self._rng.uniform(mid - half, mid + half)

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        d, spec = self.data, self.spec
        # push_t pushes with the fingers closed (a pusher), the other tasks start half open.
        width = 0.0 if self.task == "push_t" else spec.gripper_max
        d.qpos[self.arm_qpos] = spec.home
        d.ctrl[: spec.dof] = spec.home
        d.qpos[self.finger_qpos] = width / 2
        d.ctrl[spec.dof :] = width / 2
        self._randomize()
        if self.task == "reach":
            self.model.site_pos[self.goal_site] = self._spawn([0.35, -0.2, 0.1], [0.55, 0.2, 0.35])
        elif self.task == "track":
            self._track_center = self._spawn([0.42, -0.12, 0.15], [0.53, 0.12, 0.30])
            self._track_phase = float(self._spawn([0.0], [2 * np.pi])[0])
            self.model.site_pos[self.goal_site] = self.track_goal(0.0)[0]
        elif self.task == "pick_place":
            cube = np.r_[self._spawn([0.45, -0.15], [0.6, 0.0]), CUBE_HALF]
            goal = np.r_[self._spawn([0.4, 0.08], [0.55, 0.2]), 0.001]
            adr = self.model.joint("cube").qposadr[0]
            yaw = float(self._spawn([-np.pi / 4], [np.pi / 4])[0])
            d.qpos[adr : adr + 7] = [*cube, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
            self.model.site_pos[self.goal_site] = goal
        else:
            self._reset_push_t()
        k = self.randomization
        # The camera effects are drawn after the scene, so enabling them leaves every episode's layout as it was.
        if k.camera_effects:
            self._effects = draw_effects(
                self._rng, k.exposure_ev, k.gamma, k.color_jitter, k.blur_px, k.noise_std
            )
            self._effects_rng = np.random.default_rng(self._rng.integers(2**63))
        mujoco.mj_forward(self.model, d)
        self.t = 0
        self._near_since: float | None = None  # track: simulated time since when the TCP is within tolerance
        self._history.clear()
        self._pending.clear()
        self._substep = 0
        self._last_q = d.qpos[self.arm_qpos].copy()
        return self._obs()

    def copy_state_from(self, other: TwinEnv) -> dict[str, np.ndarray]:
        """Continue from `other`'s current state: its MjData (warm starts included, so the next steps are
        bit-identical), step count and queued commands; returns the observation there.

        Both envs must have been reset with the same task, arm and seed (the goal, colours and spawn live in
        the model, which reset() edits), and have no latency model (its draws are not copied). DAgger uses this
        to branch an expert off a replayed rollout without replaying the whole prefix for every branch."""
        if (other.task, other.spec.name) != (self.task, self.spec.name) or self.latency or other.latency:
            raise ValueError(
                f"copy_state_from: {other.task}/{other.spec.name} -> {self.task}/{self.spec.name} "
                "(needs the same task and arm, and no latency model)"
            )
        mujoco.mj_copyData(self.data, self.model, other.data)
        self.t, self._substep, self._near_since = other.t, other._substep, other._near_since
        self._pending = deque(other._pending)
        self._last_q = other._last_q.copy()
        self._effects_rng.bit_generator.state = other._effects_rng.bit_generator.state  # the frames' noise
        return self._obs()

    def _reset_push_t(self) -> None:
        """Goal T drawn at PUSH_T_GOAL, block anywhere in reach at any yaw but not already (nearly) at the goal."""
        m, goal = self.model, PUSH_T_GOAL
        for name, center in (
            ("goal", np.zeros(2)),
            ("goal_bar", push_t.BAR_CENTER),
            ("goal_stem", push_t.STEM_CENTER),
        ):
            sid = m.site(name).id
            m.site_pos[sid, :2] = push_t.to_world(goal, center[None])[0]
            m.site_quat[sid] = [np.cos(goal[2] / 2), 0, 0, np.sin(goal[2] / 2)]
        for _ in range(100):
            pose = self._spawn([0.40, -0.15, -np.pi], [0.58, 0.15, np.pi])
            if push_t.coverage(pose, goal) < 0.5 or self.randomization.object_pose == 0:
                break
        adr = m.joint("tee").qposadr[0]
        self.data.qpos[adr : adr + 7] = [
            pose[0],
            pose[1],
            0.0,
            np.cos(pose[2] / 2),
            0,
            0,
            np.sin(pose[2] / 2),
        ]

    def tee_pose(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """push_t: the block's (x, y, yaw) in the table plane (m, rad)."""
        d = self.data if data is None else data
        adr = self.model.joint("tee").qposadr[0]
        w, x, y, z = d.qpos[adr + 3 : adr + 7]
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        return np.array([d.qpos[adr], d.qpos[adr + 1], float(push_t.wrap(yaw))])

    def track_goal(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """track: the goal's (position m, velocity m/s) at simulated time `t` of this episode."""
        w = TRACK_SPEED_M_S / TRACK_RADIUS_M
        a = self._track_phase + w * t
        c, s = np.cos(a), np.sin(a)
        pos = self._track_center + TRACK_RADIUS_M * np.array([c, s, 0.0])
        return pos, TRACK_SPEED_M_S * np.array([-s, c, 0.0])

    def object_state(self, data: mujoco.MjData | None = None) -> np.ndarray:
        """The task's object state (layout in the module docstring), as a tracker would report it."""
        d = self.data if data is None else data
        if self.task == "track":
            return np.concatenate(self.track_goal(d.time))
        if self.task == "push_t":
            return np.concatenate([self.tee_pose(d), PUSH_T_GOAL])
        goal = self.model.site_pos[self.goal_site].copy()
        if self.task == "reach":
            return goal
        adr = self.model.joint("cube").qposadr[0]
        return np.concatenate([d.qpos[adr : adr + 7], goal])

    def coverage(self) -> float:
        """push_t: fraction of the goal T covered by the block (Diffusion Policy's score)."""
        return push_t.coverage(self.tee_pose(), PUSH_T_GOAL)

    def success(self) -> bool:
        if self.task == "push_t":
            return self.coverage() >= PUSH_T_SUCCESS_COVERAGE
        tcp = self.data.site_xpos[self.tcp_site]
        if self.task == "track":  # checked every control step here, more often by the ROS arm node
            t = float(self.data.time)
            if np.linalg.norm(tcp - self.track_goal(t)[0]) >= TRACK_TOL_M:
                self._near_since = None
                return False
            if self._near_since is None or t < self._near_since:
                self._near_since = t
            return t - self._near_since >= TRACK_HOLD_S - 1e-9
        goal = self.model.site_pos[self.goal_site]
        if self.task == "reach":
            return bool(np.linalg.norm(tcp - goal) < 0.02)
        cube = self.data.qpos[self.model.joint("cube").qposadr[0] :][:3]
        return bool(
            np.linalg.norm(cube[:2] - goal[:2]) < 0.03
            and cube[2] < CUBE_HALF + 0.005
            and self.gripper_width() > 0.045
        )

    def gripper_width(self) -> float:
        return float(self.data.qpos[self.finger_qpos].sum())

    # --- gym API ----------------------------------------------------------------------------------
    def _snapshot(self, delay_s: float) -> mujoco.MjData:
        """The live data, or a scratch copy holding the state `delay_s` ago (from the per-substep history)."""
        k = int(round(delay_s / self.model.opt.timestep))
        if k <= 0 or not self._history:
            return self.data
        qpos, qvel, t = self._history[max(len(self._history) - 1 - k, 0)]
        d = self._scratch
        d.qpos[:], d.qvel[:], d.time = qpos, qvel, t
        mujoco.mj_kinematics(self.model, d)
        mujoco.mj_comPos(self.model, d)
        mujoco.mj_camlight(self.model, d)  # camera and light poses, needed to render this state
        return d

    def _obs(self) -> dict[str, np.ndarray]:
        lat = self.latency
        d = self._snapshot(lat.draw(lat.joint_state_s) if lat else 0.0)
        rot = np.zeros(4)
        mujoco.mju_mat2Quat(rot, d.site_xmat[self.tcp_site])
        aa = np.zeros(3)
        mujoco.mju_quat2Vel(aa, rot, 1.0)
        obs = {
            "robot0_joint_pos": d.qpos[self.arm_qpos].copy(),
            "robot0_joint_vel": d.qvel[self.arm_qpos].copy(),
            "robot0_gripper_width": np.array([float(d.qpos[self.finger_qpos].sum())]),
            "robot0_eef_pos": d.site_xpos[self.tcp_site].copy(),
            "robot0_eef_rot_axis_angle": aa,
            "object_state": self.object_state(d),
        }
        for cam in self.cameras:
            frame = self._snapshot(lat.draw(lat.camera_s) if lat else 0.0)
            obs[CAMERA_KEYS[cam]] = self.render(cam, self.image_size, frame)
        return obs

    def step(self, action: np.ndarray):
        """Apply `action` (after the injected command delay, if any) and simulate one control period."""
        spec = self.spec
        a = np.asarray(action, dtype=float).reshape(-1)
        if a.shape[0] != spec.dof + 1:
            raise ValueError(
                f"{spec.name}: action has {a.shape[0]} values, expected {spec.dof + 1} (q + gripper)"
            )
        if not np.all(np.isfinite(a)):  # clipping would pass NaN straight into the simulator's controls
            raise ValueError(f"{spec.name}: action contains NaN or inf: {np.round(a, 4).tolist()}")
        lat = self.latency
        delay = int(round(lat.draw(lat.command_s) / self.model.opt.timestep)) if lat else 0
        # Commands queue in order and take effect `delay` sub-steps after they were sent, which may be in a
        # later control period (a 150 ms command latency at 10 Hz), never dropped.
        due = max(self._substep + delay, self._pending[-1][0] if self._pending else 0)
        self._pending.append(
            (
                due,
                self._limit_velocity(np.clip(a[: spec.dof], spec.q_min, spec.q_max)),
                float(np.clip(a[-1], spec.gripper_min, spec.gripper_max)) / 2,
            )
        )
        for _ in range(self.n_substeps):
            while self._pending and self._pending[0][0] <= self._substep:
                _, q, finger = self._pending.popleft()
                self.data.ctrl[: spec.dof] = q
                self.data.ctrl[spec.dof :] = finger
            mujoco.mj_step(self.model, self.data)
            self._substep += 1
            if lat is not None:
                self._history.append((self.data.qpos.copy(), self.data.qvel.copy(), float(self.data.time)))
        self.t += 1
        if self.task == "push_t":  # success is a coverage threshold: compute the coverage once
            cov = self.coverage()
            ok = cov >= PUSH_T_SUCCESS_COVERAGE
            info: dict[str, float | bool] = {"success": ok, "coverage": cov}
            reward = min(cov / PUSH_T_SUCCESS_COVERAGE, 1.0)
        else:
            ok = self.success()
            info, reward = {"success": ok}, float(ok)
        return self._obs(), reward, ok, self.t >= self.max_steps, info

    def _limit_velocity(self, q: np.ndarray) -> np.ndarray:
        """`q` moved at most dq_max * control period from the last commanded target, whatever came before.

        A hardware backend refuses such a jump (CommandGuard); the twin's plain-Python step clips it instead so
        an evaluation rollout goes on, and counts it in `velocity_clips` so a result built on clipped motion
        is visible. The scripted experts stay below the limit, so their demonstrations are unchanged.
        """
        max_step = np.asarray(self.spec.dq_max, dtype=float) / self.control_hz
        limited = np.clip(q, self._last_q - max_step, self._last_q + max_step)
        if not np.array_equal(limited, q):
            self.velocity_clips += 1
        self._last_q = limited
        return limited

    def _new_renderer(self, h: int, w: int) -> mujoco.Renderer:
        """A renderer of HxW: a size outside the model's offscreen buffer is refused in one line naming the
        limits, where MuJoCo would explain the XML clause that enlarges it over several lines, or PIL would
        fail on an empty image only when the frames are written."""
        buf = self.model.vis.global_
        if not (1 <= h <= buf.offheight and 1 <= w <= buf.offwidth):
            raise ValueError(
                f"render size {h}x{w}: must be 1..{buf.offheight} x 1..{buf.offwidth} (the twin's offscreen buffer)"
            )
        return mujoco.Renderer(self.model, height=h, width=w)

    def render(
        self, camera: str, size: tuple[int, int] = (96, 96), data: mujoco.MjData | None = None
    ) -> np.ndarray:
        """uint8 HxWx3 image from `camera` ("scene" or "wrist"), offscreen (EGL), of `data` (default: now)."""
        h, w = size
        key = (h, w)
        if key not in self._renderers:
            self._renderers[key] = self._new_renderer(h, w)
        rend = self._renderers[key]
        if self.task == "track":  # the goal marker where the goal was at the rendered state's moment
            self.model.site_pos[self.goal_site] = self.track_goal((self.data if data is None else data).time)[
                0
            ]
        rend.update_scene(self.data if data is None else data, camera=camera)
        image = rend.render().copy()
        if self._effects is not None:
            image = self._effects.apply(image, self._effects_rng)
        return image

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def _aim_camera(model: mujoco.MjModel, name: str, pos: tuple[float, ...], target: tuple[float, ...]) -> None:
    """Place camera `name` at `pos` looking at `target` with the world z axis up in the image."""
    cam = model.camera(name).id
    forward = np.subtract(target, pos) / np.linalg.norm(np.subtract(target, pos))
    z = -forward
    x = np.cross([0.0, 0.0, 1.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.stack([x, y, z], axis=1).reshape(-1))
    model.cam_pos[cam], model.cam_quat[cam] = pos, quat


def make_env(
    task: str,
    arm: str,
    seed: int | None = None,
    cameras: tuple[str, ...] = ("scene", "wrist"),
    image_size: tuple[int, int] = (96, 96),
    latency: LatencyConfig | None = None,
    randomization: Randomization | None = None,
    look: Look = LAB,
) -> TwinEnv:
    """A task on an arm's twin: `task` in TASKS, `arm` a mimic.robots.specs name, cameras "scene"/"wrist" at (H, W),
    dressed as `look` (mimic.sim.mjcf: LAB by default, PLAIN for the original capsule scene)."""
    return TwinEnv(
        task,
        arm,
        seed=seed,
        cameras=cameras,
        image_size=image_size,
        latency=latency,
        randomization=randomization,
        look=look,
    )
