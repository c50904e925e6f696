"""Config overrides that make a training run a few seconds long: what tests train when they check behaviour."""

from __future__ import annotations

TINY_RUN = [
    "steps=2",
    "batch_size=16",
    "val_every=2",
    "ckpt_every=2",
    "threads=1",
    "policy.horizon=8",
    "policy.n_action_steps=4",
    "policy.unet.down_dims=[16,32]",
    "policy.unet.time_embed_dim=16",
    "policy.gen.num_inference_steps=2",
]
