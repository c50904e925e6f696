"""Policies: observation encoders, denoiser backbones, diffusion / EDM / flow / consistency generators,
training (`mimic train`), checkpoints and twin evaluation (`mimic eval`).

    from policies import load_policy
    policy = load_policy("runs/pick_place_state_flow/checkpoint")
    chunk = policy.predict({"robot0_joint_pos": q_window, ...})   # [horizon, action_dim], absolute
    policy = load_deployable(ckpt)   # joint Policy or end-effector EefPolicy (policy.action_space == "eef")

The names below load on first use (PEP 562), so `policies.chunk_policy`, the contract a ROS node checks a
scripted policy against, imports without torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOME = {
    "CheckpointError": "policies.checkpoint",
    "action_space": "policies.checkpoint",
    "load_deployable": "policies.checkpoint",
    "load_policy": "policies.checkpoint",
    "save_checkpoint": "policies.checkpoint",
    "ChunkPolicy": "policies.chunk_policy",
    "PolicyConfig": "policies.config",
    "TrainConfig": "policies.config",
    "load_train_config": "policies.config",
    "Policy": "policies.policy",
    "ShapeMeta": "policies.policy",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'policies' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value
