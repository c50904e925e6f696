"""Damped least-squares IK on MuJoCo site Jacobians, within the spec's joint limits, for any spec'd arm.

Why MuJoCo Jacobians rather than the DH table: the TCP site lives in the arm's MJCF (gripper, fingertip
offset; mimic.robots.arm_mjcf), which is the frame handheld demonstrations are recorded in (`robot0_eef_*`).
That MJCF is generated from the same spec as the hardware backends and is the tree the twin's scene is built
on, so a solution here is a solution on the twin and on the hardware, and solving one loads no simulator.

Method (the one mimic.sim.expert.Expert.ik uses, lifted here with a residual report so callers can refuse):
    e = [p* - p, log(R* R^T)]                (world frame, m and rad)
    dq = J^T (J J^T + lambda^2 I)^-1 e       (damped least squares; lambda keeps singularities finite)
    dq += (I - J^+ J) k (q_home - q)         (null space pulls redundant arms towards home)
    q = clip(q + clip(dq, +-max_step), q_min + margin, q_max - margin)
Poses come in as 4x4 homogeneous matrices (world = arm base frame on the twins).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from mimic.robots.arm_mjcf import build_arm_model
from mimic.robots.spec import ArmSpec
from mimic.robots.specs import get_spec


def tool_down(yaw: float) -> np.ndarray:
    """3x3 rotation of a tool pointing straight down (its z axis at -z) with its x axis at `yaw` about z: how
    the scripted experts, the tcp_position policies and the handheld twin hold a gripper over a table."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, -1.0]])


@dataclass(frozen=True)
class IKConfig:
    """Solver knobs. Tolerances end the iteration early; they are not the reachability threshold."""

    damping: float = 0.05
    max_iters: int = 60
    tol_pos_m: float = 1e-5
    tol_rot_rad: float = 1e-4
    nullspace_gain: float = 0.1
    max_step_rad: float = 0.4  # per iteration, so a far target does not jump to another IK branch
    margin_rad: float = 1e-3  # distance kept from the joint limits

    def __post_init__(self) -> None:
        if self.damping <= 0 or self.max_iters < 1 or self.max_step_rad <= 0 or self.margin_rad < 0:
            raise ValueError(f"IKConfig: damping, max_iters, max_step_rad must be > 0, margin >= 0: {self}")


@dataclass(frozen=True)
class IKResult:
    """A solution `q` (always within limits) and how far its TCP is from the target."""

    q: np.ndarray
    pos_err_m: float
    rot_err_rad: float
    iters: int

    def within(self, pos_tol_m: float, rot_tol_rad: float) -> bool:
        return self.pos_err_m <= pos_tol_m and self.rot_err_rad <= rot_tol_rad


def pose_error(target: np.ndarray, pos: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """[position error (3, m), rotation error as a world-frame rotation vector (3, rad)] to reach `target`."""
    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(target[:3, :3] @ rot.T).reshape(-1))
    e_r = np.zeros(3)
    mujoco.mju_quat2Vel(e_r, quat, 1.0)
    return np.concatenate([target[:3, 3] - pos, e_r])


class IKSolver:
    """IK for one arm's TCP site; owns a scratch MjData, so it never disturbs a running simulation."""

    def __init__(
        self, model: mujoco.MjModel, spec: ArmSpec, site: str = "tcp", config: IKConfig | None = None
    ) -> None:
        self.model, self.spec, self.config = model, spec, config or IKConfig()
        self.data = mujoco.MjData(model)
        try:
            self.site = model.site(site).id
            joints = [model.joint(name) for name in spec.joint_names]
        except KeyError as e:
            raise ValueError(f"IKSolver({spec.name}): model lacks {e}") from None
        self.qpos_adr = np.array([int(j.qposadr[0]) for j in joints])
        self.dof_adr = np.array([int(j.dofadr[0]) for j in joints])
        self.lo = np.asarray(spec.q_min, float) + self.config.margin_rad
        self.hi = np.asarray(spec.q_max, float) - self.config.margin_rad
        self._jp, self._jr = np.zeros((3, model.nv)), np.zeros((3, model.nv))

    @classmethod
    def for_arm(cls, arm: str | ArmSpec, config: IKConfig | None = None) -> IKSolver:
        """Solver on the arm's MJCF (the bare arm with its gripper: a scene's table and objects do not change
        its kinematics)."""
        spec = get_spec(arm) if isinstance(arm, str) else arm
        return cls(build_arm_model(spec), spec, config=config)

    @property
    def dof(self) -> int:
        return self.spec.dof

    def fk(self, q: np.ndarray) -> np.ndarray:
        """TCP pose (4x4) for joint angles `q`."""
        self._set(q)
        t = np.eye(4)
        t[:3, :3] = self.data.site_xmat[self.site].reshape(3, 3)
        t[:3, 3] = self.data.site_xpos[self.site]
        return t

    def _set(self, q: np.ndarray) -> None:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def solve(self, q0: np.ndarray, target: np.ndarray) -> IKResult:
        """Joint angles reaching TCP pose `target` (4x4), iterated from `q0`; the residual says if it did."""
        cfg, d, site = self.config, self.data, self.site
        target = np.asarray(target, float)
        if target.shape != (4, 4) or not np.all(np.isfinite(target)):
            raise ValueError(
                f"IKSolver({self.spec.name}): target must be a finite 4x4 pose, got {target.shape}"
            )
        q = np.clip(np.asarray(q0, float).reshape(-1), self.lo, self.hi)
        home = np.asarray(self.spec.home, float)
        it = 0
        for it in range(1, cfg.max_iters + 1):  # noqa: B007  (it is reported)
            self._set(q)
            err = pose_error(target, d.site_xpos[site], d.site_xmat[site].reshape(3, 3))
            if np.linalg.norm(err[:3]) < cfg.tol_pos_m and np.linalg.norm(err[3:]) < cfg.tol_rot_rad:
                break
            mujoco.mj_jacSite(self.model, d, self._jp, self._jr, site)
            j = np.vstack([self._jp, self._jr])[:, self.dof_adr]
            dq = j.T @ np.linalg.solve(j @ j.T + cfg.damping**2 * np.eye(6), err)
            if cfg.nullspace_gain > 0 and self.dof > 6:
                dq += (np.eye(self.dof) - np.linalg.pinv(j) @ j) @ (cfg.nullspace_gain * (home - q))
            q = np.clip(q + np.clip(dq, -cfg.max_step_rad, cfg.max_step_rad), self.lo, self.hi)
        self._set(q)
        err = pose_error(target, d.site_xpos[site], d.site_xmat[site].reshape(3, 3))
        return IKResult(q.copy(), float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:])), it)
