"""UMI's relative-trajectory representation: end-effector actions and history relative to the current pose.

A handheld demonstration has no arm in it, so its absolute poses live in an arbitrary world frame (the
tracker's or SLAM's). Expressed relative to the end-effector pose at the newest observation, the same
trajectory means the same thing on any arm in any base frame: this is what lets one policy deploy to the
Franka, UR5e and xArm7 through IK (Chi et al., UMI, RSS 2024, "relative trajectory" action space).

Layouts (the dataset stores absolute values; this module converts windows on the way in and predictions
on the way out, so every generator trains on the same tensors without knowing):
- absolute action row: [position (3, m), rotation axis-angle (3, rad), extra...] (extra = gripper width(s))
- relative action row: [position (3) in the reference frame, rotation (6 rot6d or 3 axis-angle), extra...]
- the reference is the pose T_ref built from `pos_key`/`rot_key` at the newest observation step;
  relative pose = T_ref^-1 @ T_abs, absolute = T_ref @ T_rel.
- observation history of `pos_key`/`rot_key` (optional) becomes relative the same way, so the newest step
  is always the identity; other keys pass through untouched.

rot6d is pytorch3d's convention (the first two rows of the rotation matrix, Gram-Schmidt back), as in
diffusion_policy's RotationTransformer and UMI, so stats and checkpoints stay comparable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

ROTATIONS = ("rot6d", "axis_angle")


# ---- rotation / pose helpers (numpy, any leading batch shape) ---------------------------------
def axis_angle_to_matrix(aa: np.ndarray) -> np.ndarray:
    aa = np.asarray(aa, np.float64)
    return Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(*aa.shape[:-1], 3, 3)


def matrix_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    rot = np.asarray(rot, np.float64)
    return Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(*rot.shape[:-2], 3)


def matrix_to_rot6d(rot: np.ndarray) -> np.ndarray:
    rot = np.asarray(rot, np.float64)
    return rot[..., :2, :].reshape(*rot.shape[:-2], 6)


def rot6d_to_matrix(r6: np.ndarray) -> np.ndarray:
    """Gram-Schmidt on the two stored rows, so a network's slightly-off output still gives a rotation."""
    r6 = np.asarray(r6, np.float64)
    a1, a2 = r6[..., :3], r6[..., 3:6]
    b1 = a1 / np.linalg.norm(a1, axis=-1, keepdims=True)
    a2 = a2 - np.sum(b1 * a2, axis=-1, keepdims=True) * b1
    b2 = a2 / np.linalg.norm(a2, axis=-1, keepdims=True)
    b3 = np.cross(b1, b2)
    return np.stack([b1, b2, b3], axis=-2)


def pose_to_matrix(pos: np.ndarray, aa: np.ndarray) -> np.ndarray:
    """4x4 homogeneous pose(s) from position (m) and axis-angle (rad)."""
    pos = np.asarray(pos, np.float64)
    t = np.zeros((*pos.shape[:-1], 4, 4))
    t[..., :3, :3] = axis_angle_to_matrix(aa)
    t[..., :3, 3] = pos
    t[..., 3, 3] = 1.0
    return t


def matrix_to_pose(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(t, np.float64)
    return t[..., :3, 3].copy(), matrix_to_axis_angle(t[..., :3, :3])


def invert(t: np.ndarray) -> np.ndarray:
    t = np.asarray(t, np.float64)
    out = np.zeros_like(t)
    rt = np.swapaxes(t[..., :3, :3], -1, -2)
    out[..., :3, :3] = rt
    out[..., :3, 3] = -(rt @ t[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


# ---- the transform -----------------------------------------------------------------------------
@dataclass(frozen=True)
class RelativeTrajectory:
    """Absolute <-> relative end-effector windows; one instance is saved with a policy's config.

    `rotation` is the relative action's rotation encoding; `relative_obs` also makes the pose history
    relative (UMI does); the keys name where the reference pose comes from in an observation window.
    """

    rotation: str = "rot6d"
    relative_obs: bool = True
    pos_key: str = "robot0_eef_pos"
    rot_key: str = "robot0_eef_rot_axis_angle"

    def __post_init__(self) -> None:
        if self.rotation not in ROTATIONS:
            raise ValueError(f"RelativeTrajectory.rotation must be one of {ROTATIONS}, got {self.rotation!r}")

    @property
    def rot_dim(self) -> int:
        return 6 if self.rotation == "rot6d" else 3

    def action_dim(self, absolute_dim: int) -> int:
        """Width of a relative action row for an absolute row of `absolute_dim` ([pos, aa, extra...])."""
        if absolute_dim < 6:
            raise ValueError(
                f"relative actions need rows [pos(3), axis-angle(3), ...], got width {absolute_dim}"
            )
        return absolute_dim - 3 + self.rot_dim

    def obs_dim(self, key: str, absolute_dim: int) -> int:
        return self.rot_dim if (self.relative_obs and key == self.rot_key) else absolute_dim

    # -- reference --------------------------------------------------------------------------------
    def reference(self, obs_window: dict[str, Any]) -> np.ndarray:
        """T_ref: the pose at the newest step of an observation window; [n_obs, 3] per key gives a 4x4,
        a batch [B, n_obs, 3] gives [B, 4, 4]."""
        for key in (self.pos_key, self.rot_key):
            if key not in obs_window:
                raise KeyError(f"relative trajectory: observation window lacks key {key!r}")
        pos, aa = _np(obs_window[self.pos_key]), _np(obs_window[self.rot_key])
        return pose_to_matrix(pos[..., -1, :], aa[..., -1, :])

    # -- actions ----------------------------------------------------------------------------------
    def encode_actions(self, actions: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """[..., H, 6+E] absolute rows -> [..., H, 3+rot_dim+E] rows relative to `ref` ([..., 4, 4])."""
        a = _np(actions)
        self.action_dim(a.shape[-1])
        rel = invert(ref)[..., None, :, :] @ pose_to_matrix(a[..., :3], a[..., 3:6])
        return np.concatenate([rel[..., :3, 3], self._encode_rot(rel[..., :3, :3]), a[..., 6:]], axis=-1)

    def decode_actions(self, actions_rel: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Inverse of encode_actions: relative rows -> absolute [pos, axis-angle, extra...] rows."""
        a = _np(actions_rel)
        k = 3 + self.rot_dim
        if a.shape[-1] < k:
            raise ValueError(f"relative action rows need at least {k} values, got {a.shape[-1]}")
        rel = np.zeros((*a.shape[:-1], 4, 4))
        rel[..., :3, :3] = self._decode_rot(a[..., 3:k])
        rel[..., :3, 3] = a[..., :3]
        rel[..., 3, 3] = 1.0
        pos, aa = matrix_to_pose(np.asarray(ref, np.float64)[..., None, :, :] @ rel)
        return np.concatenate([pos, aa, a[..., k:]], axis=-1)

    # -- observations -----------------------------------------------------------------------------
    def encode_obs(self, obs_window: dict[str, Any], ref: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Pose history relative to the newest pose (pos [n,3], rot [n, rot_dim]); other keys pass as given."""
        out = dict(obs_window)
        if not self.relative_obs:
            return out
        ref = self.reference(obs_window) if ref is None else ref
        rel = invert(ref)[..., None, :, :] @ pose_to_matrix(_np(out[self.pos_key]), _np(out[self.rot_key]))
        out[self.pos_key] = rel[..., :3, 3]
        out[self.rot_key] = self._encode_rot(rel[..., :3, :3])
        return out

    def encode_window(self, item: dict[str, Any]) -> dict[str, Any]:
        """A WindowDataset item {"obs": {...}, "action": [H, A]} or a batch of them ([B, ...] everywhere, as
        mimic.policies.data.WindowBatches gathers), torch or numpy -> the relative item or batch.

        Returns the same container type it was given (torch float32 tensors for torch input).
        """
        ref = self.reference(item["obs"])
        obs = self.encode_obs(item["obs"], ref)
        for key in (self.pos_key, self.rot_key) if self.relative_obs else ():
            obs[key] = _like(obs[key], item["obs"][key])
        return {"obs": obs, "action": _like(self.encode_actions(item["action"], ref), item["action"])}

    # -- rotation encoding ------------------------------------------------------------------------
    def _encode_rot(self, rot: np.ndarray) -> np.ndarray:
        return matrix_to_rot6d(rot) if self.rotation == "rot6d" else matrix_to_axis_angle(rot)

    def _decode_rot(self, r: np.ndarray) -> np.ndarray:
        return rot6d_to_matrix(r) if self.rotation == "rot6d" else axis_angle_to_matrix(r)

    def to_json(self) -> dict[str, Any]:
        return {
            "rotation": self.rotation,
            "relative_obs": self.relative_obs,
            "pos_key": self.pos_key,
            "rot_key": self.rot_key,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> RelativeTrajectory:
        return RelativeTrajectory(**d)


def pose_wrt(
    pos_a: np.ndarray, aa_a: np.ndarray, pos_b: np.ndarray, aa_b: np.ndarray, rotation: str = "rot6d"
) -> tuple[np.ndarray, np.ndarray]:
    """Gripper a's pose history in the frame of gripper b's newest pose: UMI's bimanual observation
    `robot<a>_eef_pos_wrt<b>` / `robot<a>_eef_rot_axis_angle_wrt<b>` (umi/real_world/real_inference_util.py).

    Inputs are [..., T, 3] positions (m) and axis-angles (rad) of both grippers in one frame (the tracker's,
    or the table's for two arms whose base poses are known); returns ([..., T, 3], [..., T, rot_dim]) =
    T_b[-1]^-1 @ T_a[t]. The result is frame-free: the same for any common frame the poses come in.
    """
    if rotation not in ROTATIONS:
        raise ValueError(f"pose_wrt: rotation must be one of {ROTATIONS}, got {rotation!r}")
    ref = pose_to_matrix(_np(pos_b)[..., -1, :], _np(aa_b)[..., -1, :])
    rel = invert(ref)[..., None, :, :] @ pose_to_matrix(_np(pos_a), _np(aa_a))
    rot = matrix_to_rot6d(rel[..., :3, :3]) if rotation == "rot6d" else matrix_to_axis_angle(rel[..., :3, :3])
    return rel[..., :3, 3], rot


class RelativeWindowDataset:
    """Wraps a WindowDataset (or any dataset of window items) so it yields relative items.

    A generator trains on it exactly as on the base dataset; `get_normalizer` fits stats on the relative
    values (the base one would fit absolute ones, which the network never sees).
    """

    def __init__(self, base: Any, transform: RelativeTrajectory | None = None) -> None:
        self.base = base
        self.transform = transform or RelativeTrajectory()

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.transform.encode_window(self.base[idx])

    def get_normalizer(self, modes: dict[str, str], max_windows: int = 2000, seed: int = 0):
        """Normalizer fitted on up to `max_windows` encoded windows (rows of every step pooled)."""
        from mimic.data.normalizer import Normalizer

        n = len(self)
        idx = np.random.default_rng(seed).choice(n, min(n, max_windows), replace=False) if n else []
        rows: dict[str, list[np.ndarray]] = {k: [] for k in modes}
        for i in idx:
            item = self[int(i)]
            for key in modes:
                x = item["action"] if key == "action" else item["obs"][key]
                x = _np(x)
                rows[key].append(x.reshape(-1, *x.shape[2:]) if x.ndim > 2 else x)
        arrays = {k: np.concatenate(v) if v else np.zeros((1, 1)) for k, v in rows.items()}
        return Normalizer().fit(arrays, modes)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float64)


def _like(x: np.ndarray, template: Any) -> Any:
    """`x` as the container type of `template` (torch tensor of its dtype, or float64 numpy)."""
    if hasattr(template, "detach"):
        import torch

        return torch.from_numpy(np.ascontiguousarray(x)).to(template.dtype)
    return x
