"""Observation encoders: normalised low-dim state and per-camera ResNet-18-style image trunks.

The encoder maps an observation window {key: [B, T, ...]} to per-step features [B, T, F]; the UNet
flattens them into one global condition, the transformer uses them as T tokens. GroupNorm instead of
BatchNorm (as in diffusion_policy) because BatchNorm statistics break under EMA and batch-1 inference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mimic.policies.config import ImageEncoderConfig


def _gn(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(max(1, channels // 16), channels)


class BasicBlock(nn.Module):
    """ResNet BasicBlock (two 3x3 convs + identity/projection shortcut) with GroupNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _gn(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _gn(c_out)
        self.short = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _gn(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.short(x))


class SpatialSoftmax(nn.Module):
    """Expected 2D image coordinates of K learned keypoint maps (Levine et al.) -> [B, 2K]."""

    def __init__(self, channels: int, num_keypoints: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, num_keypoints, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        maps = self.proj(x).flatten(2).softmax(-1)  # [B, K, HW]
        ys = torch.linspace(-1, 1, h, device=x.device, dtype=maps.dtype)
        xs = torch.linspace(-1, 1, w, device=x.device, dtype=maps.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)  # [HW, 2]
        return (maps @ grid).reshape(b, -1)


class ImageEncoder(nn.Module):
    """One camera: crop (random in training, centre at inference) -> ResNet-18-style trunk -> pooled feature."""

    def __init__(self, cfg: ImageEncoderConfig, image_hw: tuple[int, int]) -> None:
        super().__init__()
        self.cfg = cfg
        h, w = image_hw
        self.crop_hw = (max(8, int(round(h * cfg.crop_ratio))), max(8, int(round(w * cfg.crop_ratio))))
        c = cfg.width
        layers: list[nn.Module] = [
            nn.Conv2d(3, c, 7, 2, 3, bias=False),
            _gn(c),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        ]
        c_in = c
        for i, c_out in enumerate((c, 2 * c, 4 * c, 8 * c)):
            layers += [BasicBlock(c_in, c_out, 1 if i == 0 else 2), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        if cfg.pooling == "spatial_softmax":
            self.pool: nn.Module = SpatialSoftmax(c_in, cfg.num_keypoints)
            pooled = 2 * cfg.num_keypoints
        elif cfg.pooling == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            pooled = c_in
        else:
            raise ValueError(f"policy.image.pooling: {cfg.pooling!r} is not 'spatial_softmax' or 'avg'")
        self.out = nn.Sequential(nn.Linear(pooled, cfg.feature_dim), nn.ReLU())

    def crop(self, x: torch.Tensor, random: bool) -> torch.Tensor:
        """x [N, 3, H, W] -> [N, 3, h, w]; random crops draw one offset per image."""
        h, w = self.crop_hw
        big_h, big_w = x.shape[-2:]
        if (h, w) == (big_h, big_w):
            return x
        if not random:
            top, left = (big_h - h) // 2, (big_w - w) // 2
            return x[..., top : top + h, left : left + w]
        n = x.shape[0]
        tops = torch.randint(0, big_h - h + 1, (n,), device=x.device)
        lefts = torch.randint(0, big_w - w + 1, (n,), device=x.device)
        rows = (tops[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (lefts[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        idx_n = torch.arange(n, device=x.device)[:, None, None, None]
        idx_c = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return x[idx_n, idx_c, rows, cols]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 3, h, w] already cropped, in [0, 1] -> [N, feature_dim]."""
        return self.out(self.pool(self.trunk(x * 2.0 - 1.0)))


class ObsEncoder(nn.Module):
    """{key: [B, T, ...]} (low-dim already normalised, images [B, T, 3, H, W] in 0..1) -> [B, T, F]."""

    def __init__(
        self,
        lowdim_dims: dict[str, int],
        image_shapes: dict[str, tuple[int, int]],
        image_cfg: ImageEncoderConfig,
    ) -> None:
        super().__init__()
        self.lowdim_keys = sorted(lowdim_dims)
        self.image_keys = sorted(image_shapes)
        self.images = nn.ModuleDict({k: ImageEncoder(image_cfg, image_shapes[k]) for k in self.image_keys})
        self.feature_dim = sum(lowdim_dims.values()) + image_cfg.feature_dim * len(self.image_keys)

    def augment(self, obs: dict[str, torch.Tensor], train: bool) -> dict[str, torch.Tensor]:
        """Crop every image (random when training); low-dim keys pass through."""
        out = dict(obs)
        for k in self.image_keys:
            x = obs[k]
            b, t = x.shape[:2]
            out[k] = self.images[k].crop(x.flatten(0, 1), random=train).unflatten(0, (b, t))
        return out

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Images must already be cropped by `augment`."""
        feats = [obs[k].flatten(2) for k in self.lowdim_keys]
        for k in self.image_keys:
            x = obs[k]
            b, t = x.shape[:2]
            feats.append(self.images[k](x.flatten(0, 1)).unflatten(0, (b, t)))
        return torch.cat(feats, -1)
