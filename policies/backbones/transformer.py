"""Transformer denoiser: action tokens attend to each other and to [time, obs_1..obs_T] tokens.

The observation steps stay separate tokens (instead of one flattened vector as in the UNet), which is
what makes the transformer the better fit for long observation histories.
"""

from __future__ import annotations

import torch
from torch import nn

from mimic.policies.backbones.common import SinusoidalTimeEmbedding
from mimic.policies.config import TransformerConfig


class TransformerDenoiser(nn.Module):
    def __init__(
        self, action_dim: int, obs_feature_dim: int, horizon: int, n_obs_steps: int, cfg: TransformerConfig
    ) -> None:
        super().__init__()
        d = cfg.d_model
        self.action_in = nn.Linear(action_dim, d)
        self.action_pos = nn.Parameter(torch.zeros(1, horizon, d))
        self.obs_in = nn.Linear(obs_feature_dim, d)
        self.cond_pos = nn.Parameter(torch.zeros(1, n_obs_steps + 1, d))
        self.time = nn.Sequential(SinusoidalTimeEmbedding(d), nn.Linear(d, d), nn.Mish(), nn.Linear(d, d))
        self.cond_encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                d, cfg.n_heads, 4 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
            ),
            num_layers=1,
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(
                d, cfg.n_heads, 4 * d, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
            ),
            num_layers=cfg.n_layers,
        )
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, action_dim)
        nn.init.normal_(self.action_pos, std=0.02)
        nn.init.normal_(self.cond_pos, std=0.02)

    def forward(self, sample: torch.Tensor, time: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        """sample [B, H, A], time [B], obs_features [B, T, F] -> [B, H, A]."""
        tokens = torch.cat([self.time(time)[:, None].to(sample.dtype), self.obs_in(obs_features)], 1)
        memory = self.cond_encoder(tokens + self.cond_pos)
        x = self.decoder(self.action_in(sample) + self.action_pos, memory)
        return self.head(self.norm(x))
