"""Policies: observation encoders, denoiser backbones, diffusion / EDM / flow / consistency generators,
training (`mimic train`), checkpoints and twin evaluation (`mimic eval`).

    from policies import load_policy
    policy = load_policy("runs/pick_place_state_flow/checkpoint")
    chunk = policy.predict({"robot0_joint_pos": q_window, ...})   # [horizon, action_dim], absolute
"""

from policies.checkpoint import CheckpointError, load_policy, save_checkpoint
from policies.config import PolicyConfig, TrainConfig, load_train_config
from policies.policy import Policy, ShapeMeta

__all__ = ["CheckpointError", "Policy", "PolicyConfig", "ShapeMeta", "TrainConfig", "load_policy",
           "load_train_config", "save_checkpoint"]
