"""The policy library: config, `Policy`, observation encoders, denoiser backbones, diffusion / EDM / flow /
consistency generators, action-space processors, checkpoints and the chunk-policy contract. Workflows that use
it (training, evaluation rollouts, DAgger, recording) live in mimic.workflows.

    from mimic.policies import load_policy
    policy = load_policy("runs/pick_place_state_flow/checkpoint")
    chunk = policy.predict({"robot0_joint_pos": q_window, ...})   # [horizon, action_dim], absolute
    policy = load_deployable(ckpt)   # behind its action space's processor (policy.action_space: joint | eef)

The names below load on first use (PEP 562), so `mimic.policies.chunk_policy`, the contract a ROS node checks a
scripted policy against, imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "CheckpointError": "mimic.policies.checkpoint",
    "action_space": "mimic.policies.checkpoint",
    "load_deployable": "mimic.policies.checkpoint",
    "load_policy": "mimic.policies.checkpoint",
    "save_checkpoint": "mimic.policies.checkpoint",
    "ChunkPolicy": "mimic.policies.chunk_policy",
    "PolicyConfig": "mimic.policies.config",
    "TrainConfig": "mimic.policies.config",
    "load_train_config": "mimic.policies.config",
    "Policy": "mimic.policies.policy",
    "ShapeMeta": "mimic.policies.policy",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'mimic.policies' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
