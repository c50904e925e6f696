"""Generators: how a denoiser network turns noise into a normalised action chunk, and how it is trained.

Every generator implements the same two calls, so the policy, training loop and benchmarks never
branch on the method:
- `loss(net, x0, cond) -> scalar`: x0 [B, H, A] normalised actions, `net(x, time, cond)` the backbone;
- `sample(net, cond, shape, num_inference_steps, generator) -> x0 [B, H, A]`.
`net` is a callable so a generator can wrap preconditioning (EDM, consistency) around the raw network.
"""

from __future__ import annotations

from mimic.policies.config import GeneratorConfig
from mimic.policies.generators.base import Generator
from mimic.policies.generators.consistency import ConsistencyGenerator
from mimic.policies.generators.diffusion import DDPMGenerator, EDMGenerator
from mimic.policies.generators.flow import FlowGenerator


def make_generator(name: str, cfg: GeneratorConfig) -> Generator:
    table = {
        "diffusion": DDPMGenerator,
        "edm": EDMGenerator,
        "flow": FlowGenerator,
        "consistency": ConsistencyGenerator,
    }
    if name not in table:
        raise ValueError(f"policy.generator: unknown {name!r} (known: {sorted(table)})")
    return table[name](cfg)


__all__ = [
    "ConsistencyGenerator",
    "DDPMGenerator",
    "EDMGenerator",
    "FlowGenerator",
    "Generator",
    "make_generator",
]
