"""1D temporal Conv UNet with FiLM conditioning (the Diffusion Policy backbone, re-implemented).

Convolutions run along the action horizon; every residual block is modulated (scale and bias per
channel) by one vector holding the time embedding and the flattened observation features, so the
same network serves all generators: only what `time` means changes.
"""

from __future__ import annotations

import torch
from torch import nn

from mimic.policies.backbones.common import SinusoidalTimeEmbedding
from mimic.policies.config import UnetConfig


class Conv1dBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, groups: int) -> None:
        super().__init__(
            nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.GroupNorm(groups, c_out), nn.Mish()
        )


class FiLMResBlock(nn.Module):
    """Two conv blocks; the condition sets a per-channel scale and bias between them (FiLM)."""

    def __init__(self, c_in: int, c_out: int, cond_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel, groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel, groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.short = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        scale, bias = self.film(cond)[..., None].chunk(2, dim=1)
        y = self.block1(x) * (1 + scale) + bias
        return self.block2(y) + self.short(x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, action_dim: int, global_cond_dim: int, cfg: UnetConfig, extra_in: int = 0) -> None:
        """`extra_in` input channels beside the action's (a prefix mask), not predicted."""
        super().__init__()
        t = cfg.time_embed_dim
        self.time_mlp = nn.Sequential(
            SinusoidalTimeEmbedding(t), nn.Linear(t, 4 * t), nn.Mish(), nn.Linear(4 * t, t)
        )
        cond_dim = t + global_cond_dim
        dims = [action_dim + extra_in, *cfg.down_dims]
        k, g = cfg.kernel_size, cfg.n_groups
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            last = i == len(dims) - 2
            self.down.append(
                nn.ModuleList(
                    [
                        FiLMResBlock(a, b, cond_dim, k, g),
                        FiLMResBlock(b, b, cond_dim, k, g),
                        nn.Conv1d(b, b, 3, 2, 1) if not last else nn.Identity(),
                    ]
                )
            )
        mid = dims[-1]
        self.mid = nn.ModuleList(
            [FiLMResBlock(mid, mid, cond_dim, k, g), FiLMResBlock(mid, mid, cond_dim, k, g)]
        )
        self.up = nn.ModuleList()
        rev = list(reversed(cfg.down_dims))
        for a, b in zip(rev[:-1], rev[1:], strict=True):
            self.up.append(
                nn.ModuleList(
                    [
                        FiLMResBlock(2 * a, b, cond_dim, k, g),
                        FiLMResBlock(b, b, cond_dim, k, g),
                        nn.ConvTranspose1d(b, b, 4, 2, 1),
                    ]
                )
            )
        self.final = nn.Sequential(
            Conv1dBlock(cfg.down_dims[0], cfg.down_dims[0], k, g), nn.Conv1d(cfg.down_dims[0], action_dim, 1)
        )

    def forward(self, sample: torch.Tensor, time: torch.Tensor, obs_features: torch.Tensor) -> torch.Tensor:
        """sample [B, H, A], time [B], obs_features [B, T, F] -> [B, H, A]."""
        cond = torch.cat([self.time_mlp(time).to(sample.dtype), obs_features.flatten(1)], -1)
        x = sample.transpose(1, 2)
        skips = []
        for res1, res2, down in self.down:
            x = res2(res1(x, cond), cond)
            skips.append(x)
            x = down(x)
        for res in self.mid:
            x = res(x, cond)
        for res1, res2, up in self.up:
            x = torch.cat([x, skips.pop()], 1)
            x = up(res2(res1(x, cond), cond))
        return self.final(x).transpose(1, 2)
