"""Scripted experts: Cartesian waypoints tracked by damped least-squares IK on MuJoCo's site Jacobian.

The expert plans on a scratch MjData (never the env's), moves the TCP at a bounded Cartesian speed so IK
stays local, keeps the fingers vertical with their closing axis on a cube face, and returns absolute
joint targets, the same action space as a teleoperator.

push_t: fingers closed and vertical, the TCP at a fixed height above the table; mimic.sim.tasks.push_t's planner
picks each short push (contact point, direction, length) by predicting the block's motion, routes the
pusher around the block (either way round when both are about as long, so demonstrations are multimodal
as in Diffusion Policy's Push-T), and replans after every push from the block pose it observes.

Measured with `mimic sim experts --episodes 100` (seeds 0..99, success / mean 10 Hz steps per episode):

    arm      reach        pick_place   push_t (coverage >= 95 %, 300 steps max)   track (1 s held)
    franka   100 % / 11   100 % / 70   100 % / 127                                 100 % / 22
    ur5e     100 % /  9   100 % / 67   100 % / 123                                 100 % / 18
    xarm7    100 % /  6   100 % / 64   100 % / 119                                 100 % / 16

track: the goal's future is known from one observation (position and velocity on a circle of the task's
radius, counter-clockwise), so the expert aims at where the goal will be `track_lookahead_s` after the
observation (the servo's lag), closing in at its Cartesian speed and then following the circle.

The expert reads only `robot0_joint_pos` and `object_state` from an observation (the TCP position is
recomputed from the joints when `robot0_eef_pos` is absent), so it can also run on what a ROS session
publishes (/robot/joint_states, /objects/state).
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from mimic.robots.ik import tool_down
from mimic.sim.env import CUBE_HALF, PUSH_T_TCP_Z, TRACK_RADIUS_M, TwinEnv
from mimic.sim.tasks.push_t import PushConfig, PushPlanner

MISS_WIDTH_M = 0.015  # pick_place: fingers closed below this width hold no cube (it is 4 cm wide)
HOVER_M, GRASP_Z_M, CARRY_M = 0.12, 0.004, 0.15  # pick_place: TCP above the cube / grasp / carry heights


class Expert:
    def __init__(
        self,
        env: TwinEnv,
        speed_m_s: float = 0.3,
        damping: float = 0.05,
        push: PushConfig | None = None,
        track_lookahead_s: float = 0.13,
    ):
        self.env, self.speed, self.damping = env, speed_m_s, damping
        self.track_lookahead_s = track_lookahead_s
        self.push_cfg = push or PushConfig()
        self._d = mujoco.MjData(env.model)
        self.reset()

    def reset(self, seed: int | None = None, miss_m: float = 0.0) -> None:
        """Start a new episode. `seed` drives push_t's either-way-round choices; None derives it from the
        episode's first observation (reproducible per env seed), a number makes the same start pose give
        different demonstrations (multimodal data from one initial state).

        `miss_m` != 0 (pick_place) makes the first grasp land that far (signed) beside the cube along the
        fingers' non-closing axis, so it closes on air: the expert then sees the empty gripper once lifted and goes
        back for the cube, the recovery that demonstrations otherwise never show (mimic.workflows.record_expert regrasp)."""
        self.seed = seed
        self.phase, self.wait, self.q_cmd, self.p_cmd = 0, 0, None, None
        self.miss_m, self.grasp_attempts = float(miss_m), 1
        # pick_place: act() calls before the first lift began (a lift that came up empty: grasp_attempts > 1).
        self.first_lift_step: int | None = None
        self.steps = 0
        self._waypoints: list[tuple[np.ndarray, float]] = []  # push_t: (TCP target, speed m/s) still to visit
        self._planner: PushPlanner | None = None
        self._settle_steps, self._settle_tol = (
            0,
            0.0,
        )  # push_t: control steps left to wait for the arm, tolerance m
        self.route_sides: list[
            int
        ] = []  # push_t: per planned push, 0 straight / +1 ccw / -1 cw round the block

    # --- IK -----------------------------------------------------------------------------------------
    def ik(self, q0: np.ndarray, p: np.ndarray, r: np.ndarray, iters: int = 30) -> np.ndarray:
        m, d, env, spec = self.env.model, self._d, self.env, self.env.spec
        q = q0.copy()
        jp, jr = np.zeros((3, m.nv)), np.zeros((3, m.nv))
        cols = env.arm_qpos
        for _ in range(iters):
            d.qpos[cols] = q
            mujoco.mj_kinematics(m, d)
            mujoco.mj_comPos(m, d)
            e_p = p - d.site_xpos[env.tcp_site]
            rc = d.site_xmat[env.tcp_site].reshape(3, 3)
            quat = np.zeros(4)
            mujoco.mju_mat2Quat(quat, (r @ rc.T).reshape(-1))
            e_r = np.zeros(3)
            mujoco.mju_quat2Vel(e_r, quat, 1.0)
            err = np.concatenate([e_p, e_r])
            if np.linalg.norm(err) < 1e-5:
                break
            mujoco.mj_jacSite(m, d, jp, jr, env.tcp_site)
            j = np.vstack([jp, jr])[:, cols]
            dq = j.T @ np.linalg.solve(j @ j.T + self.damping**2 * np.eye(6), err)
            null = np.eye(len(cols)) - np.linalg.pinv(j) @ j
            dq += null @ (0.1 * (spec.home - q))
            q = np.clip(q + dq, spec.q_min + 1e-3, spec.q_max - 1e-3)
        return q

    # --- behaviour --------------------------------------------------------------------------------
    def _goal(self, obs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, float, int]:
        """(tcp position, tcp rotation, gripper width, dwell steps) for the current phase."""
        env, gmax = self.env, self.env.spec.gripper_max
        s = obs["object_state"]
        home_r = self._home_r
        if env.task == "reach":
            return s[:3], home_r, gmax, 0
        if env.task == "track":
            return track_ahead(s, self.track_lookahead_s), home_r, gmax, 0
        if self.phase < 2:  # freeze the grasp site once the cube is held: it moves with the hand after
            self._cube = s[:7].copy()
        cube, goal = self._cube[:3], s[7:10]
        w, x, y, z = self._cube[3:7]
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        home_yaw = np.arctan2(home_r[1, 0], home_r[0, 0])
        k = np.round((home_yaw - yaw) / (np.pi / 2))
        rot = tool_down(yaw + k * np.pi / 2)
        if self.grasp_attempts == 1 and self.miss_m != 0:  # the deliberate miss: beside the cube, on air
            cube = cube + self.miss_m * rot[:, 0]
        hover, carry = HOVER_M, CARRY_M
        plan = [
            (cube + [0, 0, hover], gmax, 0),
            (cube + [0, 0, GRASP_Z_M], gmax, 2),
            (None, 0.0, 6),
            (cube + [0, 0, carry], 0.0, 0),
            (goal + [0, 0, carry], 0.0, 0),
            (goal + [0, 0, CUBE_HALF + 0.01], 0.0, 1),
            (None, gmax, 4),
            (goal + [0, 0, carry], gmax, 0),
        ]
        i = min(self.phase, len(plan) - 1)
        p, g, dwell = plan[i]
        if p is None:
            p = self.p_cmd
        if self.phase >= 2:
            rot = self._grasp_r
        else:
            self._grasp_r = rot
        return np.asarray(p, float), rot, g, dwell

    def _tcp(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Measured TCP position: from the observation, or forward kinematics of the measured joints."""
        if "robot0_eef_pos" in obs:
            return np.asarray(obs["robot0_eef_pos"], float)
        d, env = self._d, self.env
        d.qpos[env.arm_qpos] = obs["robot0_joint_pos"]
        mujoco.mj_kinematics(env.model, d)
        return d.site_xpos[env.tcp_site].copy()

    def _push_t(self, obs: dict[str, np.ndarray], tcp: np.ndarray) -> np.ndarray:
        """push_t: the next commanded TCP position (already limited to the segment's speed)."""
        s = np.asarray(obs["object_state"], float)
        pose, goal = s[:3], s[3:6]
        if self._planner is None:  # seeded by reset(seed) or by the episode's start pose
            seed = (
                self.seed
                if self.seed is not None
                else int.from_bytes(np.round(s, 6).tobytes()[:8], "little") % (2**63)
            )
            cfg = dataclasses.replace(self.push_cfg, pusher_yaw_rad=self._home_yaw)
            self._planner = PushPlanner(cfg, np.random.default_rng(seed))
        # Let the arm catch up (bounded wait) before a push starts, and before replanning after one, so the
        # push the planner chose is the push that happens, however short.
        if self._settle_steps > 0 and np.linalg.norm(tcp - self.p_cmd) > self._settle_tol:
            self._settle_steps -= 1
            return self.p_cmd.copy()
        self._settle_steps = 0
        if not self._waypoints:
            plan = self._planner.plan(pose, goal, self.p_cmd[:2])
            if plan is None:  # no push predicted to help: step back from the block (once) and look again
                away = self.p_cmd[:2] - pose[:2]
                target = self.p_cmd[:2] + 0.01 * away / max(np.linalg.norm(away), 1e-9)
                if np.linalg.norm(target - pose[:2]) > 0.16 or self.p_cmd[2] > PUSH_T_TCP_Z + 0.005:
                    target = self.p_cmd[:2]
                self._waypoints = [(np.r_[target, self.p_cmd[2]], self.push_cfg.travel_speed_m_s)]
            else:
                pts = [np.r_[w, PUSH_T_TCP_Z] for w in plan.waypoints]
                travel, push = self.push_cfg.travel_speed_m_s, self.push_cfg.push_speed_m_s
                if self.p_cmd[2] > PUSH_T_TCP_Z + 0.005:  # still above the table: fly over to the first push
                    pre, end = pts[-2], pts[-1]
                    self._waypoints = [
                        (np.r_[pre[:2], PUSH_T_TCP_Z + 0.06], travel),
                        (pre, travel / 2),
                        (end, push),
                    ]
                    self.route_sides.append(0)
                else:
                    self._waypoints = list(zip(pts, plan.speeds, strict=True))
                    self.route_sides.append(plan.side)
        target, speed = self._waypoints[0]
        step = speed / self.env.control_hz
        delta = target - self.p_cmd
        dist = float(np.linalg.norm(delta))
        if dist <= step:
            self._waypoints.pop(0)
            if len(self._waypoints) <= 1:  # reached the pre-contact point, or the end of the push
                self._settle_steps, self._settle_tol = 5, (0.004 if self._waypoints else 0.0015)
            return target.copy()
        return self.p_cmd + delta / dist * step

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env = self.env
        tcp = self._tcp(obs)
        if self.q_cmd is None:
            self.q_cmd = np.asarray(obs["robot0_joint_pos"], float).copy()
            self.p_cmd = tcp.copy()
            d = self._d
            d.qpos[env.arm_qpos] = env.spec.home
            mujoco.mj_kinematics(env.model, d)
            self._home_r = d.site_xmat[env.tcp_site].reshape(3, 3).copy()
            self._grasp_r = self._home_r
            self._home_yaw = float(np.arctan2(self._home_r[1, 0], self._home_r[0, 0]))
        if env.task == "push_t":
            self.p_cmd = self._push_t(obs, tcp)
            return self._track(self.p_cmd, tool_down(self._home_yaw), 0.0)
        p_goal, rot, grip, dwell = self._goal(obs)
        slow = env.task == "pick_place" and self.phase in (1, 5)  # vertical approaches: no lateral lag
        step = (self.speed / 3 if slow else self.speed) / env.control_hz
        delta = p_goal - self.p_cmd
        dist = np.linalg.norm(delta)
        self.p_cmd = p_goal.copy() if dist <= step else self.p_cmd + delta / dist * step
        settled = np.linalg.norm(tcp - p_goal) < 0.006
        self.steps += 1
        if (
            env.task == "pick_place"
            and self.phase in (3, 4)
            and obs["robot0_gripper_width"][0] < MISS_WIDTH_M
        ):
            # Closed on nothing (or the cube slipped out): once lifted clear, go back for it.
            if self.phase == 4 or (dist <= step and settled):
                self.phase, self.wait, self.grasp_attempts = 0, 0, self.grasp_attempts + 1
                return self._track(self.p_cmd, rot, grip)
        if dist <= step and settled:
            if self.wait >= dwell:
                self.phase, self.wait = self.phase + 1, 0
                if self.phase == 3 and self.first_lift_step is None:
                    self.first_lift_step = self.steps
            else:
                self.wait += 1
        return self._track(self.p_cmd, rot, grip)

    def _track(self, p: np.ndarray, rot: np.ndarray, grip: float) -> np.ndarray:
        """Joint targets reaching TCP pose (p, rot) by IK from the last command, within the velocity limits."""
        env = self.env
        q = self.ik(self.q_cmd, p, rot)
        lim = 0.8 * env.spec.dq_max / env.control_hz
        self.q_cmd = self.q_cmd + np.clip(q - self.q_cmd, -lim, lim)
        return np.concatenate([self.q_cmd, [grip]])


def track_ahead(state: np.ndarray, dt: float) -> np.ndarray:
    """track: the goal's position `dt` seconds after the moment of `state` (position, velocity; env docstring)."""
    p, v = np.asarray(state[:3], float), np.asarray(state[3:6], float)
    speed = float(np.linalg.norm(v[:2]))
    if speed < 1e-9:
        return p
    u = v[:2] / speed
    center = p[:2] + TRACK_RADIUS_M * np.array([-u[1], u[0]])  # left of the velocity: counter-clockwise
    a = np.arctan2(p[1] - center[1], p[0] - center[0]) + speed / TRACK_RADIUS_M * dt
    return np.r_[center + TRACK_RADIUS_M * np.array([np.cos(a), np.sin(a)]), p[2]]


def make_expert(env: TwinEnv) -> Expert:
    return Expert(env)


def run_expert_episode(env, expert, seed: int, expert_seed: int | None = None) -> tuple[bool, int]:
    """One episode of `expert` from `env.reset(seed)` -> (success, steps); ends at success or the step limit.

    Works for the arm twins and the handheld twin alike: both end an episode with terminated = success.
    """
    obs = env.reset(seed=seed)
    if expert_seed is None:
        expert.reset()
    else:
        expert.reset(seed=expert_seed)
    for steps in range(1, env.max_steps + 1):
        obs, _, term, trunc, _ = env.step(expert.act(obs))
        if term or trunc:
            return bool(term), steps
    return False, env.max_steps
