"""Training-free inpainting guidance for real-time chunking (Pi-GDM as Real-Time Chunking uses it).

At each sampling step the generator's clean-chunk estimate x0(x) is pulled towards a target chunk Y on the rows a
weight mask W selects: the step uses x0 + c * J^T (W * (Y - x0)), J = d x0 / d x_t, one vector-Jacobian product
through the network. The weight c = min(beta, (1 - tau) / (tau * r^2)) with r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2)
is the paper's, written here in flow time t = 1 - tau (t = 1 noise, t = 0 data): c = min(beta, ((1-t)^2 + t^2) /
((1-t) t)), clipped at beta where it diverges (pure noise and the last step). A sampler on EDM's scale
x = x0 + sigma z is at flow time t = sigma / (1 + sigma), where d/dx_t = (1 + sigma) d/dx, so its guided denoiser
is D + sigma * c * J_x^T (W * (Y - D)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Inpaint:
    """The target of guided sampling, in the generator's normalised action space."""

    target: torch.Tensor  # [B, H, A]; rows with weight 0 are ignored (any finite value)
    weights: torch.Tensor  # [H] in [0, 1]
    max_guidance: float = 5.0  # beta

    def error(self, x0: torch.Tensor) -> torch.Tensor:
        return self.weights[None, :, None] * (self.target - x0)


def guidance_weight(t: float, max_guidance: float) -> float:
    """c(t) of the module docstring for flow time t in [0, 1]."""
    t = float(t)
    if t <= 0.0 or t >= 1.0:
        return max_guidance
    return min(max_guidance, ((1 - t) ** 2 + t**2) / ((1 - t) * t))


def estimate_and_pull(
    x0_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, inpaint: Inpaint
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_of(x), J^T (W * (Y - x0))) with J = d x0_of / d x, by one backward pass through the network."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = x0_of(xg)
        (pull,) = torch.autograd.grad(x0, xg, inpaint.error(x0.detach()))
    return x0.detach(), pull


def guided_denoise(
    denoise: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, sigma: float, inpaint: Inpaint
) -> torch.Tensor:
    """The guided clean-chunk estimate of a denoiser on EDM's scale (x = x0 + sigma z)."""
    x0, pull = estimate_and_pull(denoise, x, inpaint)
    return x0 + sigma * guidance_weight(sigma / (1 + sigma), inpaint.max_guidance) * pull
