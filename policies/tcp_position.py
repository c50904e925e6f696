"""TCP-position actions for an arm policy: the network predicts where the TCP goes, IK turns that into joints.

Why: on push_t the pusher must be placed to a few millimetres in the table plane at a fixed height. As joint
targets that is 7 numbers whose small independent errors add up at the TCP (in height too, where 1 cm puts
the pads on the table or over the block), and most of the 7-D target carries the arm's redundancy, not the
task. Diffusion Policy's Push-T acts in the 2-D agent position for the same reason. Here the policy's
chunk rows are [tcp x, y, z (m, arm base frame), gripper width]; the deploy contract is unchanged, because
`TcpPositionPolicy.predict` returns absolute joint rows [q, gripper] like every other arm policy.

- Training (`policy.action_repr: tcp_position`): the dataset's joint-target `action` rows are mapped
  through forward kinematics of the arm named in the store's attrs, so any store trains this way,
  teleoperated ones included (no extra key to record).
- Inference: each chunk row is solved by damped least-squares IK (mimic.robots.ik, within the joint limits),
  the first from the newest measured joints, each next from the one before so the chunk stays on one
  branch. The orientation is held with the tool pointing down at the yaw of the arm's home pose (the
  pusher's orientation in push_t, a top-down grasp's elsewhere): this action space is for position-only
  tasks. A row IK cannot reach to `max_pos_err_m` repeats the last reachable joint row, and is counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from mimic.policies.realtime import ChunkPrefix
from mimic.robots.ik import IKSolver, tool_down

JOINT_KEY = "robot0_joint_pos"
TCP_ACTION_DIM = 4  # tcp x, y, z, gripper width


def down_at_home_yaw(ik: IKSolver) -> np.ndarray:
    """3x3 rotation: the tool's z axis pointing down, its x axis at the home pose's yaw (mimic.sim.expert's push_t pusher)."""
    r = ik.fk(np.asarray(ik.spec.home, float))[:3, :3]
    return tool_down(float(np.arctan2(r[1, 0], r[0, 0])))


def tcp_actions(actions: np.ndarray, ik: IKSolver) -> np.ndarray:
    """Joint-target rows [..., dof + 1] (q, gripper) -> [..., 4] (TCP position by forward kinematics, gripper)."""
    a = np.asarray(actions, float)
    flat = a.reshape(-1, a.shape[-1])
    if flat.shape[1] != ik.dof + 1:
        raise ValueError(
            f"tcp_position: action rows have {flat.shape[1]} values, the {ik.spec.name} needs "
            f"{ik.dof + 1} (q + gripper)"
        )
    out = np.empty((len(flat), TCP_ACTION_DIM))
    for i, row in enumerate(flat):
        out[i, :3] = ik.fk(row[:-1])[:3, 3]
    out[:, 3] = flat[:, -1]
    return out.reshape(*a.shape[:-1], TCP_ACTION_DIM)


def convert_batches(arm: str, batches: list) -> int:
    """Replace the joint-target action rows of mimic.policies.data.WindowBatches in place by TCP rows -> action dim."""
    if not arm:
        raise ValueError(
            "policy.action_repr tcp_position: the dataset's attrs name no robot, so no kinematics"
        )
    ik = IKSolver.for_arm(arm)
    converted: dict[tuple[str, str], np.ndarray] = {}  # the splits of one store hold the same whole array
    for b in batches:
        key = b.windows.action_key
        src = (str(b.windows.path), key)
        if src not in converted:
            converted[src] = tcp_actions(b.arrays[key], ik).astype(np.float32)
        b.arrays[key] = converted[src]
    return TCP_ACTION_DIM


@dataclass
class TcpIKCounters:
    rows: int = 0
    unreachable_rows: int = 0
    max_pos_err_m: float = 0.0  # worst residual among accepted rows


class TcpPositionPolicy:
    """A `Policy` trained with action_repr tcp_position, behind the joint-space deploy contract."""

    action_space = "joint"  # what the controller receives (mimic.policies.checkpoint.action_space's sense)

    def __init__(self, policy, max_pos_err_m: float = 0.005) -> None:
        meta = policy.shape_meta
        if not meta.arm:
            raise ValueError(
                "tcp_position policy: its shape_meta names no arm, so there is no kinematics to solve"
            )
        self.policy = policy
        self.ik = IKSolver.for_arm(meta.arm)
        self.rot = down_at_home_yaw(self.ik)
        self.max_pos_err_m = max_pos_err_m
        self.counters = TcpIKCounters()
        # The IK seed comes from the measured joints, so they join the window even when the network ignores them.
        self.obs_keys = tuple(policy.obs_keys) + (() if JOINT_KEY in policy.obs_keys else (JOINT_KEY,))
        for name in (
            "n_obs_steps",
            "horizon",
            "n_action_steps",
            "control_hz",
            "shape_meta",
            "image_keys",
            "cfg",
        ):
            setattr(self, name, getattr(policy, name))
        self.action_dim = self.ik.dof + 1

    def to_joints(self, rows: np.ndarray, q_now: np.ndarray) -> np.ndarray:
        """[H, 4] TCP rows -> [H, dof + 1] joint rows, IK seeded from `q_now` and then from each previous row."""
        out = np.empty((len(rows), self.action_dim))
        target = np.eye(4)
        target[:3, :3] = self.rot
        q = np.asarray(q_now, float)
        c = self.counters
        for i, row in enumerate(rows):
            target[:3, 3] = row[:3]
            res = self.ik.solve(q, target)
            c.rows += 1
            if res.pos_err_m <= self.max_pos_err_m:
                q = res.q
                c.max_pos_err_m = max(c.max_pos_err_m, res.pos_err_m)
            else:
                c.unreachable_rows += 1
            out[i, :-1], out[i, -1] = q, row[3]
        return out

    def predict(
        self,
        obs_window: dict[str, np.ndarray],
        num_inference_steps: int | None = None,
        prefix: ChunkPrefix | None = None,
    ) -> np.ndarray:
        """Joint rows; a real-time chunking `prefix` (joint rows) is continued in TCP space, its frozen rows kept."""
        if JOINT_KEY not in obs_window:
            raise KeyError(f"tcp_position policy: observation key {JOINT_KEY!r} missing (the IK seed)")
        inner = None
        if prefix is not None:
            used = prefix.weights > 0
            tcp = np.zeros((len(prefix.rows), TCP_ACTION_DIM))
            tcp[used] = tcp_actions(prefix.rows[used], self.ik)
            inner = replace(prefix, rows=tcp)
        window = {k: obs_window[k] for k in self.policy.obs_keys}
        rows = (
            self.policy.predict(window, num_inference_steps, inner)
            if inner
            else self.policy.predict(window, num_inference_steps)
        )
        joints = self.to_joints(rows, np.asarray(obs_window[JOINT_KEY])[-1])
        return joints if prefix is None else prefix.apply(joints)

    def prepare(self, obs_window: dict[str, np.ndarray]) -> int:
        """The inner policy's frame-feature warm-up (Policy.prepare): the window reaches it unchanged."""
        return self.policy.prepare(obs_window)

    def reset(self) -> None:
        self.policy.reset()

    def seed(self, seed: int | None) -> None:
        self.policy.seed(seed)
