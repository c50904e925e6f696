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

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from mimic.data.normalizer import Normalizer
from mimic.data.relative import ROTATIONS, RelativeTrajectory, pose_wrt
from mimic.data.torch_dataset import WindowDataset
from mimic.policies.config import PolicyConfig
from mimic.policies.data import MIN_LOWDIM_RANGE, MIN_ROTATION_RANGE, WindowBatches, widen_small_ranges
from mimic.policies.policy import Policy, ShapeMeta
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
ROW = len(ACTION_LAYOUT)  # absolute action values per gripper


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


def rotation_keys(keys: Any) -> list[str]:
    """The observation keys holding TCP rotations (own history, or relative to the other gripper)."""
    return [k for k in keys if "_rot_" in k]


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

    def decode_actions(self, actions_rel: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """Relative chunk [H, 10] -> absolute rows [H, 7] at the reference pose."""
        return self.relative.decode_actions(actions_rel, ref)

    def action_dim(self, absolute_dim: int) -> int:
        return self.relative.action_dim(absolute_dim)

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps to rebuild these features (eef_deployable)."""
        return {"relative": self.relative.to_json()}

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
        """Stats of the relative values the network sees (pooled over every step of up to max_windows), every
        observation key's range at least MIN_LOWDIM_RANGE wide and every rotation key's MIN_ROTATION_RANGE."""
        rng = np.random.default_rng(seed)
        ids = rng.choice(len(self), min(len(self), max_windows), replace=False)
        b = self.batch(ids)
        arrays = {k: v.reshape(-1, v.shape[-1]).numpy() for k, v in b["obs"].items()}
        arrays["action"] = b["action"].reshape(-1, b["action"].shape[-1]).numpy()
        modes = {"action": "minmax", **{k: lowdim_mode for k in b["obs"]}}
        fitted = widen_small_ranges(Normalizer().fit(arrays, modes), list(b["obs"]), MIN_LOWDIM_RANGE)
        return widen_small_ranges(fitted, rotation_keys(b["obs"]), MIN_ROTATION_RANGE)


class _EefDeployable:
    """Deploy-contract wrapper shared by one and two grippers: an absolute observation window in, absolute
    rows out (per gripper [tcp pos (3), axis-angle (3), gripper]), each gripper column already the arm's
    command (close fully below 0.75 x max: the demos record the measured width, robots.gripper)."""

    action_space = "eef"  # the controller mode it needs (mimic.policies.chunk_policy.ACTION_SPACES)
    grippers = 1
    name = "eef policy"

    def __init__(
        self, inner: Policy, features: Any, gripper_max: float, obs_keys: tuple[str, ...], action_dim: int
    ) -> None:
        self.inner, self.features, self.gripper_max = inner, features, float(gripper_max)
        self.obs_keys = obs_keys
        self.image_keys: tuple[str, ...] = ()
        self.n_obs_steps, self.horizon = inner.n_obs_steps, inner.horizon
        self.n_action_steps = inner.n_action_steps
        self.action_dim = action_dim
        self.control_hz = inner.control_hz
        self.shape_meta = inner.shape_meta
        self.cfg = inner.cfg

    def predict_raw(
        self, obs_window: dict[str, np.ndarray], num_inference_steps: int | None = None
    ) -> np.ndarray:
        """The decoded chunk with the gripper columns as the network predicts the handheld's width."""
        for k in self.obs_keys:
            if k not in obs_window:
                raise KeyError(f"{self.name}: observation key {k!r} missing (have {sorted(obs_window)})")
            n = np.asarray(obs_window[k]).shape[0]
            if n != self.n_obs_steps:
                raise ValueError(f"{self.name}: {k!r} has {n} steps, expected n_obs_steps={self.n_obs_steps}")
        inner, ref = self.features.encode_obs(obs_window)
        rel = self.inner.predict(inner, num_inference_steps=num_inference_steps)
        return self.features.decode_actions(rel, ref)

    def predict(
        self, obs_window: dict[str, np.ndarray], num_inference_steps: int | None = None
    ) -> np.ndarray:
        rows = self.predict_raw(obs_window, num_inference_steps)
        for i in range(self.grippers):
            rows[:, ROW * i + 6] = grasp_command(rows[:, ROW * i + 6], self.gripper_max)
        return rows

    def reset(self) -> None:
        self.inner.reset()

    def seed(self, seed: int | None) -> None:
        self.inner.seed(seed)


class EefPolicy(_EefDeployable):
    """One gripper: absolute TCP window in, absolute TCP chunk [horizon, 7] out."""

    def __init__(self, inner: Policy, features: EefFeatures, gripper_max: float) -> None:
        super().__init__(inner, features, gripper_max, RAW_OBS_KEYS, len(ACTION_LAYOUT))


# ---- two grippers (UMI's bimanual layout) -------------------------------------------------------
N_GRIPPERS = 2
OBJECT_PER_GRIPPER = (
    10  # object_state holds each gripper's pick_place state [cube xyz, quat, goal xyz] in turn
)
BIMANUAL_OBS_KEYS = (
    *(f"robot{i}_{k}" for i in range(N_GRIPPERS) for k in ("eef_pos", "eef_rot_axis_angle", "gripper_width")),
    OBJECT_KEY,
)
BIMANUAL_ACTION_LAYOUT = tuple(f"robot{i}_{name}" for i in range(N_GRIPPERS) for name in ACTION_LAYOUT)


def is_bimanual(obs_keys: list[str] | tuple[str, ...]) -> bool:
    """Whether a config's raw observation keys are the two-gripper ones (robot1_* present)."""
    return any(k.startswith("robot1_") for k in obs_keys)


@dataclass(frozen=True)
class BimanualEefFeatures:
    """Two grippers' absolute window/batch -> what the network sees, UMI's bimanual representation.

    Per gripper i (j the other one): its TCP history relative to its own newest pose (`robot<i>_eef_pos`,
    `robot<i>_eef_rot_axis_angle`), its width, `robot<i>_object_rel` (its own cube and goal in its own TCP
    frame, as `object_features`), and the inter-gripper pose `robot<i>_eef_pos_wrt<j>` /
    `robot<i>_eef_rot_axis_angle_wrt<j>` (its TCP history in the frame of j's newest pose:
    mimic.data.relative.pose_wrt). Actions: each gripper's rows relative to its own newest pose,
    [pos, rot, width] for gripper 0 then gripper 1. Nothing depends on the common frame the poses came in,
    so demos from a tracker's frame run on two arms in a table frame.
    """

    rotation: str = "rot6d"

    def relative(self, i: int) -> RelativeTrajectory:
        return RelativeTrajectory(
            rotation=self.rotation, pos_key=f"robot{i}_eef_pos", rot_key=f"robot{i}_eef_rot_axis_angle"
        )

    @property
    def inner_keys(self) -> list[str]:
        keys = []
        for i in range(N_GRIPPERS):
            j = 1 - i
            keys += [
                f"robot{i}_{k}" for k in ("eef_pos", "eef_rot_axis_angle", "gripper_width", "object_rel")
            ]
            keys += [f"robot{i}_eef_pos_wrt{j}", f"robot{i}_eef_rot_axis_angle_wrt{j}"]
        return keys

    def inner_shapes(self) -> dict[str, list[int]]:
        rot = self.relative(0).rot_dim
        per = {"eef_pos": 3, "eef_rot_axis_angle": rot, "gripper_width": 1, "object_rel": OBJECT_REL_DIM}
        out = {}
        for i in range(N_GRIPPERS):
            out.update({f"robot{i}_{k}": [n] for k, n in per.items()})
            out[f"robot{i}_eef_pos_wrt{1 - i}"] = [3]
            out[f"robot{i}_eef_rot_axis_angle_wrt{1 - i}"] = [rot]
        return out

    def action_dim(self, absolute_dim: int) -> int:
        if absolute_dim != N_GRIPPERS * ROW:
            raise ValueError(
                f"bimanual actions are [pos, axis-angle, width] per gripper ({N_GRIPPERS * ROW} values), "
                f"got width {absolute_dim}"
            )
        return N_GRIPPERS * self.relative(0).action_dim(ROW)

    def state(self) -> dict[str, Any]:
        """What the checkpoint keeps to rebuild these features (eef_deployable)."""
        return {"grippers": N_GRIPPERS, "rotation": self.rotation}

    def encode_obs(self, obs: dict[str, Any]) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """(inner observations, [T_ref per gripper]) for an absolute window ([T, d] or [B, T, d] per key)."""
        o = {k: _np(obs[k]) for k in BIMANUAL_OBS_KEYS}
        inner, refs = {}, []
        for i in range(N_GRIPPERS):
            rt, pk, rk = self.relative(i), f"robot{i}_eef_pos", f"robot{i}_eef_rot_axis_angle"
            ref = rt.reference(o)
            rel = rt.encode_obs({pk: o[pk], rk: o[rk]}, ref)
            state = o[OBJECT_KEY][..., OBJECT_PER_GRIPPER * i : OBJECT_PER_GRIPPER * (i + 1)]
            j = 1 - i
            pos_w, rot_w = pose_wrt(
                o[pk], o[rk], o[f"robot{j}_eef_pos"], o[f"robot{j}_eef_rot_axis_angle"], self.rotation
            )
            inner.update(
                {
                    pk: rel[pk],
                    rk: rel[rk],
                    f"robot{i}_gripper_width": o[f"robot{i}_gripper_width"],
                    f"robot{i}_object_rel": object_features(state, ref),
                    f"robot{i}_eef_pos_wrt{j}": pos_w,
                    f"robot{i}_eef_rot_axis_angle_wrt{j}": rot_w,
                }
            )
            refs.append(ref)
        return inner, refs

    def encode_actions(self, actions: Any, refs: list[np.ndarray]) -> np.ndarray:
        a = _np(actions)
        self.action_dim(a.shape[-1])
        return np.concatenate(
            [
                self.relative(i).encode_actions(a[..., ROW * i : ROW * (i + 1)], refs[i])
                for i in range(N_GRIPPERS)
            ],
            axis=-1,
        )

    def decode_actions(self, actions_rel: np.ndarray, refs: list[np.ndarray]) -> np.ndarray:
        """Relative rows [..., 2 * (3 + rot_dim + 1)] -> absolute [..., 14] rows in the observations' frame."""
        a = _np(actions_rel)
        n = self.relative(0).action_dim(ROW)
        return np.concatenate(
            [
                self.relative(i).decode_actions(a[..., n * i : n * (i + 1)], refs[i])
                for i in range(N_GRIPPERS)
            ],
            axis=-1,
        )

    def encode_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """{"obs": raw [B, T, ...], "action": [B, H, 14]} -> float32 torch batch in the inner space."""
        inner, refs = self.encode_obs(batch["obs"])
        act = self.encode_actions(batch["action"], refs)
        return {
            "obs": {k: torch.from_numpy(v.astype(np.float32)) for k, v in inner.items()},
            "action": torch.from_numpy(act.astype(np.float32)),
        }


class BimanualEefPolicy(_EefDeployable):
    """Two grippers: absolute window of both TCPs in one frame in, [horizon, 14] absolute rows
    [tcp0 pos, axis-angle, gripper0, tcp1 pos, axis-angle, gripper1] out, in that frame; each gripper's rows go
    to its own end-effector controller."""

    grippers = N_GRIPPERS
    name = "bimanual eef policy"

    def __init__(self, inner: Policy, features: BimanualEefFeatures, gripper_max: float) -> None:
        super().__init__(inner, features, gripper_max, BIMANUAL_OBS_KEYS, len(BIMANUAL_ACTION_LAYOUT))


def eef_parts(
    pc: PolicyConfig,
    meta: ShapeMeta,
    train: WindowDataset,
    val: WindowDataset | None,
    attrs: dict[str, Any],
    progress: bool,
) -> tuple[PolicyConfig, ShapeMeta, EefBatches, EefBatches | None, dict[str, Any]]:
    """What mimic.policies.processors needs to train an eef_relative policy, one gripper or two (UMI's
    robot0_* / robot1_* keys): (network config, network shapes, training batches, validation batches, processor
    state). ValueError names the field."""
    two = is_bimanual(pc.obs_keys)
    raw, what = (
        (BIMANUAL_OBS_KEYS, "a two-gripper eef_relative policy")
        if two
        else (RAW_OBS_KEYS, "an eef_relative policy")
    )
    if list(pc.obs_keys) != list(raw):
        raise ValueError(f"policy.obs_keys: {what} observes exactly {list(raw)}")
    if pc.eef_rotation not in ROTATIONS:
        raise ValueError(f"policy.eef_rotation: {pc.eef_rotation!r} is not one of {ROTATIONS}")
    if attrs.get("robot") != "handheld":
        raise ValueError(
            f"policy.action_repr eef_relative: the store's robot attr is {attrs.get('robot')!r}, expected "
            "'handheld' (mimic dataset import-dp --robot handheld)"
        )
    features: EefFeatures | BimanualEefFeatures = (
        BimanualEefFeatures(rotation=pc.eef_rotation)
        if two
        else EefFeatures(RelativeTrajectory(rotation=pc.eef_rotation))
    )
    inner = copy.deepcopy(pc)
    inner.obs_keys = features.inner_keys
    inner_meta = ShapeMeta(
        obs_shapes=features.inner_shapes(),
        action_dim=features.action_dim(meta.action_dim),
        control_hz=meta.control_hz,
        arm="handheld",
        task="pick_place",  # object_rel is pick_place's (per gripper with two; their count is in the state)
    )
    info = {
        **features.state(),
        "raw_obs_keys": list(raw),
        "gripper_max": float(attrs.get("gripper_max", 0.08)),
    }
    return (
        inner,
        inner_meta,
        EefBatches(train, features, progress=progress),  # type: ignore[arg-type]
        EefBatches(val, features) if val is not None else None,  # type: ignore[arg-type]
        info,
    )


def eef_deployable(inner: Policy, info: dict[str, Any]) -> EefPolicy | BimanualEefPolicy:
    """The deploy wrapper of a trained eef_relative network, from the processor state eef_parts wrote."""
    if info.get("grippers") == N_GRIPPERS:
        features = BimanualEefFeatures(rotation=info["rotation"])
        return BimanualEefPolicy(inner, features, float(info["gripper_max"]))
    return EefPolicy(
        inner, EefFeatures(RelativeTrajectory.from_json(info["relative"])), float(info["gripper_max"])
    )
