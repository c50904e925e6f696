"""End-effector chunk mode: timed TCP-pose chunks -> joint targets within limits, through IK, in plain Python.

A handheld-trained policy predicts TCP poses, not joint angles. This controller solves each chunk point
by damped least-squares IK (mimic.robots.ik), seeded from the previous point so consecutive solutions stay on
one branch, and hands the joint-space chunk to mimic.robots.control.ChunkController, whose timing (lead,
blend, stale chunks) and Limiter (the one safety rule: finite input, joint-limit clip, velocity clip,
workspace hold) then apply unchanged to every output.

Unreachable poses are refused, never approximated: a point whose IK residual exceeds
`max_pos_err_m` / `max_rot_err_rad` (out of reach, or only reachable outside the joint limits, since the
solver never leaves them) ends the chunk there. The rest of the chunk holds the last reachable target
and `counters.unreachable_points` / `unreachable_chunks` count what was refused; a chunk whose first
point is unreachable is refused whole and the arm keeps following what it had (then holds).

Chunk rows are [tcp position (3, m), axis-angle (3, rad), gripper width (m)] in the arm's base frame
(the twins' world frame), or, with `base_pose` = T_frame_base, in a frame shared by several arms (the table of
a two-arm twin, where UMI's bimanual policies give both grippers' poses), the layout of handheld stores' `action` and of eef_relative policies' predictions (mimic.policies.eef_relative).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from mimic.robots.control import ChunkController, SafetyCounters, WorkspaceBox
from mimic.robots.ik import IKResult, IKSolver

log = logging.getLogger(__name__)

EEF_ROW = 7  # [pos (3), axis-angle (3), gripper width]


@dataclass
class EefCounters:
    """What the IK stage refused (the Limiter's own counters live in `SafetyCounters`)."""

    unreachable_points: int = 0
    unreachable_chunks: int = 0  # chunks cut short or refused because of an unreachable point
    ik_points: int = 0
    max_pos_err_m: float = 0.0  # worst residual among accepted points
    max_rot_err_rad: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)


def _well_formed(p: np.ndarray) -> bool:
    return p.ndim == 2 and p.shape[0] >= 1 and p.shape[1] == EEF_ROW and bool(np.all(np.isfinite(p)))


def tcp_pose_row(t: np.ndarray) -> np.ndarray:
    """4x4 TCP pose -> [pos (3), axis-angle (3)], converted as mimic.sim.env's `robot0_eef_*` observations are
    (mju_mat2Quat, mju_quat2Vel), so poses from forward kinematics match the twins' and the stores' keys."""
    quat, aa = np.zeros(4), np.zeros(3)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(t[:3, :3], dtype=float).reshape(-1))
    mujoco.mju_quat2Vel(aa, quat, 1.0)
    return np.concatenate([np.asarray(t[:3, 3], float), aa])


def poses_to_matrices(rows: np.ndarray) -> np.ndarray:
    """[N, >=6] rows [pos, axis-angle, ...] -> [N, 4, 4] homogeneous poses."""
    t = np.zeros((len(rows), 4, 4))
    t[:, :3, :3] = Rotation.from_rotvec(rows[:, 3:6]).as_matrix()
    t[:, :3, 3] = rows[:, :3]
    t[:, 3, 3] = 1.0
    return t


class EefChunkController:
    """Execute timed TCP-pose chunks on a joint-position arm; clocked by the caller like ChunkController."""

    def __init__(
        self,
        ik: IKSolver,
        rate_hz: float,
        lead_s: float = 0.0,
        blend_s: float = 0.1,
        velocity_scale: float = 0.5,
        workspace: WorkspaceBox | None = None,
        max_pos_err_m: float = 0.005,
        max_rot_err_rad: float = 0.05,
        base_pose: np.ndarray | None = None,
    ) -> None:
        if max_pos_err_m <= 0 or max_rot_err_rad <= 0:
            raise ValueError("EefChunkController: max_pos_err_m and max_rot_err_rad must be > 0")
        self.frame_to_base: np.ndarray | None = None  # T_base_frame: chunk rows' frame -> the IK's base frame
        if base_pose is not None:
            t = np.asarray(base_pose, float)
            if t.shape != (4, 4) or not np.allclose(t[:3, :3] @ t[:3, :3].T, np.eye(3), atol=1e-6):
                raise ValueError("EefChunkController: base_pose must be a 4x4 rigid transform")
            self.frame_to_base = np.linalg.inv(t)
        self.ik, self.spec = ik, ik.spec
        self.max_pos_err_m, self.max_rot_err_rad = max_pos_err_m, max_rot_err_rad
        self.joint = ChunkController(
            ik.spec,
            rate_hz,
            lead_s=lead_s,
            blend_s=blend_s,
            velocity_scale=velocity_scale,
            workspace=workspace,
        )
        self.counters: SafetyCounters = self.joint.counters
        self.eef_counters = EefCounters()
        self.last_solutions: list[IKResult] = []
        self._warned = False

    def reset(self, q_measured: np.ndarray, gripper: float, t: float) -> None:
        self.joint.reset(q_measured, gripper, t)

    def solve_chunk(self, poses: np.ndarray, q_seed: np.ndarray) -> tuple[np.ndarray, int]:
        """[N, 7] TCP rows -> ([n_ok, dof + 1] joint rows, n_ok): IK point by point, stopping at the first
        point whose residual is over the threshold."""
        rows, self.last_solutions = [], []
        q = np.asarray(q_seed, float)
        targets = poses_to_matrices(poses)
        if self.frame_to_base is not None:
            targets = self.frame_to_base @ targets
        for t, row in zip(targets, poses, strict=True):
            res = self.ik.solve(q, t)
            self.eef_counters.ik_points += 1
            self.last_solutions.append(res)
            if not res.within(self.max_pos_err_m, self.max_rot_err_rad):
                break
            e = self.eef_counters
            e.max_pos_err_m = max(e.max_pos_err_m, res.pos_err_m)
            e.max_rot_err_rad = max(e.max_rot_err_rad, res.rot_err_rad)
            q = res.q
            rows.append(np.concatenate([q, [row[6]]]))
        return np.array(rows).reshape(-1, self.spec.dof + 1), len(rows)

    def plan_chunk(self, poses: np.ndarray, q_seed: np.ndarray) -> np.ndarray | None:
        """The IK stage of set_chunk: [N, 7] TCP rows -> [N, dof + 1] joint rows (unreachable tail held at the
        last reachable point, counted), or None when the chunk is refused (malformed, or its first point
        unreachable). Touches only the IK solver and the counters, never the joint controller, so a node can
        run it outside the lock its control loop takes and hand the rows to `self.joint.set_chunk`."""
        p = np.asarray(poses, float)
        if not _well_formed(p):
            self.counters.refused += 1
            return None
        q_rows, n_ok = self.solve_chunk(p, q_seed)
        if n_ok == len(p):
            self._warned = False
            return q_rows
        self.eef_counters.unreachable_points += len(p) - n_ok
        self.eef_counters.unreachable_chunks += 1
        res = self.last_solutions[-1]
        (log.debug if self._warned else log.warning)(  # once per run of refusals, not per chunk
            "%s: TCP target %s unreachable (IK residual %.1f mm / %.3f rad), holding the last reachable",
            self.spec.name,
            np.round(p[n_ok, :3], 3).tolist(),
            res.pos_err_m * 1e3,
            res.rot_err_rad,
        )
        self._warned = True
        if n_ok == 0:
            return None
        return np.concatenate([q_rows, np.repeat(q_rows[-1:], len(p) - n_ok, axis=0)])

    def set_chunk(self, t_start: float, dt: float, poses: np.ndarray, t_now: float | None = None) -> bool:
        """Accept a TCP chunk (point i executes at t_start + i * dt); False when refused (counted)."""
        p = np.asarray(poses, float)
        if not _well_formed(p):
            self.counters.refused += 1
            return False
        last = self.joint.limiter.last
        if last is None:
            raise RuntimeError("EefChunkController used before reset(q_measured, gripper, t)")
        q_rows = self.plan_chunk(p, last[0])
        return q_rows is not None and self.joint.set_chunk(t_start, dt, q_rows, t_now)

    def target(self, t_now: float) -> tuple[np.ndarray, float] | None:
        """Limited joint target and gripper width for time `t_now`, or None (hold) when no chunk covers it."""
        return self.joint.target(t_now)
