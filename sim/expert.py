"""Scripted experts: Cartesian waypoints tracked by damped least-squares IK on MuJoCo's site Jacobian.

The expert plans on a scratch MjData (never the env's), moves the TCP at a bounded Cartesian speed so IK
stays local, keeps the fingers vertical with their closing axis on a cube face, and returns absolute
joint targets, the same action space as a teleoperator.
"""

from __future__ import annotations

import mujoco
import numpy as np

from sim.env import CUBE_HALF, TwinEnv

DOWN = np.diag([1.0, -1.0, -1.0])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


class Expert:
    def __init__(self, env: TwinEnv, speed_m_s: float = 0.3, damping: float = 0.05):
        self.env, self.speed, self.damping = env, speed_m_s, damping
        self._d = mujoco.MjData(env.model)
        self.reset()

    def reset(self) -> None:
        self.phase, self.wait, self.q_cmd, self.p_cmd = 0, 0, None, None

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
        if self.phase < 2:  # freeze the grasp site once the cube is held: it moves with the hand after
            self._cube = s[:7].copy()
        cube, goal = self._cube[:3], s[7:10]
        w, x, y, z = self._cube[3:7]
        yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
        home_yaw = np.arctan2(home_r[1, 0], home_r[0, 0])
        k = np.round((home_yaw - yaw) / (np.pi / 2))
        rot = _rz(yaw + k * np.pi / 2) @ DOWN
        hover, carry = 0.12, 0.15
        plan = [
            (cube + [0, 0, hover], gmax, 0), (cube + [0, 0, 0.004], gmax, 2), (None, 0.0, 6),
            (cube + [0, 0, carry], 0.0, 0), (goal + [0, 0, carry], 0.0, 0),
            (goal + [0, 0, CUBE_HALF + 0.01], 0.0, 1), (None, gmax, 4), (goal + [0, 0, carry], gmax, 0),
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

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        env = self.env
        if self.q_cmd is None:
            self.q_cmd = obs["robot0_joint_pos"].copy()
            self.p_cmd = obs["robot0_eef_pos"].copy()
            d = self._d
            d.qpos[env.arm_qpos] = env.spec.home
            mujoco.mj_kinematics(env.model, d)
            self._home_r = d.site_xmat[env.tcp_site].reshape(3, 3).copy()
            self._grasp_r = self._home_r
        p_goal, rot, grip, dwell = self._goal(obs)
        slow = env.task == "pick_place" and self.phase in (1, 5)  # vertical approaches: no lateral lag
        step = (self.speed / 3 if slow else self.speed) / env.control_hz
        delta = p_goal - self.p_cmd
        dist = np.linalg.norm(delta)
        self.p_cmd = p_goal.copy() if dist <= step else self.p_cmd + delta / dist * step
        settled = np.linalg.norm(obs["robot0_eef_pos"] - p_goal) < 0.006
        if dist <= step and settled:
            if self.wait >= dwell:
                self.phase, self.wait = self.phase + 1, 0
            else:
                self.wait += 1
        q = self.ik(self.q_cmd, self.p_cmd, rot)
        lim = 0.8 * env.spec.dq_max / env.control_hz
        self.q_cmd = self.q_cmd + np.clip(q - self.q_cmd, -lim, lim)
        return np.concatenate([self.q_cmd, [grip]])


def make_expert(env: TwinEnv) -> Expert:
    return Expert(env)
