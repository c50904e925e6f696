"""Denoiser backbones: net(sample [B, H, A], time [B], obs_features [B, T, F]) -> [B, H, A]."""

from __future__ import annotations

from torch import nn

from mimic.policies.backbones.transformer import TransformerDenoiser
from mimic.policies.backbones.unet import ConditionalUnet1D
from mimic.policies.config import PolicyConfig


def make_backbone(cfg: PolicyConfig, action_dim: int, obs_feature_dim: int) -> nn.Module:
    if cfg.backbone == "unet":
        extra = 1 if cfg.prefix_rows else 0  # the prefix mask channel (mimic.policies.generators.prefix)
        return ConditionalUnet1D(action_dim, obs_feature_dim * cfg.n_obs_steps, cfg.unet, extra)
    return TransformerDenoiser(action_dim, obs_feature_dim, cfg.horizon, cfg.n_obs_steps, cfg.transformer)


__all__ = ["ConditionalUnet1D", "TransformerDenoiser", "make_backbone"]
