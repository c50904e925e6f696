"""Action-space processors: dataset rows -> what the network learns, and its chunks -> what a controller runs.

One processor per `policy.action_repr`, each with a training side (`prepare`: the batches, shapes and
normaliser the one training loop uses) and a deployment side (`deployable`: the policy wrapped behind the
chunk-policy contract). What a processor needs at deployment is saved in the checkpoint as
`processor.json` and applied by `mimic.policies.checkpoint.load_deployable`, so the policy node, `mimic eval`
and `mimic deploy` never special-case an action space; they read the deployable's `action_space` ("joint"
or "eef") only to choose the controller mode.

- joint: the store's joint-target rows as they are (optionally relative to the newest joints).
- tcp_position: joint rows mapped to TCP positions by forward kinematics; IK turns chunks back into joints
  (mimic.policies.tcp_position).
- eef_relative: handheld stores; poses relative to the newest TCP pose, decoded to absolute TCP poses for an
  end-effector controller (mimic.policies.eef_relative).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mimic.data.normalizer import Normalizer
from mimic.data.torch_dataset import WindowDataset
from mimic.policies.config import ConfigError, DataConfig, PolicyConfig
from mimic.policies.data import (
    MIN_LOWDIM_RANGE,
    WindowBatches,
    refit_action_normalizer,
    relative_action_normalizer,
    widen_small_ranges,
)
from mimic.policies.eef_relative import EefBatches, eef_deployable, eef_parts
from mimic.policies.policy import Policy, ShapeMeta
from mimic.policies.streaming import StreamingBatches
from mimic.policies.tcp_position import TcpPositionPolicy, convert_batches

PROCESSOR_JSON = "processor.json"


@dataclass
class Prepared:
    """What the training loop trains: the network's config and shapes, its batches, how to fit its normaliser,
    and the processor's state a deployment needs (saved as processor.json)."""

    policy_cfg: PolicyConfig
    meta: ShapeMeta
    data: Any  # WindowBatches-like: batch(ids, device), __len__
    val: Any | None
    info: dict[str, Any] = field(default_factory=dict)
    representation: str = "joint"

    def fit_normalizer(self, train_windows: WindowDataset, seed: int) -> Normalizer:
        """The normaliser a run from scratch fits on its training windows (actions min-max to [-1, 1])."""
        pc = self.policy_cfg
        if isinstance(self.data, EefBatches):
            return self.data.normalizer(pc.lowdim_norm, seed=seed)
        lowdim = [k for k in pc.obs_keys if k not in train_windows.image_keys]
        modes = {
            "action": "minmax",
            **{k: pc.lowdim_norm for k in lowdim},
            **{k: "identity" for k in train_windows.image_keys},
        }
        normalizer = widen_small_ranges(train_windows.get_normalizer(modes), lowdim, MIN_LOWDIM_RANGE)
        if pc.action_relative_to:
            normalizer = relative_action_normalizer(normalizer, self.data, pc.action_relative_to)
        if pc.action_repr == "tcp_position":
            normalizer = refit_action_normalizer(normalizer, self.data.arrays[self.data.windows.action_key])
        return normalizer


def prepare(
    pc: PolicyConfig,
    meta: ShapeMeta,
    train: WindowDataset,
    val: WindowDataset | None,
    attrs: dict[str, Any],
    progress: bool = False,
    data: DataConfig | None = None,
    shard: tuple[int, int] = (0, 1),
) -> Prepared:
    """The processor of `pc.action_repr` applied to a run's windows: their batches, the network's config and
    shapes. `meta`: the store's shapes for `pc.obs_keys`; `attrs`: its root attrs. `data.streaming` reads
    image frames on demand (StreamingBatches), the training split sharded by episode per `shard`
    (rank, world); otherwise every rank loads the whole store into RAM (WindowBatches)."""
    streaming = data is not None and data.streaming
    if pc.action_repr == "eef_relative":
        if streaming:
            raise ConfigError(
                "data.streaming: not available for policy.action_repr eef_relative (in RAM only)"
            )
        return _prepare_eef(pc, meta, train, val, attrs, progress)
    if streaming:
        assert data is not None
        opts = dict(cache_mb=data.cache_mb, cache_dir=data.cache_dir or None)
        try:
            batches: Any = StreamingBatches(train, shard=shard, **opts)
        except ValueError as e:
            raise ConfigError(f"data.streaming: {e}") from None
        val_data: Any = StreamingBatches(val, **opts) if val is not None else None
    else:
        batches = WindowBatches(train, progress=progress)
        val_data = WindowBatches(val) if val is not None else None
    if pc.action_repr == "tcp_position":
        meta.action_dim = convert_batches(meta.arm, [b for b in (batches, val_data) if b is not None])
        return Prepared(pc, meta, batches, val_data, representation="tcp_position")
    return Prepared(pc, meta, batches, val_data)


def _prepare_eef(
    pc: PolicyConfig,
    meta: ShapeMeta,
    train: WindowDataset,
    val: WindowDataset | None,
    attrs: dict[str, Any],
    progress: bool,
) -> Prepared:
    try:
        parts = eef_parts(pc, meta, train, val, attrs, progress)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    two = parts[4].get("grippers") == 2  # UMI's robot0_* / robot1_* layout
    return Prepared(*parts, representation="relative eef, two grippers" if two else "relative eef")


def deployable(policy: Policy, info: dict[str, Any] | None = None) -> Any:
    """`policy` as a deployment runs it, per its config's action_repr and the processor state `info`."""
    repr_ = getattr(policy.cfg, "action_repr", "joint")
    if repr_ == "tcp_position":
        return TcpPositionPolicy(policy)
    if repr_ == "eef_relative":
        if not info:
            raise ValueError(
                f"eef_relative policy: no {PROCESSOR_JSON} state (relative encoding, gripper_max)"
            )
        return eef_deployable(policy, info)
    return policy


def action_space_of_repr(action_repr: str) -> str:
    """The controller mode a policy of this action_repr needs: "eef" for TCP-pose chunks, else "joint"."""
    return "eef" if action_repr == "eef_relative" else "joint"
