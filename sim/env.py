"""TwinEnv: gym-style tasks (reach, pick_place) on any spec'd arm, 10 Hz control with physics sub-steps.

Actions are absolute joint targets plus a gripper width, exactly what a hardware backend accepts, so a
policy trained here deploys unchanged. Resets are seeded; object poses, colours, light and camera pose are
randomised from the same generator so a seed reproduces an episode.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from robots.specs import get_spec  # noqa: E402
from sim.latency import LatencyConfig  # noqa: E402
from sim.mjcf import build_model  # noqa: E402

TASKS = ("reach", "pick_place")
CUBE_HALF = 0.02  # m
CAMERA_KEYS = {"scene": "camera0_rgb", "wrist": "camera1_rgb"}

_OBJECTS = {
    "reach": '<site name="goal" pos="0.5 0 0.2" size="0.02" rgba="0 1 0 0.5"/>',
    "pick_place": f"""
  <body name="cube" pos="0.5 0 {CUBE_HALF}"><freejoint name="cube"/>
    <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" mass="0.05" rgba="0.8 0.1 0.1 1"
          friction="1.5 0.02 0.001" condim="4"/></body>
  <site name="goal" type="cylinder" pos="0.5 0.2 0.001" size="0.04 0.001" rgba="0 0.8 0 0.6"/>""",
}
_MAX_STEPS = {"reach": 60, "pick_place": 160}


@dataclass
class Randomization:
    """Domain-randomisation knobs; zero disables each one."""

    colors: bool = True
    light: float = 0.2  # +/- relative diffuse intensity
    camera_pos_m: float = 0.01  # +/- scene-camera position jitter


class TwinEnv:
    def __init__(self, task: str, arm: str, seed: int | None = None, cameras: tuple[str, ...] = ("scene", "wrist"),
                 image_size: tuple[int, int] = (96, 96), latency: LatencyConfig | None = None, randomization: Randomization | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
        for c in cameras:
            if c not in CAMERA_KEYS:
                raise ValueError(f"unknown camera {c!r}; known: {', '.join(CAMERA_KEYS)}")
        self.task, self.spec = task, get_spec(arm)
        self.model = build_model(self.spec, _OBJECTS[task])
        self.data = mujoco.MjData(self.model)
        self.cameras, self.image_size, self.latency = tuple(cameras), tuple(image_size), latency
        self.randomization = randomization or Randomization()
        self.control_hz = 10.0
        self.n_substeps = int(round(1.0 / (self.control_hz * self.model.opt.timestep)))
        self.max_steps = _MAX_STEPS[task]
        self._rng = np.random.default_rng(seed)
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}
        self._cam0 = self.model.cam_pos.copy()
        self._light0 = self.model.light_diffuse.copy()
        dof = self.spec.dof
        self.arm_qpos = np.arange(dof)
        self.finger_qpos = np.array([self.model.joint("finger_left").qposadr[0],
                                     self.model.joint("finger_right").qposadr[0]])
        self.tcp_site = self.model.site("tcp").id
        self.goal_site = self.model.site("goal").id
        self.t = 0
        # Per-substep (qpos, qvel) for delayed observations; kept only when latency is injected.
        self._history: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=int(1.0 / self.model.opt.timestep))
        self._scratch = mujoco.MjData(self.model)

    # --- task state -------------------------------------------------------------------------------
    def _randomize(self) -> None:
        r, m = self._rng, self.model
        if self.randomization.colors and self.task == "pick_place":
            m.geom_rgba[m.geom("cube").id, :3] = r.uniform(0.2, 1.0, 3)
        m.light_diffuse[:] = self._light0 * (1 + r.uniform(-1, 1) * self.randomization.light)
        m.cam_pos[:] = self._cam0 + r.uniform(-1, 1, self._cam0.shape) * self.randomization.camera_pos_m

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        mujoco.mj_resetData(self.model, self.data)
        d, r, spec = self.data, self._rng, self.spec
        d.qpos[self.arm_qpos] = spec.home
        d.ctrl[: spec.dof] = spec.home
        d.qpos[self.finger_qpos] = spec.gripper_max / 2
        d.ctrl[spec.dof:] = spec.gripper_max / 2
        self._randomize()
        if self.task == "reach":
            self.model.site_pos[self.goal_site] = [r.uniform(0.35, 0.55), r.uniform(-0.2, 0.2), r.uniform(0.1, 0.35)]
        else:
            cube = np.array([r.uniform(0.45, 0.6), r.uniform(-0.15, 0.0), CUBE_HALF])
            goal = np.array([r.uniform(0.4, 0.55), r.uniform(0.08, 0.2), 0.001])
            adr = self.model.joint("cube").qposadr[0]
            yaw = r.uniform(-np.pi / 4, np.pi / 4)
            d.qpos[adr:adr + 7] = [*cube, np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)]
            self.model.site_pos[self.goal_site] = goal
        mujoco.mj_forward(self.model, d)
        self.t = 0
        self._history.clear()
        return self._obs()

    def object_state(self, data: mujoco.MjData | None = None) -> np.ndarray:
        d = self.data if data is None else data
        goal = self.model.site_pos[self.goal_site].copy()
        if self.task == "reach":
            return goal
        adr = self.model.joint("cube").qposadr[0]
        return np.concatenate([d.qpos[adr:adr + 7], goal])

    def success(self) -> bool:
        tcp = self.data.site_xpos[self.tcp_site]
        goal = self.model.site_pos[self.goal_site]
        if self.task == "reach":
            return bool(np.linalg.norm(tcp - goal) < 0.02)
        cube = self.data.qpos[self.model.joint("cube").qposadr[0]:][:3]
        return bool(np.linalg.norm(cube[:2] - goal[:2]) < 0.03 and cube[2] < CUBE_HALF + 0.005
                    and self.gripper_width() > 0.045)

    def gripper_width(self) -> float:
        return float(self.data.qpos[self.finger_qpos].sum())

    # --- gym API ----------------------------------------------------------------------------------
    def _snapshot(self, delay_s: float) -> mujoco.MjData:
        """The live data, or a scratch copy holding the state `delay_s` ago (from the per-substep history)."""
        k = int(round(delay_s / self.model.opt.timestep))
        if k <= 0 or not self._history:
            return self.data
        qpos, qvel = self._history[max(len(self._history) - 1 - k, 0)]
        d = self._scratch
        d.qpos[:], d.qvel[:] = qpos, qvel
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
            raise ValueError(f"{spec.name}: action has {a.shape[0]} values, expected {spec.dof + 1} (q + gripper)")
        lat = self.latency
        delay = int(round(lat.draw(lat.command_s) / self.model.opt.timestep)) if lat else 0
        delay = min(delay, self.n_substeps)
        for i in range(self.n_substeps):
            if i == delay:
                self.data.ctrl[: spec.dof] = np.clip(a[: spec.dof], spec.q_min, spec.q_max)
                self.data.ctrl[spec.dof:] = np.clip(a[-1], spec.gripper_min, spec.gripper_max) / 2
            mujoco.mj_step(self.model, self.data)
            if lat is not None:
                self._history.append((self.data.qpos.copy(), self.data.qvel.copy()))
        self.t += 1
        ok = self.success()
        return self._obs(), float(ok), ok, self.t >= self.max_steps, {"success": ok}

    def render(self, camera: str, size: tuple[int, int] = (96, 96), data: mujoco.MjData | None = None) -> np.ndarray:
        """uint8 HxWx3 image from `camera` ("scene" or "wrist"), offscreen (EGL), of `data` (default: now)."""
        h, w = size
        key = (h, w)
        if key not in self._renderers:
            self._renderers[key] = mujoco.Renderer(self.model, height=h, width=w)
        rend = self._renderers[key]
        rend.update_scene(self.data if data is None else data, camera=camera)
        return rend.render().copy()

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()


def make_env(task: str, arm: str, seed: int | None = None, cameras: tuple[str, ...] = ("scene", "wrist"),
             image_size: tuple[int, int] = (96, 96), latency: LatencyConfig | None = None) -> TwinEnv:
    return TwinEnv(task, arm, seed=seed, cameras=cameras, image_size=image_size, latency=latency)

