"""Training-time real-time chunking: the network learns to continue a given prefix (flow and consistency).

Guided inpainting (guidance.py) pulls a chunk towards the executing one through the network's Jacobian, which
a confident policy barely has: it predicts the same chunk from any noise. Conditioning at training time does
not need it (Black et al., training-time action conditioning for real-time chunking). Each training chunk keeps
its first d rows clean (d uniform in 0..prefix_rows per sample), a mask channel beside the action channels
marks them, and the loss covers only the other rows; at inference the frozen rows of the executing chunk are
what the network sees in those rows at every call, with the mask set, so it plans the rest as a continuation.
With no prefix the mask is all zeros and sampling is the plain sampler's.

The network sees the prefix in the coordinates it is called in (flow time: x_t, where clean rows are x0), so
`MaskedNet` writes the prefix into its input itself. Any sampler or distillation target that calls the network
then conditions on the prefix without knowing about it: the flow sampler, the consistency student's
`flow_denoise` parameterisation, and its flow teacher's probability-flow ODE alike. The rows the sampler carries
for the frozen positions never reach the network and are replaced by the prefix at the end.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mimic.policies.generators.base import Generator, Net
from mimic.policies.generators.flow import TIME_SCALE, FlowGenerator


class MaskedNet:
    """The backbone behind the generators' `net(x, time, cond)` call, with the mask channel appended and, with a
    `target`, the masked rows of its input replaced by the target's (the clean prefix)."""

    def __init__(
        self, backbone: Net, mask: torch.Tensor | None = None, target: torch.Tensor | None = None
    ) -> None:
        self.backbone = backbone
        self.mask = mask  # [B or 1, H] in {0, 1}; None: zeros
        self.target = target  # [B, H, A] clean rows where mask is 1; None: the input's own rows

    def __call__(self, x: torch.Tensor, time: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        mask = self.mask if self.mask is not None else x.new_zeros(x.shape[:2])
        mask = mask.to(x.dtype).expand(x.shape[0], -1)
        if self.target is not None:
            x = torch.where(mask[..., None].bool(), self.target.to(x.dtype), x)
        return self.backbone(torch.cat([x, mask[..., None]], -1), time, cond)


def prefix_mask(b: int, horizon: int, max_rows: int, device: torch.device) -> torch.Tensor:
    """[B, H] masks of the first d rows, d uniform in 0..max_rows per sample."""
    d = torch.randint(0, max_rows + 1, (b, 1), device=device)
    return (torch.arange(horizon, device=device)[None] < d).float()


def prefix_flow_loss(gen: FlowGenerator, net: Net, x0: torch.Tensor, cond: torch.Tensor, max_rows: int):
    """The flow loss on the rows after a random clean prefix (x0 [B, H, A] normalised)."""
    b, h, _ = x0.shape
    mask = prefix_mask(b, h, max_rows, x0.device)
    t = gen._time(b, x0)
    z = torch.randn_like(x0)
    xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * z
    pred = MaskedNet(net, mask, x0)(xt, t * TIME_SCALE, cond)
    err = F.mse_loss(pred.float(), (z - x0).float(), reduction="none") * (1 - mask)[..., None]
    return err.sum() / ((1 - mask).sum() * x0.shape[-1]).clamp(min=1)


def prefix_distill_loss(
    gen: Generator,
    net: Net,
    x0: torch.Tensor,
    cond: torch.Tensor,
    teacher: Generator,
    teacher_net: Net,
    teacher_cond: torch.Tensor,
    max_rows: int,
) -> torch.Tensor:
    """A consistency student's distillation loss with a random clean prefix given to student and teacher alike
    (the teacher a prefix-conditioned flow policy): the student learns the teacher's continuation of each prefix,
    scored on the rows after it."""
    mask = prefix_mask(x0.shape[0], x0.shape[1], max_rows, x0.device)
    return gen.distill_loss(
        MaskedNet(net, mask, x0),
        x0,
        cond,
        teacher,
        MaskedNet(teacher_net, mask, x0),
        teacher_cond,
        row_weights=1 - mask,
    )


def prefix_sample(
    gen: Generator,
    net: Net,
    cond: torch.Tensor,
    shape: tuple[int, ...],
    target: torch.Tensor | None,
    frozen: int,
    num_inference_steps: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The generator's own sampler with the first `frozen` rows held at `target` ([B, H, A] normalised); no
    target (or no frozen row): the mask is zero and the sample is the plain sampler's."""
    if target is None or frozen <= 0:
        return gen.sample(MaskedNet(net), cond, shape, num_inference_steps, generator)
    mask = torch.zeros(shape[:2], device=cond.device)
    mask[:, :frozen] = 1.0
    x = gen.sample(MaskedNet(net, mask, target), cond, shape, num_inference_steps, generator)
    return torch.where(mask[..., None].bool(), target.to(x.dtype), x)
