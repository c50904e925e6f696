"""Training-time real-time chunking for flow policies: the network learns to continue a given prefix.

Guided inpainting (guidance.py) pulls a chunk towards the executing one through the network's Jacobian, which
a confident policy barely has: it predicts the same chunk from any noise. Conditioning at training time does
not need it (Black et al., training-time action conditioning for real-time chunking). Each training chunk keeps
its first d rows clean (d uniform in 0..prefix_rows per sample), a mask channel beside the action channels
marks them, and the flow loss covers only the other rows; at inference the frozen rows of the executing chunk
are written into the sample at every step with the mask set, so the network plans the rest as a continuation.
With no prefix the mask is all zeros and sampling is the plain flow sampler's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimic.policies.generators.base import Net, randn
from mimic.policies.generators.flow import TIME_SCALE, FlowGenerator


class MaskedNet:
    """The backbone behind the generators' `net(x, time, cond)` call, with the mask channel appended."""

    def __init__(self, backbone: Net) -> None:
        self.backbone = backbone
        self.mask: torch.Tensor | None = None  # [B, H] in {0, 1}; None: zeros

    def __call__(self, x: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mask = self.mask if self.mask is not None else x.new_zeros(x.shape[:2])
        return self.backbone(
            torch.cat([x, mask.to(x.dtype).expand(x.shape[0], -1)[..., None]], -1), time, cond
        )


def prefix_mask(b: int, horizon: int, max_rows: int, device: torch.device) -> torch.Tensor:
    """[B, H] masks of the first d rows, d uniform in 0..max_rows per sample."""
    d = torch.randint(0, max_rows + 1, (b, 1), device=device)
    return (torch.arange(horizon, device=device)[None] < d).float()


def prefix_flow_loss(gen: FlowGenerator, net: MaskedNet, x0: torch.Tensor, cond: torch.Tensor, max_rows: int):
    """The flow loss on the rows after a random clean prefix (x0 [B, H, A] normalised)."""
    b, h, _ = x0.shape
    mask = prefix_mask(b, h, max_rows, x0.device)
    t = gen._time(b, x0)
    z = torch.randn_like(x0)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * z
    keep = mask[..., None].bool()
    xt = torch.where(keep, x0, xt)
    net.mask = mask
    try:
        pred = net(xt, t * TIME_SCALE, cond)
    finally:
        net.mask = None
    err = F.mse_loss(pred.float(), (z - x0).float(), reduction="none") * (1 - mask)[..., None]
    return err.sum() / ((1 - mask).sum() * x0.shape[-1]).clamp(min=1)


def prefix_flow_sample(
    gen: FlowGenerator,
    net: MaskedNet,
    cond: torch.Tensor,
    shape: tuple[int, ...],
    target: torch.Tensor,
    frozen: int,
    num_inference_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euler/Heun flow sampling with the first `frozen` rows held at `target` ([B, H, A] normalised)."""
    n = gen.steps(num_inference_steps)
    ts = gen.grid(n, cond.device)
    mask = torch.zeros(shape[:2], device=cond.device)
    mask[:, :frozen] = 1.0
    keep = mask[..., None].bool()
    x = randn(shape, cond, generator) * ts[0]
    net.mask = mask
    try:
        for i in range(n):
            t, t_next = ts[i], ts[i + 1]
            x = torch.where(keep, target, x)
            v = net(x, t.expand(shape[0]) * TIME_SCALE, cond)
            if gen.cfg.sampler == "heun" and i < n - 1:
                x_pred = torch.where(keep, target, x + (t_next - t) * v)
                v = 0.5 * (v + net(x_pred, t_next.expand(shape[0]) * TIME_SCALE, cond))
            x = x + (t_next - t) * v
    finally:
        net.mask = None
    return torch.where(keep, target, x)
