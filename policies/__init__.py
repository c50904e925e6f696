"""Policies: observation encoders, denoiser backbones, diffusion / EDM / flow / consistency generators,
training (`mimic train`), checkpoints and twin evaluation (`mimic eval`).

    from policies import load_policy
    policy = load_policy("runs/pick_place_state_flow/checkpoint")
    chunk = policy.predict({"robot0_joint_pos": q_window, ...})   # [horizon, action_dim], absolute
    policy = load_deployable(ckpt)   # joint Policy or end-effector EefPolicy (policy.action_space == "eef")
"""

from policies.checkpoint import CheckpointError, action_space, load_deployable, load_policy, save_checkpoint
from policies.config import PolicyConfig, TrainConfig, load_train_config
from policies.policy import Policy, ShapeMeta

__all__ = [
    "CheckpointError",
    "Policy",
    "action_space",
    "load_deployable",
    "PolicyConfig",
    "ShapeMeta",
    "TrainConfig",
    "load_policy",
    "load_train_config",
    "save_checkpoint",
]
