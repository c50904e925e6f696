"""The generator interface (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mimic.policies.config import GeneratorConfig
from mimic.policies.generators.guidance import Inpaint

Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Generator:
    default_steps = 10

    def __init__(self, cfg: GeneratorConfig) -> None:
        self.cfg = cfg

    def steps(self, num_inference_steps: int | None) -> int:
        n = (
            (self.cfg.num_inference_steps or self.default_steps)
            if num_inference_steps is None
            else num_inference_steps
        )
        if n < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {n}")
        return int(n)

    def loss(self, net: Net, x0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample(
        self,
        net: Net,
        cond: torch.Tensor,
        shape: tuple[int, ...],
        num_inference_steps: int | None = None,
        generator: torch.Generator | None = None,
        guide: Inpaint | None = None,
    ) -> torch.Tensor:
        """x0 [B, H, A]; with `guide`, inpainted towards its target (mimic.policies.generators.guidance)."""
        raise NotImplementedError


def randn(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
