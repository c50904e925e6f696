"""The eef_relative action space: policies trained on handheld (UMI-style) stores that drive any arm's TCP.

- features: `EefFeatures` turns a window (or a [B, ...] batch) of absolute observations into frame-free
  ones: mimic.data.relative.RelativeTrajectory makes the TCP history and the action chunk relative to the
  newest TCP pose, and the object state becomes `object_rel` = [cube position (3) and goal position (3) in
  the newest TCP frame, cos/sin of 4 x (cube yaw - TCP yaw)] (4x: a cube looks the same every quarter turn).
  Nothing the network sees depends on where the arm's base is, which is what lets one checkpoint run on
  the Franka, UR5e and xArm7.
- training: `EefBatches` is WindowBatches with the features applied to every batch, and a normaliser fitted
  on the relative values (mimic.policies.processors wires it into the one training loop).
- inference: `EefPolicy` keeps the deploy contract with absolute rows [tcp pos (3), axis-angle (3), gripper]
  decoded at the *current* TCP pose, the gripper already turned into an arm command (robots.gripper);
  mimic.robots.eef_control executes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mimic.data.normalizer import Normalizer
from mimic.data.relative import RelativeTrajectory
from mimic.data.torch_dataset import WindowDataset
from mimic.policies.data import MIN_LOWDIM_RANGE, WindowBatches, widen_small_ranges
from mimic.policies.policy import Policy
from mimic.robots.gripper import grasp_command

POS_KEY, ROT_KEY, WIDTH_KEY, OBJECT_KEY = (
    "robot0_eef_pos",
    "robot0_eef_rot_axis_angle",
    "robot0_gripper_width",
    "object_state",
)
OBJECT_REL_KEY = "object_rel"
OBJECT_REL_DIM = 8
RAW_OBS_KEYS = (POS_KEY, ROT_KEY, WIDTH_KEY, OBJECT_KEY)
ACTION_LAYOUT = ("tcp_x", "tcp_y", "tcp_z", "aa_x", "aa_y", "aa_z", "gripper_width")


def _yaw_of_quat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def object_features(object_state: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """[..., T, 10] pick_place object states, [..., 4, 4] TCP reference -> [..., T, 8] `object_rel`."""
    s = np.asarray(object_state, np.float64)
    rot, pos = ref[..., None, :3, :3], ref[..., None, :3, 3]
    rt = np.swapaxes(rot, -1, -2)
    cube = (rt @ (s[..., 0:3] - pos)[..., None])[..., 0]
    goal = (rt @ (s[..., 7:10] - pos)[..., None])[..., 0]
    tcp_yaw = np.arctan2(rot[..., 1, 0], rot[..., 0, 0])  # heading of the TCP's x axis in the base plane
    d = 4 * (_yaw_of_quat(s[..., 3:7]) - tcp_yaw)
    return np.concatenate([cube, goal, np.cos(d)[..., None], np.sin(d)[..., None]], axis=-1)


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float64)


@dataclass(frozen=True)
class EefFeatures:
    """Absolute window/batch -> what the network sees (relative pose history, object_rel, actions)."""

    relative: RelativeTrajectory = RelativeTrajectory()

    @property
    def inner_keys(self) -> list[str]:
        return [POS_KEY, ROT_KEY, WIDTH_KEY, OBJECT_REL_KEY]

    def inner_shapes(self) -> dict[str, list[int]]:
        return {
            POS_KEY: [3],
            ROT_KEY: [self.relative.obs_dim(ROT_KEY, 3)],
            WIDTH_KEY: [1],
            OBJECT_REL_KEY: [OBJECT_REL_DIM],
        }

    def encode_obs(self, obs: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(inner observations, reference pose T_ref) for an absolute window ([T, d] or [B, T, d] per key)."""
        o = {k: _np(obs[k]) for k in RAW_OBS_KEYS}
        ref = self.relative.reference(o)
        rel = self.relative.encode_obs({POS_KEY: o[POS_KEY], ROT_KEY: o[ROT_KEY]}, ref)
        inner = {
            POS_KEY: rel[POS_KEY],
            ROT_KEY: rel[ROT_KEY],
            WIDTH_KEY: o[WIDTH_KEY],
            OBJECT_REL_KEY: object_features(o[OBJECT_KEY], ref),
        }
        return inner, ref

    def encode_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """{"obs": raw [B, T, ...], "action": [B, H, 7]} -> float32 torch batch in the inner space."""
        inner, ref = self.encode_obs(batch["obs"])
        act = self.relative.encode_actions(_np(batch["action"]), ref)
        return {
            "obs": {k: torch.from_numpy(v.astype(np.float32)) for k, v in inner.items()},
            "action": torch.from_numpy(act.astype(np.float32)),
        }


class EefBatches:
    """WindowBatches with EefFeatures applied to every batch (same `batch`/`__len__` API)."""

    def __init__(self, windows: WindowDataset, features: EefFeatures, progress: bool = False) -> None:
        self.base = WindowBatches(windows, progress=progress)
        self.windows = windows
        self.features = features

    def __len__(self) -> int:
        return len(self.base)

    def batch(self, ids: np.ndarray, device: str | torch.device = "cpu") -> dict[str, Any]:
        b = self.features.encode_batch(self.base.batch(ids, "cpu"))
        return {"obs": {k: v.to(device) for k, v in b["obs"].items()}, "action": b["action"].to(device)}

    def normalizer(self, lowdim_mode: str = "minmax", max_windows: int = 20000, seed: int = 0) -> Normalizer:
        """Stats of the relative values the network sees (pooled over every step of up to max_windows)."""
        rng = np.random.default_rng(seed)
        ids = rng.choice(len(self), min(len(self), max_windows), replace=False)
        b = self.batch(ids)
        arrays = {k: v.reshape(-1, v.shape[-1]).numpy() for k, v in b["obs"].items()}
        arrays["action"] = b["action"].reshape(-1, b["action"].shape[-1]).numpy()
        modes = {"action": "minmax", **{k: lowdim_mode for k in b["obs"]}}
        return widen_small_ranges(Normalizer().fit(arrays, modes), list(b["obs"]), MIN_LOWDIM_RANGE)


class EefPolicy:
    """Deploy-contract wrapper: absolute TCP window in, absolute TCP chunk [horizon, 7] out, its gripper
    column already the arm's command (close fully below 0.75 x max: the demos record the measured width)."""

    action_space = "eef"  # the controller mode it needs (mimic.policies.chunk_policy.ACTION_SPACES)

    def __init__(self, inner: Policy, features: EefFeatures, gripper_max: float) -> None:
        self.inner, self.features, self.gripper_max = inner, features, float(gripper_max)
        self.obs_keys = RAW_OBS_KEYS
        self.image_keys: tuple[str, ...] = ()
        self.n_obs_steps, self.horizon = inner.n_obs_steps, inner.horizon
        self.n_action_steps = inner.n_action_steps
        self.action_dim = len(ACTION_LAYOUT)
        self.control_hz = inner.control_hz
        self.shape_meta = inner.shape_meta
        self.cfg = inner.cfg

    def predict_raw(
        self, obs_window: dict[str, np.ndarray], num_inference_steps: int | None = None
    ) -> np.ndarray:
        """The decoded chunk with the gripper column as the network predicts the handheld's width."""
        for k in self.obs_keys:
            if k not in obs_window:
                raise KeyError(f"eef policy: observation key {k!r} missing (have {sorted(obs_window)})")
            n = np.asarray(obs_window[k]).shape[0]
            if n != self.n_obs_steps:
                raise ValueError(f"eef policy: {k!r} has {n} steps, expected n_obs_steps={self.n_obs_steps}")
        inner, ref = self.features.encode_obs(obs_window)
        rel = self.inner.predict(inner, num_inference_steps=num_inference_steps)
        return self.features.relative.decode_actions(rel, ref)

    def predict(
        self, obs_window: dict[str, np.ndarray], num_inference_steps: int | None = None
    ) -> np.ndarray:
        rows = self.predict_raw(obs_window, num_inference_steps)
        rows[:, 6] = grasp_command(rows[:, 6], self.gripper_max)
        return rows

    def reset(self) -> None:
        self.inner.reset()

    def seed(self, seed: int | None) -> None:
        self.inner.seed(seed)
